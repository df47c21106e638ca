"""Where a hub run's training steps wait for the GPU: every synchronizing CUDA call in steady-state steps.

torch.cuda.set_sync_debug_mode("warn") makes each operation that blocks the host until the device catches up
(`.item()`, `.cpu()`, a copy to pageable memory, boolean indexing, ...) emit a warning. This script trains the
run given by the overrides, turns the mode on for training batches [start, start + steps), and prints each
distinct call site (the innermost frames of its Python stack) with how often it synced per step:

    python benchmarks/sync_sites.py experiment=cosent_vs_sbert backbone=pretrained data=stsb trainer=gpu \
        trainer.max_epochs=1 --start 60 --steps 20 --out sync_sites.txt
"""
from __future__ import annotations

import sys
import traceback
import warnings
from collections import Counter
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.profile_step import arguments, fit_with


class SyncSites(L.Callback):
    """Counts the Python stacks of synchronizing CUDA calls made during batches [start, start + steps)."""

    def __init__(self, start: int, steps: int, frames: int = 6):
        self.start, self.steps, self.frames = start, steps, frames
        self.sites: Counter = Counter()
        self._caught = None

    def _record(self, message, category, filename, lineno, file=None, line=None):
        if "synchronizing" not in str(message):
            return
        stack = traceback.extract_stack()[:-2][-self.frames:]
        self.sites["\n".join(f"    {f.filename}:{f.lineno} {f.name}: {f.line}" for f in stack)] += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.start and self._caught is None:
            torch.cuda.synchronize()
            self._caught = warnings.catch_warnings()
            self._caught.__enter__()
            warnings.simplefilter("always")
            warnings.showwarning = self._record
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._caught is not None and trainer.global_step == self.start + self.steps:
            torch.cuda.set_sync_debug_mode("default")
            self._caught.__exit__(None, None, None)
            self._caught = False
            trainer.should_stop = True

    def report(self) -> str:
        total = sum(self.sites.values())
        lines = [f"{total} synchronizing calls in {self.steps} steps ({total / self.steps:.1f} per step), "
                 f"{len(self.sites)} call sites"]
        for stack, count in self.sites.most_common():
            lines += [f"{count / self.steps:.2f} per step:", stack]
        return "\n".join(lines)


def main():
    args = arguments(steps=20, out="sync_sites.txt")
    sites = SyncSites(args.start, args.steps)
    fit_with(args.overrides, sites, "/tmp/sync_sites")
    Path(args.out).write_text(sites.report())
    print(sites.report())


if __name__ == "__main__":
    main()
