"""sweeps/*.yaml are valid W&B sweeps, every configuration composes, and they run as Hydra (multi)runs."""

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate

from hub import sweeps
from hub.config import PROJECT_ROOT
from tests.conftest import CONF_DIR, compose_config, results_of, run_cli

SPECS = sorted((PROJECT_ROOT / "sweeps").glob("*.yaml"))


def test_there_is_a_sweep_per_ablation():
    assert {p.stem for p in SPECS} >= {"loss", "optimizer", "init", "attention", "lr"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_is_a_valid_wandb_sweep_passing_hydra_overrides(path):
    spec = sweeps.load(path)
    assert sweeps.violations(spec) == []
    assert spec["program"] == "run.py" and spec["command"][-1] == "${args_no_hyphens}"
    assert len(spec["parameters"]["seed"]["values"]) >= 3


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_configuration_of_the_spec_composes(path):
    spec = sweeps.load(path)
    configurations = sweeps.grid(spec)
    swept = [p for p in spec["parameters"].values() if "values" in p or "min" in p]
    expected = 1
    for param in swept:
        expected *= len(param.get("values", [param.get("min"), param.get("max")]))
    assert len(configurations) == expected
    for overrides in configurations:
        cfg = compose_config(*overrides)
        for override in overrides:
            key, value = override.split("=", 1)
            if "." in key:                                   # a value, not a group choice
                node = cfg
                for part in key.split("."):
                    node = node[part]
                assert str(node) == str(yaml.safe_load(value)), override


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_the_hydra_command_of_the_spec_parses(path):
    spec = sweeps.load(path)
    command = sweeps.run_command(spec)
    overrides = [a for a in command[2:] if a != "-m"]
    parsed = OverridesParser.create().parse_overrides(overrides)
    if spec["method"] == "grid":
        assert command[2] == "-m"
        swept = {o.key_or_group: o for o in parsed if o.is_sweep_override()}
        assert set(swept) == {k for k, p in spec["parameters"].items() if "values" in p}
    else:
        assert "hparams_search=optuna" in command and f"optimized_metric={spec['metric']['name']}" in command
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[o for o in overrides if not o.startswith("hydra.")],
                          return_hydra_config=True)
        assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_the_trainer_of_every_sweep_builds_on_this_machine(path):
    """No sweep pins trainer=gpu: `python -m hub.sweeps` also runs on a CPU-only machine, in 32-true."""
    cfg = compose_config(*sweeps.grid(sweeps.load(path))[0])
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    on_gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert cfg.trainer.precision == trainer.precision == ("bf16-mixed" if on_gpu else "32-true")


@pytest.mark.parametrize("cuda, trainer, precision", [
    (False, "trainer=default", "32-true"),
    (True, "trainer=default", "bf16-mixed"),
    (True, "trainer.accelerator=cpu", "32-true"),                  # trainer=default on the CPU of a GPU machine
    (True, "trainer=cpu", "32-true"),
    (True, "trainer=gpu", "bf16-mixed"),
    (False, "trainer=gpu", "bf16-mixed"),
])
def test_trainer_precision_is_bf16_mixed_on_a_cuda_gpu_and_32_true_elsewhere(monkeypatch, cuda, trainer, precision):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: cuda)
    assert compose_config(trainer).trainer.precision == precision


def test_trainer_default_is_32_true_on_this_cpu_machine():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert compose_config("trainer=default").trainer.precision == "32-true"


def test_optuna_search_optimizes_the_named_metric(tmp_path):
    run_cli(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
            "trainer.max_epochs=1", "logger=none", "optimized_metric=test/spearman")
    results = results_of(tmp_path)
    assert len(results) == 2 and all(r["status"] == "completed" for r in results)
    lrs = {float(next(o.split("=")[1] for o in r["overrides"] if o.startswith("optimizer.lr="))) for r in results}
    assert len(lrs) == 2 and all(1e-5 <= lr <= 1e-3 for lr in lrs)
    [summary] = (tmp_path / "outputs").rglob("optimization_results.yaml")
    best = yaml.safe_load(summary.read_text())
    assert best["best_value"] == pytest.approx(max(r["test"]["test/spearman"] for r in results))


def test_resuming_from_a_checkpoint_continues_its_wandb_run(tmp_path):
    env = {"WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": str(tmp_path), "NETRC": str(tmp_path / "none")}
    run_cli(tmp_path / "first", "trainer.max_epochs=1", "test=false", env=env)
    [first] = results_of(tmp_path / "first")
    run_cli(tmp_path / "resumed", f"ckpt_path={first['best']['path']}", "trainer.max_epochs=2", "test=false", env=env)
    [resumed] = results_of(tmp_path / "resumed")
    assert resumed["wandb"]["id"] == first["wandb"]["id"] and resumed["output_dir"] != first["output_dir"]
    assert resumed["steps"] == 2 * first["steps"]                    # the second epoch only was trained


def test_slurm_launcher_composes():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.tasks_per_node == 1
