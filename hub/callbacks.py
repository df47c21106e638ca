"""Callbacks of our own: only what Lightning does not measure the way results.json needs it."""
from __future__ import annotations

import logging
import time

import lightning as L
import torch

log = logging.getLogger(__name__)


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


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss (or gradient norm); the message names the step."""


class NonFiniteGuard(L.Callback):
    """Stop a run whose loss (or, with gradient clipping on, whose gradient norm) is NaN or infinite, before
    that step changes a weight; or, with action="skip", drop such a step up to `max_skips` times.

    The loss is checked on the device at every backward and read once per optimizer step, so accumulated
    micro-batches are covered too. A skipped step sets every gradient to None: AdamW, Lion and Adafactor then
    leave the parameters and their moments untouched (the scheduler still advances). An optimizer with a
    guard of its own (`handles_non_finite = True`: Tiger shrinks the weights towards their init centre) is
    handed the skipped step as is, so its semantics stay. Mixed precision with a GradScaler (16-mixed)
    skips overflowing steps itself: only the loss is checked there.

    Args:
        action: "stop" (raise NonFiniteLossError) or "skip".
        max_skips: the most steps a run may skip before it stops.
    """

    def __init__(self, action: str = "stop", max_skips: int = 10):
        if action not in ("stop", "skip"):
            raise ValueError(f"callbacks.non_finite.action must be 'stop' or 'skip', got {action!r}")
        self.action, self.max_skips = action, max_skips
        self.skipped, self._finite_loss, self._batch_idx = 0, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer, pl_module, loss):
        finite = torch.isfinite(loss.detach()).all()
        self._finite_loss = finite if self._finite_loss is None else self._finite_loss & finite

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        problem = self.problem(trainer, optimizer)
        self._finite_loss = None
        if problem is None:
            return
        where = (f"{problem} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx})")
        if self.action == "skip" and self.skipped < self.max_skips:
            self.skipped += 1
            log.warning("%s: step skipped (%d of at most %d)", where, self.skipped, self.max_skips)
            if not getattr(optimizer, "handles_non_finite", False):
                optimizer.zero_grad(set_to_none=True)
            return
        skips = f" after {self.skipped} skipped steps" if self.skipped else ""
        raise NonFiniteLossError(f"{where}{skips}: training diverged. Lower optimizer.lr, set "
                                 f"trainer.gradient_clip_val, or skip such steps with "
                                 f"callbacks.non_finite.action=skip")

    def problem(self, trainer, optimizer) -> str | None:
        if self._finite_loss is not None and not bool(self._finite_loss):
            return "non-finite loss"
        if trainer.gradient_clip_val and not str(trainer.precision).startswith("16"):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            if not bool(torch.isfinite(norm)):
                return f"non-finite gradient norm ({norm.item()})"
        return None

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = state_dict["skipped"]
