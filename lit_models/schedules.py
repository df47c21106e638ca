"""Every `scheduler=` choice: a function (optimizer, num_training_steps, ...) -> a per-step LR scheduler."""
from __future__ import annotations

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
