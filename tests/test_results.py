"""hub/results.py: what results.json records of the best checkpoint."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from hub.results import best_checkpoint


def trainer_with_checkpoint(tmp_path, monitor, score):
    path = tmp_path / "best.ckpt"
    torch.save({"epoch": 2, "global_step": 30}, path)
    callback = SimpleNamespace(best_model_path=str(path), monitor=monitor, best_model_score=score)
    return SimpleNamespace(checkpoint_callbacks=[callback])


def test_best_checkpoint_records_the_monitored_value(tmp_path):
    best = best_checkpoint(trainer_with_checkpoint(tmp_path, "val/spearman", torch.tensor(0.75)))
    assert best == {"path": str(tmp_path / "best.ckpt"), "metric": "val/spearman", "value": 0.75, "epoch": 2,
                    "step": 30}


def test_a_checkpoint_without_a_monitor_has_no_value_and_does_not_fail(tmp_path):
    """Lightning's default checkpoint callback (no monitor, e.g. with validation off) keeps the last one."""
    best = best_checkpoint(trainer_with_checkpoint(tmp_path, None, None))
    assert best["metric"] is None and best["value"] is None and best["step"] == 30


def test_the_last_checkpoint_is_never_reported_as_best(tmp_path):
    from hub.checkpoints import LastCheckpoint

    last = LastCheckpoint(dirpath=str(tmp_path))
    last.best_model_path = str(tmp_path / "best.ckpt")
    torch.save({"epoch": 2, "global_step": 30}, tmp_path / "best.ckpt")
    assert best_checkpoint(SimpleNamespace(checkpoint_callbacks=[last])) is None
