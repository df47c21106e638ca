"""Every benchmarks/claims/*.sh under SMOKE=1: each composes its runs' configs and runs them a few CPU steps end
to end, and its report names the axes it compares, so that a claim script cannot rot unnoticed. About five
minutes on two cores: marked slow, and run by .ci/run after the default suite."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hub.config import PROJECT_ROOT

pytestmark = pytest.mark.slow
CLAIMS = PROJECT_ROOT / "benchmarks" / "claims"
ORDER = ["deepnorm", "bert_init", "gau", "optimizers", "length", "linear_speed", "recompute", "downstream"]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, data_dir) -> dict[str, Path]:
    """Each claim script run once under SMOKE=1 into one BENCH_DIR (downstream reads the others' checkpoints)."""
    bench = tmp_path_factory.mktemp("bench")
    env = os.environ | {"SMOKE": "1", "BENCH_DIR": str(bench), "HUB_DATA_DIR": str(data_dir),
                        "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"}
    for claim in ORDER:
        done = subprocess.run(["bash", str(CLAIMS / f"{claim}.sh")], env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{claim}.sh failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return {claim: bench / "claims" / claim for claim in ORDER}


def test_every_claim_script_is_tested():
    assert sorted(p.stem for p in CLAIMS.glob("*.sh") if p.stem != "lib") == sorted(ORDER)


def override(run: dict, key: str) -> str | None:
    """The value the run's command line gave `key` (the last one, as Hydra takes it)."""
    values = [o.split("=", 1)[1] for o in run["overrides"] if o.split("=", 1)[0] == key]
    return values[-1] if values else None


def completed_runs(folder: Path) -> list[dict]:
    runs = [json.loads(p.read_text()) for p in folder.rglob("results.json")]
    assert runs and all(run["status"] == "completed" for run in runs), folder
    return runs


@pytest.mark.parametrize("claim, runs, axes", [
    ("deepnorm", 6, {"backbone.norm": ["post", "deepnorm", "pre"], "optimizer.lr": ["0.0001", "0.0003", "0.001"]}),
    ("bert_init", 2, {"init": ["bert", "xavier"]}),
    ("gau", 4, {"attention": ["gau", "softmax"], "scheduler": ["constant", "linear_warmup"]}),
    ("optimizers", 6, {"optimizer": ["adamw", "lion", "tiger"], "data.batch_size": ["16", "4"]}),
    ("downstream", 6, {}),
])
def test_a_claim_runs_every_variant_and_reports_its_axes(smoke_runs, claim, runs, axes):
    folder = smoke_runs[claim]
    assert len(completed_runs(folder)) == runs
    report = (folder / "report.md").read_text()
    for axis, choices in axes.items():
        assert axis in report and all(choice in report for choice in choices), (axis, choices)


def test_length_tests_every_trained_model_at_each_length_and_window(smoke_runs):
    folder = smoke_runs["length"]
    assert len(completed_runs(folder / "train")) == 3
    tests = completed_runs(folder / "test")
    # softmax at 4 lengths × {no window, window T}; softmax_logn and qk_bias_only at 4 lengths
    assert len(tests) == 16 and {override(run, "data.eval_max_length") for run in tests} == {"16", "32", "64", "128"}
    assert all("test/accuracy" in run["test"] for run in tests)


def test_downstream_fine_tunes_each_claims_checkpoint_on_sts_b_and_tnews(smoke_runs):
    runs = completed_runs(smoke_runs["downstream"])
    checkpoints = {override(run, "backbone.checkpoint") for run in runs}
    assert {Path(c).parts[-4] for c in checkpoints} == {"deepnorm", "gau", "optimizers"}
    assert not any("lr_probe" in c for c in checkpoints)
    assert {run["choices"]["data"] for run in runs} == {"stsb", "tnews"}


def test_the_speed_tables_have_a_row_per_setting(smoke_runs):
    attention = (smoke_runs["linear_speed"] / "table.md").read_text()
    assert attention.count("| 16 |") == 3 and attention.count("| 32 |") == 3 and "linear (hub)" in attention
    recompute = (smoke_runs["recompute"] / "table.md").read_text()
    assert recompute.count("| True |") == 2 and recompute.count("| False |") == 2


def test_optimizer_state_is_two_moments_for_adamw_and_one_for_lion_and_tiger(smoke_runs):
    table = (smoke_runs["optimizers"] / "state_memory.md").read_text()
    assert "| adamw |" in table and table.split("| adamw |")[1].split("\n")[0].strip().endswith("2.00 |")
    for name in ("lion", "tiger"):
        assert table.split(f"| {name} |")[1].split("\n")[0].strip().endswith("1.00 |")
