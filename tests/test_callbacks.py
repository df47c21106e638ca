"""hub/callbacks.py: the throughput that results.json and the scaling benchmark report."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hub import callbacks
from hub.callbacks import Throughput


def drive(throughput: Throughput, monkeypatch, batch_sizes: list[int], step_s: list[float], wait_s: float):
    """Feed `throughput` one epoch of batches on a fake clock: each waits `wait_s` for data, then steps."""
    now = [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: now[0])
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=1)
    throughput.on_train_epoch_start(trainer, None)
    for size, step in zip(batch_sizes, step_s):
        now[0] += wait_s
        throughput.on_train_batch_start(trainer, None, None, 0)
        now[0] += step
        batch = {"labels": torch.zeros(size), "attention_mask": torch.ones(size, 3)}
        throughput.on_train_batch_end(trainer, None, None, batch, 0)
    throughput.on_train_epoch_end(trainer, None)
    throughput.on_train_end(trainer, None)
    return throughput.summary()


def test_throughput_counts_examples_tokens_and_data_wait(monkeypatch):
    summary = drive(Throughput(), monkeypatch, [4, 4, 2], [1.0, 1.0, 0.5], wait_s=0.5)
    assert summary["train_examples"] == 10
    assert summary["train_time_s"] == pytest.approx(4.0)          # 3 waits of 0.5 + steps 2.5
    assert summary["data_wait_s"] == pytest.approx(1.5)
    assert summary["examples_per_s"] == pytest.approx(2.5)
    assert summary["tokens_per_s"] == pytest.approx(7.5)


def test_throughput_leaves_out_the_warmup_batches(monkeypatch):
    """A slow first batch (CUDA start-up) does not dilute the steady-state rate."""
    summary = drive(Throughput(warmup_batches=2), monkeypatch, [8, 8, 4, 4], [30.0, 2.0, 1.0, 1.0], wait_s=0.0)
    assert summary["train_examples"] == 8
    assert summary["train_time_s"] == pytest.approx(2.0)
    assert summary["examples_per_s"] == pytest.approx(4.0)
