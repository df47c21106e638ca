"""Where a hub run's training steps spend their time: torch.profiler over steady-state steps of one run.

Composes the run's config from the overrides given, trains it with a callback that profiles training batches
[start, start + steps) (after graph recording and warm-up), and prints the top operations by device time and
by host time, plus the mean step time on each side; then Python's cProfile over as many steps after those (the
Lightning loop, callbacks, collate: host work torch.profiler names only by the operations it launches), by
cumulative and by own time. The same overrides as `python run.py`:

    python benchmarks/profile_step.py experiment=cosent_vs_sbert backbone=pretrained data=stsb trainer=gpu \
        logger=none trainer.max_epochs=1 --start 60 --steps 30 --out profile.txt
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from run import build
from tests.conftest import compose_config


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class ProfileSteps(L.Callback):
    """torch.profiler over training batches [start, start + steps), then cProfile over the next `steps`."""

    def __init__(self, start: int, steps: int):
        self.start, self.steps, self.profiler = start, steps, None
        self.python, self.python_wall_s = None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.start and self.profiler is None:
            synchronize()
            self.profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            self.profiler.__enter__()
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.profiler is not None and trainer.global_step == self.start + self.steps:
            synchronize()
            self.wall_s = time.perf_counter() - self.started
            self.profiler.__exit__(None, None, None)
            self.report, self.profiler = self.profiler.key_averages(), None
            self.python = cProfile.Profile()
            self.started = time.perf_counter()
            self.python.enable()
        elif self.python is not None and trainer.global_step == self.start + 2 * self.steps:
            self.python.disable()
            synchronize()
            self.python_wall_s = time.perf_counter() - self.started
            trainer.should_stop = True

    def python_table(self, sort: str, limit: int = 45) -> str:
        text = io.StringIO()
        pstats.Stats(self.python, stream=text).sort_stats(sort).print_stats(limit)
        return text.getvalue()


def arguments(steps: int, out: str) -> argparse.Namespace:
    """The run's overrides, and which training batches to watch: [--start, --start + --steps)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--start", type=int, default=60)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--out", default=out)
    return parser.parse_args()


def fit_with(overrides: list[str], watcher: L.Callback, output_dir: str):
    """Train the run of `overrides` (no loggers, no test) with its own callbacks plus `watcher`; its model."""
    cfg = compose_config(*overrides, "logger=none", "test=false", output_dir=output_dir)
    L.seed_everything(cfg.seed)
    datamodule, model = build(cfg)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[*callbacks, watcher])
    trainer.fit(model, datamodule=datamodule)
    return model


def main():
    args = arguments(steps=30, out="profile.txt")
    profiler = ProfileSteps(args.start, args.steps)
    model = fit_with(args.overrides, profiler, "/tmp/profile_step")
    events = profiler.report
    device_ms = sum(e.self_device_time_total for e in events) / args.steps / 1000
    wall_ms = 1000 * profiler.wall_s / args.steps
    summary = (f"{args.steps} steps from step {args.start}: {wall_ms:.2f} ms per step (profiled), of which the "
               f"device is busy {device_ms:.2f} ms; speed path {model.speed_summary()}")
    lines = [summary,
             events.table(sort_by="self_device_time_total", row_limit=25),
             events.table(sort_by="self_cpu_time_total", row_limit=25)]
    if profiler.python_wall_s is not None:
        lines += [f"cProfile over the next {args.steps} steps: {1000 * profiler.python_wall_s / args.steps:.2f} ms "
                  f"per step (cProfile's own cost included)",
                  profiler.python_table("cumulative"), profiler.python_table("tottime", 30)]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
