"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"; kexue.fm/archives/9473)."""
from __future__ import annotations

import torch
from torch.optim import Optimizer


class Lion(Optimizer):
    """EvoLved Sign Momentum: every coordinate moves by exactly ±η (plus decoupled weight decay).

        u_t = sign(β1·m_{t−1} + (1 − β1)·g_t)
        θ_t = θ_{t−1} − η·(u_t + λ·θ_{t−1})
        m_t = β2·m_{t−1} + (1 − β2)·g_t

    The sign interpolates with β1 but the momentum is kept with β2: the update reacts faster to the
    current gradient than the momentum it stores. One state tensor per parameter (AdamW keeps two).

    Defaults: β1 = 0.9, β2 = 0.99 (the paper's search result; its NLP runs use 0.95/0.98), λ = 0.
    Since |u| = 1 per coordinate, η should be ≥10× smaller than AdamW's and λ as many times larger,
    so that the decay η·λ stays the same (conf/optimizer/lion.yaml does this).

    Args:
        params: parameters or param-group dicts (extra keys such as `norm_gain` are kept and ignored).
        lr: η.
        betas: (β1, β2).
        weight_decay: λ, decoupled as in AdamW.
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"Lion: lr must be positive, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lion: betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient, as a few multi-tensor (foreach) kernels per group."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            moments = [self.moment(p) for p in params]
            updates = torch._foreach_lerp(moments, grads, 1 - beta1)          # β1·m + (1 − β1)·g
            torch._foreach_sign_(updates)
            torch._foreach_add_(updates, params, alpha=wd)                     # u + λ·θ
            torch._foreach_sub_(params, updates, alpha=lr)
            torch._foreach_lerp_(moments, grads, 1 - beta2)                    # β2·m + (1 − β2)·g
        return loss

    def moment(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if not state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["exp_avg"]
