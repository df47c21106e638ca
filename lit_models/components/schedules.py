"""Every `scheduler=` choice: a function (optimizer, num_training_steps, ...) -> a per-step LR scheduler."""
from __future__ import annotations

import math
from typing import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def linear_warmup(optimizer: Optimizer, num_training_steps: int, warmup_ratio: float = 0.1) -> LambdaLR:
    """LR factor rises linearly 0 → 1 over the first `warmup_ratio` of the steps, then falls linearly to 0."""
    warmup = int(warmup_ratio * num_training_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - warmup))

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, num_training_steps: int) -> LambdaLR:
    """The optimizer's LR throughout, as in the CoSENT experiments (Adam, 2e-5, no schedule)."""
    return LambdaLR(optimizer, lambda step: 1.0)


def cosine(optimizer: Optimizer, num_training_steps: int, warmup_ratio: float = 0.1,
           min_ratio: float = 0.0) -> LambdaLR:
    """LR factor rises linearly 0 → 1 over the first `warmup_ratio` of the steps (as linear_warmup), then
    follows half a cosine from 1 down to `min_ratio` at the last step:

        factor = min_ratio + (1 − min_ratio)·(1 + cos(π·p))/2,   p = (step − warmup)/(num_training_steps − warmup)
    """
    warmup = int(warmup_ratio * num_training_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, num_training_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


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
