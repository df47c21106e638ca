"""End to end through `python run.py`: real data, real training, results.json, W&B offline."""
import csv
import os

import pytest

from tests.conftest import results_of, run_cli


def test_default_run_offline_wandb_leaves_run_folder_and_results(tmp_path):
    env = {"WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": str(tmp_path), "NETRC": str(tmp_path / "none")}
    proc = run_cli(tmp_path, "trainer.max_epochs=1", env=env)
    [results] = results_of(tmp_path)
    assert results["status"] == "completed" and results["wandb"]["mode"] == "offline"
    assert results["choices"] == {"task": "bi_encoder", "data": "stsb_sample", "backbone": "scratch_tiny",
                                  "loss": "cosent", "optimizer": "adamw", "scheduler": "linear_warmup",
                                  "init": "bert", "attention": "softmax", "trainer": "default", "speed": "default"}
    out = tmp_path / "outputs"
    [offline_run] = out.rglob("offline-run-*")
    assert list(offline_run.glob("run-*.wandb")) and results["wandb"]["id"] in offline_run.name
    # results.json agrees with the CSV log, and the summary printed it (×100)
    rows = list(csv.DictReader(open(next(out.rglob("metrics.csv")))))
    logged_test = float(next(r["test/spearman"] for r in rows if r.get("test/spearman")))
    assert results["test"]["test/spearman"] == pytest.approx(logged_test, abs=1e-6)
    assert f"test/spearman={100 * logged_test:.2f}" in proc.stdout
    assert results["best"]["epoch"] == 0 and os.path.isfile(results["best"]["path"])
    assert results["throughput"]["train_examples"] == 600 and results["throughput"]["examples_per_s"] > 0


def test_a_missing_split_fails_before_training_and_is_recorded(tmp_path, data_dir):
    proc = run_cli(tmp_path, "data=lcqmc", f"paths.data_dir={data_dir}", "logger=csv", check=False)
    assert proc.returncode != 0
    assert "LCQMC.train.data" in proc.stderr
    [results] = results_of(tmp_path)
    assert results["status"] == "failed" and "MissingSplitError" in results["error"]
    assert not list((tmp_path / "outputs").rglob("*.ckpt")) and not list((tmp_path / "outputs").rglob("metrics.csv"))


def test_training_scratch_tiny_on_stsb_raises_val_spearman(tmp_path, data_dir):
    common = ["data=stsb", f"paths.data_dir={data_dir}", "logger=csv", "seed=3"]
    # the untrained model on the valid split (evaluated as the test split)
    run_cli(tmp_path / "untrained", *common, "train=false", "data.files.test=${data.files.valid}")
    run_cli(tmp_path / "trained", *common, "trainer.max_epochs=2", "data.train_limit=2500", "test=false")
    [untrained], [trained] = results_of(tmp_path / "untrained"), results_of(tmp_path / "trained")
    before, after = untrained["test"]["test/spearman"], trained["best"]["value"]
    assert after > before + 0.08, (before, after)


def test_e5_zero_shot_stsb_test_spearman(tmp_path, data_dir, e5_dir):
    run_cli(tmp_path, "backbone=pretrained", f"backbone.name_or_path={e5_dir}", "data=stsb",
            f"paths.data_dir={data_dir}", "train=false", "logger=none", "task.pooling=mean")
    [results] = results_of(tmp_path)
    assert 100 * results["test"]["test/spearman"] == pytest.approx(77.4, abs=1.0)
