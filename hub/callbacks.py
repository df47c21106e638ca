"""Callbacks of our own: only what Lightning does not measure the way results.json needs it."""
from __future__ import annotations

import logging
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

log = logging.getLogger(__name__)


def _sync(trainer: L.Trainer) -> None:
    if trainer.strategy.root_device.type == "cuda":
        torch.cuda.synchronize(trainer.strategy.root_device)


class Throughput(L.Callback):
    """Training examples/s and tokens/s over the training batches (validation time excluded).

    `train_time_s` is wall time over the timed windows of training (from the end of the warm-up, or of a
    validation, to the next validation or the end of the epoch); `data_wait_s` is the part of it the host spent
    fetching batches, between one step's end and the next one's start. The first `warmup_batches` batches (CUDA
    context, kernel selection, graph capture, allocator growth) are left out of every count, so that a short run
    measures the steady state. Nothing waits for the GPU inside a window: tokens add up on the device, and the
    GPU is synchronized only where a window opens or closes.
    """

    def __init__(self, warmup_batches: int = 0):
        self.warmup_batches = warmup_batches
        self.reset()

    def reset(self):
        self.examples = self.tokens = self.batches = 0
        self.train_time_s = self.data_wait_s = 0.0
        self._tokens = None
        self._window_start = self._fetch_start = None

    def _open(self, trainer) -> None:
        if self._window_start is None and self.batches >= self.warmup_batches:
            _sync(trainer)
            self._window_start = time.perf_counter()

    def _close(self, trainer) -> None:
        if self._window_start is not None:
            _sync(trainer)
            self.train_time_s += time.perf_counter() - self._window_start
            self._window_start = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._open(trainer)
        self._fetch_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._window_start is not None and self._fetch_start is not None:
            self.data_wait_s += time.perf_counter() - self._fetch_start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1
        if self._window_start is not None:
            self.examples += len(batch["labels"])
            tokens = batch["attention_mask"].sum()
            self._tokens = tokens if self._tokens is None else self._tokens + tokens
        else:
            self._open(trainer)
        self._fetch_start = time.perf_counter()

    def on_validation_start(self, trainer, pl_module):
        if trainer.training:
            self._close(trainer)   # validation inside an epoch is not training time

    def on_validation_end(self, trainer, pl_module):
        if trainer.training:
            self._open(trainer)
            self._fetch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self._close(trainer)

    def on_train_end(self, trainer, pl_module):
        """Under DDP every rank counted its own batches: the global rate is their sum over rank 0's time."""
        self._close(trainer)
        self.tokens = int(self._tokens) if self._tokens is not None else 0
        if trainer.world_size > 1:
            counts = torch.tensor([self.examples, self.tokens], dtype=torch.float64, device=pl_module.device)
            self.examples, self.tokens = (int(c) for c in trainer.strategy.reduce(counts, reduce_op="sum"))

    def summary(self) -> dict:
        seconds = max(self.train_time_s, 1e-9)
        return {"train_examples": self.examples, "train_time_s": round(self.train_time_s, 3),
                "data_wait_s": round(self.data_wait_s, 3),
                "examples_per_s": round(self.examples / seconds, 2), "tokens_per_s": round(self.tokens / seconds, 1)}


class ProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, showing the training loss without making every step wait for the GPU.

    A value logged with `prog_bar=True` is copied to the host at the end of every batch (Lightning turns
    progress-bar values into Python numbers there), so each step waits until the GPU has finished it and the
    host can no longer queue the next one meanwhile. Tasks log `train/loss` without prog_bar; this bar reads
    it from the trainer's callback metrics only when it redraws, every `refresh_rate` batches.
    """

    SHOWN = ("train/loss",)

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        metrics = trainer.callback_metrics
        return items | {key: f"{float(metrics[key]):.4g}" for key in self.SHOWN if key in metrics}


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss (or gradient norm); the message names the step."""


class NonFiniteGuard(L.Callback):
    """Stop a run whose loss (or, with gradient clipping on, whose gradient norm) is NaN or infinite, before
    that step changes a weight; or, with action="skip", drop such a step up to `max_skips` times.

    The loss is checked on the device at every backward, so accumulated micro-batches are covered too. How a
    bad step is dropped depends on the optimizer:
    - one that skips its update on the device when told `found_inf` (torch's fused AdamW, the hub's default on CUDA; what GradScaler uses):
      the verdict goes to the optimizer as a device tensor, and the host reads it one step later, when the GPU
      is done with it. No step waits for the GPU, and the bad step changes no parameter or moment either way;
      a stop is raised at the next step (or at the epoch's end), naming the bad one.
    - any other: the verdict is read before the step, and a skipped step sets every gradient to None (AdamW
      and Adafactor then leave the parameters and their moments untouched).
    The scheduler advances over a skipped step. An optimizer with a guard of its own (`handles_non_finite =
    True`: Tiger shrinks the weights towards their init centre) is handed the skipped step as is, so its
    semantics stay. Mixed precision with a GradScaler (16-mixed) skips overflowing steps itself: only the loss
    is checked there.

    Args:
        action: "stop" (raise NonFiniteLossError) or "skip".
        max_skips: the most steps a run may skip before it stops.
    """

    def __init__(self, action: str = "stop", max_skips: int = 10):
        if action not in ("stop", "skip"):
            raise ValueError(f"callbacks.non_finite.action must be 'stop' or 'skip', got {action!r}")
        self.action, self.max_skips = action, max_skips
        self.skipped, self._finite_loss, self._batch_idx = 0, None, 0
        self._pending = None   # (verdict copied to the host, its CUDA event, where) of the last deferred step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer, pl_module, loss):
        finite = torch.isfinite(loss.detach()).all()
        self._finite_loss = finite if self._finite_loss is None else self._finite_loss & finite

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        verdict = self.verdict(trainer, optimizer)
        self._finite_loss = None
        where = f"step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx})"
        if skips_on_device(optimizer, trainer):
            self.read_pending()
            optimizer.found_inf = (verdict[:2] < 1).any().float()
            host = torch.empty(verdict.shape, dtype=verdict.dtype, pin_memory=True)
            host.copy_(verdict, non_blocking=True)   # into pinned memory: a copy to pageable memory would wait
            event = torch.cuda.Event()
            event.record()
            self._pending = (host, event, where)
            return
        self.act(problem_of(verdict.cpu()), where, optimizer)

    def on_train_epoch_end(self, trainer, pl_module):
        self.read_pending()

    def on_train_end(self, trainer, pl_module):
        self.read_pending()

    def read_pending(self) -> None:
        """Act on the last deferred verdict (its step was already dropped on the device, if bad)."""
        if self._pending is None:
            return
        host, event, where = self._pending
        self._pending = None
        event.synchronize()
        self.act(problem_of(host), where, optimizer=None)

    def act(self, problem: str | None, where: str, optimizer) -> None:
        if problem is None:
            return
        where = f"{problem} at {where}"
        if self.action == "skip" and self.skipped < self.max_skips:
            self.skipped += 1
            log.warning("%s: step skipped (%d of at most %d)", where, self.skipped, self.max_skips)
            if optimizer is not None and not getattr(optimizer, "handles_non_finite", False):
                optimizer.zero_grad(set_to_none=True)
            return
        skips = f" after {self.skipped} skipped steps" if self.skipped else ""
        raise NonFiniteLossError(f"{where}{skips}: training diverged. Lower optimizer.lr, set "
                                 f"trainer.gradient_clip_val, or skip such steps with "
                                 f"callbacks.non_finite.action=skip")

    def verdict(self, trainer, optimizer) -> torch.Tensor:
        """On the device, without waiting for it: [loss finite, gradient norm finite, gradient norm] (the norm
        is checked only with gradient clipping on, as clipping is what turns it into every weight's NaN)."""
        loss_ok = self._finite_loss if self._finite_loss is not None else torch.tensor(True)
        norm = torch.zeros((), device=loss_ok.device)
        if trainer.gradient_clip_val and not str(trainer.precision).startswith("16"):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                norm = torch.nn.utils.get_total_norm(grads).float()
        norm = norm.to(loss_ok.device)
        return torch.stack([loss_ok.float(), torch.isfinite(norm).float(), norm])

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = state_dict["skipped"]


def problem_of(verdict: torch.Tensor) -> str | None:
    loss_ok, norm_ok, norm = verdict.tolist()
    if not loss_ok:
        return "non-finite loss"
    if not norm_ok:
        return f"non-finite gradient norm ({norm})"
    return None


def skips_on_device(optimizer, trainer) -> bool:
    """Whether `optimizer` drops a step on the device when its `found_inf` is 1: torch's fused optimizers (AdamW
    here). Not under a GradScaler, which sets found_inf itself."""
    if getattr(optimizer, "handles_non_finite", False) or str(trainer.precision).startswith("16"):
        return False
    if trainer.strategy.root_device.type != "cuda":
        return False
    return bool(optimizer.defaults.get("fused"))
