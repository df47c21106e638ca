"""Callbacks of our own: only what Lightning does not measure the way results.json needs it."""
from __future__ import annotations

import time

import lightning as L
import torch


def _sync(trainer: L.Trainer) -> None:
    if trainer.strategy.root_device.type == "cuda":
        torch.cuda.synchronize(trainer.strategy.root_device)


class Throughput(L.Callback):
    """Training examples/s and tokens/s over the training batches (validation time excluded).

    `train_time_s` is wall time from each training batch's start to the next one's (data loading, forward,
    backward and optimizer step); `step_time_s` only the part inside the step, so their difference is
    time spent waiting for data. The first `warmup_batches` batches (CUDA context, kernel selection, allocator
    growth) are left out of every count, so that a short run measures the steady state.
    """

    def __init__(self, warmup_batches: int = 0):
        self.warmup_batches = warmup_batches
        self.reset()

    def reset(self):
        self.examples = self.tokens = self.batches = 0
        self.train_time_s = self.step_time_s = 0.0
        self._batch_start = self._last_end = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._last_end = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        _sync(trainer)
        now = time.perf_counter()
        self.batches += 1
        if self.batches <= self.warmup_batches:
            self._last_end = now
            return
        self.step_time_s += now - self._batch_start
        self.train_time_s += now - self._last_end
        self._last_end = now
        self.examples += len(batch["labels"])
        self.tokens += int(batch["attention_mask"].sum())

    def on_validation_end(self, trainer, pl_module):
        self._last_end = time.perf_counter()  # validation inside an epoch is not training time

    def on_train_end(self, trainer, pl_module):
        """Under DDP every rank counted its own batches: the global rate is their sum over rank 0's time."""
        if trainer.world_size > 1:
            counts = torch.tensor([self.examples, self.tokens], dtype=torch.float64, device=pl_module.device)
            self.examples, self.tokens = (int(c) for c in trainer.strategy.reduce(counts, reduce_op="sum"))

    def summary(self) -> dict:
        seconds = max(self.train_time_s, 1e-9)
        return {"train_examples": self.examples, "train_time_s": round(self.train_time_s, 3),
                "data_wait_s": round(self.train_time_s - self.step_time_s, 3),
                "examples_per_s": round(self.examples / seconds, 2), "tokens_per_s": round(self.tokens / seconds, 1)}
