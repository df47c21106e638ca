"""What a run does when things go wrong: NaN, kill -9, SIGTERM/Ctrl+C, W&B that cannot start, unsafe
checkpoints, a copy of the project inside another repository, and the README's commands as written."""
from __future__ import annotations

import http.server
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from hub.callbacks import NonFiniteGuard, NonFiniteLossError
from hub.checkpoints import BestCheckpoint, resume_argv
from hub.config import PROJECT_ROOT
from hub.results import code_version
from lit_models.components.optim.tiger import Tiger
from tests.conftest import results_of, run_cli

FAST = ["logger=csv", "trainer.max_epochs=2", "trainer.deterministic=true"]


# --- non-finite loss, gradient norm and validation metric ---------------------------------------------------

class Toy(L.LightningModule):
    """One weight; the loss of batch i is `losses[i]`·w (a NaN where asked), the validation value after step k is val_values[k - 1]."""

    def __init__(self, losses, val_values=(), optimizer=torch.optim.SGD):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2, 2))
        self.losses, self.val_values, self.optimizer_class = losses, list(val_values), optimizer

    def training_step(self, batch, batch_idx):
        return (self.w * self.losses[self.global_step]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/metric", torch.tensor(self.val_values[self.global_step - 1]))

    def configure_optimizers(self):
        return self.optimizer_class(self.parameters(), lr=0.1)


def fit(model, steps, callbacks, **trainer_kwargs):
    data = torch.utils.data.DataLoader(torch.zeros(steps, 1), batch_size=1)
    trainer_kwargs = {"enable_checkpointing": False, "accelerator": "cpu", **trainer_kwargs}
    trainer = L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks, num_sanity_val_steps=0, **trainer_kwargs)
    trainer.fit(model, data, data if model.val_values else None)
    return trainer


def test_a_nan_loss_stops_before_the_step_changes_a_weight_and_names_it():
    model = Toy([1.0, 1.0, float("nan"), 1.0])
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 2 \(epoch 0, batch 2\)"):
        fit(model, 4, [NonFiniteGuard()])
    assert torch.allclose(model.w, torch.full((2, 2), 1 - 2 * 0.1))   # two SGD steps of -0.1, none after


def test_skip_drops_the_update_up_to_max_skips_then_stops():
    model = Toy([1.0, float("inf"), 1.0, float("nan"), float("nan")])
    guard = NonFiniteGuard(action="skip", max_skips=2)
    with pytest.raises(NonFiniteLossError, match=r"step 4 .* after 2 skipped steps"):
        fit(model, 5, [guard])
    assert guard.skipped == 2
    assert torch.allclose(model.w, torch.full((2, 2), 1 - 2 * 0.1))   # steps 0 and 2 only


def test_skip_hands_the_step_to_tigers_own_guard():
    """Tiger's NaN guard shrinks the weights towards 0 (s = 0.99) and keeps its momentum: its semantics stay."""
    model = Toy([float("nan")], optimizer=Tiger)
    fit(model, 1, [NonFiniteGuard(action="skip")])
    assert torch.allclose(model.w, torch.full((2, 2), 0.99))


def test_a_non_finite_gradient_norm_stops_the_run_when_clipping_is_on():
    class SqrtAtZero(Toy):  # finite loss, NaN gradient: 0·d sqrt(x)/dx at 0 = 0·inf
        def training_step(self, batch, batch_idx):
            return (self.w * 0).sqrt().sum()

    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient norm \(nan\) at step 0"):
        fit(SqrtAtZero([0.0]), 1, [NonFiniteGuard()], gradient_clip_val=1.0)


def test_a_non_finite_validation_value_never_becomes_best(tmp_path):
    best = BestCheckpoint(dirpath=tmp_path, filename="best", monitor="val/metric", mode="max")
    model = Toy([1.0] * 3, val_values=[float("nan"), 0.5, float("inf")])
    fit(model, 3, [best], enable_checkpointing=True, val_check_interval=1, check_val_every_n_epoch=None,
        limit_val_batches=1)
    assert best.best_model_score.item() == 0.5
    assert torch.load(best.best_model_path, weights_only=True)["global_step"] == 2


def test_training_with_a_huge_lr_fails_naming_the_step_and_compare_lists_it(tmp_path):
    """The issue's reproduction: optimizer.lr=1e6 used to finish as `completed` with NaN weights."""
    proc = run_cli(tmp_path, "logger=csv", "trainer.max_epochs=2", "optimizer.lr=1e6", check=False)
    assert proc.returncode != 0
    [results] = results_of(tmp_path)
    assert results["status"] == "failed"
    assert re.search(r"NonFiniteLossError: non-finite loss at step \d+ \(epoch \d+, batch \d+\)", results["error"])
    run_log = next((tmp_path / "outputs").rglob("run.log")).read_text()
    assert "non-finite loss at step" in run_log and "run failed" in run_log
    report = subprocess.run([sys.executable, str(PROJECT_ROOT / "compare.py"), str(tmp_path / "outputs")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert "failed" in report.stdout and "NonFiniteLossError" in report.stdout


# --- kill -9, resume, signals ------------------------------------------------------------------------------

def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HUB_LOG_DIR": str(tmp_path / "outputs"), "HUB_CACHE_DIR": str(tmp_path / "cache"),
           "WANDB_MODE": "disabled"}
    tmp_path.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, str(PROJECT_ROOT / "run.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_last_checkpoint(tmp_path: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "outputs").rglob("last.ckpt"))
        if found:
            return found[0].parent.parent
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no last.ckpt before the run ended: {proc.communicate()[1][-3000:]}")


def test_a_killed_run_resumes_in_its_folder_and_ends_as_if_never_stopped(tmp_path):
    run_cli(tmp_path / "whole", *FAST)
    [whole] = results_of(tmp_path / "whole")

    proc = start(tmp_path / "killed", *FAST)
    folder = wait_for_last_checkpoint(tmp_path / "killed", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (folder / "results.json").exists()

    run_cli(tmp_path / "killed", f"resume={folder}")
    [resumed] = results_of(tmp_path / "killed")
    assert resumed["output_dir"] == str(folder)                      # the same folder, not a new one
    assert resumed["resumed"]["epoch"] == 0 and resumed["resumed"]["step"] > 0
    assert resumed["best"]["value"] == whole["best"]["value"] and resumed["best"]["epoch"] == whole["best"]["epoch"]
    assert resumed["test"] == whole["test"]
    assert resumed["steps"] == whole["steps"]


def test_resume_reuses_the_runs_overrides_and_lets_new_ones_win(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- logger=csv\n- trainer.max_epochs=4\n- seed=2\n")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    argv = resume_argv(["run.py", f"resume={tmp_path}", "trainer.max_epochs=8"])
    assert argv == ["run.py", "logger=csv", "seed=2", "trainer.max_epochs=8", f"resume={tmp_path}",
                    f"hydra.run.dir={tmp_path}", f"ckpt_path={tmp_path}/checkpoints/last.ckpt"]
    (tmp_path / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(SystemExit, match="stopped before its first checkpoint"):
        resume_argv(["run.py", f"resume={tmp_path}"])


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_last_writes_results_with_best_and_exits_non_zero(tmp_path, signum, code):
    proc = start(tmp_path, *FAST)
    folder = wait_for_last_checkpoint(tmp_path, proc)
    saved_step = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    time.sleep(0.5)                                                  # into the next epoch
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-3000:]
    [results] = results_of(tmp_path)
    assert results["status"] == "interrupted" and results["error"] == f"interrupted by {signum.name}"
    assert results["best"]["epoch"] == 0 and Path(results["best"]["path"]).is_file()
    last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] > saved_step                           # saved when the signal came
    assert "interrupted" in (folder / "run.log").read_text()


# --- W&B that cannot start ---------------------------------------------------------------------------------

class NotWandb(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_error(404)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def not_wandb_host():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotWandb)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def wandb_env(tmp_path, **extra):
    return {"WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": str(tmp_path), "NETRC": str(tmp_path / "none"),
            **extra}


def test_wandb_that_cannot_start_falls_back_to_offline_and_the_run_completes(tmp_path, not_wandb_host):
    env = wandb_env(tmp_path, WANDB_BASE_URL=not_wandb_host, WANDB_API_KEY="x" * 40)
    proc = run_cli(tmp_path, "trainer.max_epochs=1", env=env)
    [results] = results_of(tmp_path)
    assert results["status"] == "completed" and results["wandb"]["mode"] == "offline"
    assert "W&B could not start online" in proc.stdout + proc.stderr


def test_wandb_forced_online_without_a_key_fails_clearly_and_results_are_written(tmp_path):
    proc = run_cli(tmp_path, "trainer.max_epochs=1", env=wandb_env(tmp_path, WANDB_MODE="online"), check=False)
    assert proc.returncode != 0
    [results] = results_of(tmp_path)
    assert results["status"] == "failed" and results["error"].startswith("WandbStartError: W&B could not start")
    assert "unset WANDB_MODE" in results["error"]


# --- unsafe checkpoints, code version, the README's commands ----------------------------------------------

class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_that_runs_code_when_unpickled_is_refused(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"global_step": Evil(), "epoch": 0}, evil)
    proc = run_cli(tmp_path, "logger=none", f"ckpt_path={evil}", check=False)
    assert proc.returncode != 0 and "UnpicklingError" in proc.stderr
    assert not (tmp_path / "pwned").exists()


def test_code_version_is_not_an_outer_repositorys_commit(tmp_path):
    assert code_version() != "unknown" and not code_version().startswith("unknown+")   # the checkout itself
    outer = tmp_path / "outer"
    copy = outer / "vendored" / "hub-copy"
    shutil.copytree(PROJECT_ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "outputs", "data", ".cache",
                                                                      "__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=outer, check=True)
    script = "from hub.results import code_version; print(code_version())"
    printed = subprocess.run([sys.executable, "-c", script], cwd=copy, capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(copy)}).stdout.strip()
    assert re.fullmatch(r"unknown\+[0-9a-f]{12}", printed), printed
    (copy / "hub" / "results.py").write_text((copy / "hub" / "results.py").read_text() + "\n# changed\n")
    changed = subprocess.run([sys.executable, "-c", script], cwd=copy, capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(copy)}).stdout.strip()
    assert changed != printed


def quick_start() -> list[str]:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines()]


def test_the_readme_test_command_collects_every_test_as_written_and_ci_runs_it():
    [_, test_command] = quick_start()
    ci_commands = [line.strip() for line in (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci_commands[-1] == test_command
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTEST_ADDOPTS"] = "--collect-only -q -n 0"      # collection is what failed; do not run the suite twice
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(shlex.split(test_command), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    collected = re.search(r"(\d+)(?:/\d+)? tests? collected", proc.stdout)
    assert collected and int(collected.group(1)) > 300, proc.stdout[-1000:]
