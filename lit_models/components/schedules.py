"""Every `scheduler=` choice: a function (optimizer, num_training_steps, ...) -> a per-step LR scheduler.

linear_warmup, constant and cosine are transformers' schedules behind our signature (warmup as a ratio of the
steps, w = ⌊warmup_ratio·T⌋), imported when called (transformers takes seconds to import). Their warmup
factor is step/w, so step 0 runs at LR 0 and step w at the full LR.
"""
from __future__ import annotations

from typing import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def linear_warmup(optimizer: Optimizer, num_training_steps: int, warmup_ratio: float = 0.1) -> LambdaLR:
    """LR factor step/w over the first w = ⌊warmup_ratio·T⌋ steps, then (T − step)/(T − w) down to 0 at step T."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * num_training_steps), num_training_steps)


def constant(optimizer: Optimizer, num_training_steps: int) -> LambdaLR:
    """The optimizer's LR throughout, as in the CoSENT experiments (Adam, 2e-5, no schedule)."""
    from transformers import get_constant_schedule

    return get_constant_schedule(optimizer)


def cosine(optimizer: Optimizer, num_training_steps: int, warmup_ratio: float = 0.1,
           min_ratio: float = 0.0) -> LambdaLR:
    """LR factor step/w over the first w = ⌊warmup_ratio·T⌋ steps (as linear_warmup), then half a cosine from 1
    down to `min_ratio` at step T:

        factor = min_ratio + (1 − min_ratio)·(1 + cos(π·p))/2,   p = (step − w)/(T − w)

    p is not clipped at 1: past step T the factor turns back up (Lightning stops at T).
    """
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, int(warmup_ratio * num_training_steps),
                                                       num_training_steps, min_lr_rate=min_ratio)


def piecewise_linear(optimizer: Optimizer, num_training_steps: int,
                     schedule: Sequence[Sequence[float]] = ((0.0, 1.0), (1.0, 0.0)),
                     from_zero: bool = True) -> LambdaLR:
    """LR factor linearly interpolated between points [fraction_of_training, factor], as bert4keras'
    `piecewise_linear` (the LR of GAU-α, kexue.fm/archives/9052, and of bojone/tiger).

    E.g. [[0.1, 1], [1.0, 0.1]]: 0 → 1 over the first 10% of the steps, then 1 → 0.1 at the end. Before
    the first point the factor is 0 when `from_zero` (the first point's factor otherwise); after the last
    point it stays at the last factor. Points may come in any order; two at the same fraction are an error.
    """
    points = sorted((float(t) * num_training_steps, float(x)) for t, x in schedule)
    if not points:
        raise ValueError("piecewise_linear: schedule needs at least one [fraction, factor] point")
    if any(t0 == t1 for (t0, _), (t1, _) in zip(points, points[1:])):
        raise ValueError(f"piecewise_linear: two points at the same fraction in {list(schedule)}")
    if from_zero and points[0][0] > 0:
        points.insert(0, (0.0, 0.0))

    def factor(step: int) -> float:
        if step <= points[0][0]:
            return points[0][1]
        for (t0, x0), (t1, x1) in zip(points, points[1:]):
            if step <= t1:
                return x0 + (x1 - x0) * (step - t0) / (t1 - t0)
        return points[-1][1]

    return LambdaLR(optimizer, factor)
