"""A Hugging Face TrainerCallback that times the steady state of a training run, for the baselines of speed.sh."""
from __future__ import annotations

import time

import torch
from transformers import TrainerCallback


class SteadyRate(TrainerCallback):
    """Examples/s over the optimizer steps after the first `warmup_steps` (start-up left out, as the hub's
    Throughput callback does); `examples` counts `batch_size` per step."""

    def __init__(self, batch_size: int, warmup_steps: int):
        self.batch_size, self.warmup_steps = batch_size, warmup_steps
        self.start = self.steps = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup_steps:
            torch.cuda.synchronize()
            self.start, self.steps = time.perf_counter(), state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
        self.examples = (state.global_step - self.steps) * self.batch_size

    def result(self) -> dict:
        return {"examples_per_s": round(self.examples / self.seconds, 1), "train_time_s": round(self.seconds, 2)}
