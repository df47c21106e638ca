"""Tiger (Su 2023, "Tiger: a tight-fisted optimizer"; kexue.fm/archives/9512, github.com/bojone/tiger)."""
from __future__ import annotations

import torch
from torch.optim import Optimizer


class Tiger(Optimizer):
    """Lion with β1 = β2 = β: the update is the sign of the momentum alone.

        m_t = β·m_{t−1} + (1 − β)·g_t
        θ_t = θ_{t−1} − η_t·(sign(m_t) + λ·θ_{t−1})

    The step size is relative to the parameter's scale, set by one global α (`lr`):
        η_t = α·RMS(θ_{t−1})   for kernels (ndim ≥ 2),     λ = group weight decay
        η_t = α/2              for biases and norm gains/betas (ndim < 2),  λ = 0

    Gradient accumulation over k = `grad_accum_steps` calls to `step()` lives in the momentum, with no
    extra buffer: m_t = [(β − 1)·χ_{(t−1)/k} + 1]·m_{t−1} + (1 − β)·g_t/k, where χ_{(t−1)/k} = 1 when k
    divides t − 1, and θ moves only when k divides t. Call `step()` and `zero_grad()` on every micro-batch.

    NaN guard: when a parameter's gradient holds a NaN or inf, its momentum is kept and the parameter
    shrinks towards its init centre, θ ← (θ − c)·s + c, with c = 1 for norm gains (param groups marked
    `"norm_gain": True`, as TaskModule.parameter_groups gives them) and c = 0 otherwise.

    Defaults (the post's NLP setting): α = 1e-3 (peak α ∈ [1e-3, 2e-3]; a schedule multiplies it),
    β = 0.965 (mean of Lion's NLP β1 = 0.95, β2 = 0.98), λ = 0.01, s = 0.99, k = 1.

    Args:
        params: parameters or param-group dicts; a group may set `norm_gain: True`.
        lr: the relative learning rate α.
        beta: β.
        weight_decay: λ, applied to kernels only.
        grad_accum_steps: k.
        shrink_ratio: s of the NaN guard.
    """

    handles_non_finite = True  # hub.callbacks.NonFiniteGuard(action="skip") hands such steps to the guard above

    def __init__(self, params, lr: float = 1e-3, beta: float = 0.965, weight_decay: float = 0.01,
                 grad_accum_steps: int = 1, shrink_ratio: float = 0.99):
        if lr <= 0:
            raise ValueError(f"Tiger: lr must be positive, got {lr}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Tiger: beta must lie in [0, 1), got {beta}")
        if int(grad_accum_steps) != grad_accum_steps or grad_accum_steps < 1:
            raise ValueError(f"Tiger: grad_accum_steps must be a positive integer, got {grad_accum_steps}")
        defaults = dict(lr=lr, beta=beta, weight_decay=weight_decay, grad_accum_steps=int(grad_accum_steps),
                        shrink_ratio=shrink_ratio, norm_gain=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta, k, s = group["beta"], group["grad_accum_steps"], group["shrink_ratio"]
            centre = 1.0 if group["norm_gain"] else 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t, m = state["step"], state["exp_avg"]
                # A 0-d tensor, not a Python bool: no host sync per parameter on GPU.
                finite = torch.isfinite(p.grad).all()

                decay = beta if (t - 1) % k == 0 else 1.0
                m.copy_(torch.where(finite, decay * m + (1 - beta) / k * p.grad, m))

                if t % k == 0:
                    if p.ndim >= 2:
                        lr, wd = group["lr"] * p.pow(2).mean().sqrt(), group["weight_decay"]
                    else:
                        lr, wd = 0.5 * group["lr"], 0.0
                    updated = p - lr * (torch.sign(m) + wd * p)
                else:
                    updated = p
                p.copy_(torch.where(finite, updated, (p - centre) * s + centre))
        return loss
