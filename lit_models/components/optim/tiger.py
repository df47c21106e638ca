"""Tiger (Su 2023, "Tiger: a tight-fisted optimizer"; kexue.fm/archives/9512, github.com/bojone/tiger)."""
from __future__ import annotations

import torch
from torch.optim import Optimizer


class Tiger(Optimizer):
    """Lion with β1 = β2 = β: the update is the sign of the momentum alone.

        m_t = β·m_{t−1} + (1 − β)·g_t
        θ_t = θ_{t−1} − η_t·(sign(m_t) + λ·θ_{t−1})

    The step size is relative to the parameter's scale, set by one global α (`lr`), per parameter kind as in
    the author's implementation (github.com/bojone/tiger, tiger.py):
        η_t = α·RMS(θ_{t−1})          kernels,                                     λ = group weight decay
        η_t = α·RMS(row of θ_{t−1})   embedding tables (groups marked `embedding`), λ = group weight decay
        η_t = α/2                     biases, norm gains and betas, per-dimension scales and offsets such as
                                      GAU's γ, β (groups marked `vector` or `norm_gain`, or ndim < 2), λ = 0
    The reference picks the kinds by variable name (bias|beta|gamma, embeddings); TaskModule.parameter_groups
    marks the same parameters by module (lit_models/base.py).

    Gradient accumulation over k = `grad_accum_steps` calls to `step()` lives in the momentum, with no
    extra buffer: m_t = [(β − 1)·χ_{(t−1)/k} + 1]·m_{t−1} + (1 − β)·g_t/k, where χ_{(t−1)/k} = 1 when k
    divides t − 1, and θ moves only when k divides t. Call `step()` and `zero_grad()` on every micro-batch.

    NaN guard: when a parameter's gradient holds a NaN or inf, its momentum is kept and the parameter
    shrinks towards its init centre, θ ← (θ − c)·s + c, with c = 1 for norm gains (param groups marked
    `"norm_gain": True`, as TaskModule.parameter_groups gives them) and c = 0 otherwise. (The reference takes
    c = 1 for every variable named gamma; GAU's γ is drawn around 0 here, so its centre stays 0.)

    Defaults (the post's NLP setting): α = 1e-3 (peak α ∈ [1e-3, 2e-3]; a schedule multiplies it),
    β = 0.965 (mean of Lion's NLP β1 = 0.95, β2 = 0.98), λ = 0.01, s = 0.99, k = 1.

    Args:
        params: parameters or param-group dicts; a group may set `norm_gain`, `embedding` or `vector` to True.
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
                        shrink_ratio=shrink_ratio, norm_gain=False, embedding=False, vector=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient: multi-tensor (foreach) kernels per group, plus one
        `where` per parameter that keeps the guard's choice on the device (no host sync)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for t, params in self.params_by_step(group).items():
                self.update(group, t, params)
        return loss

    def params_by_step(self, group: dict) -> dict[int, list[torch.Tensor]]:
        """The group's parameters with a gradient by their step count after this step (one count, unless some
        parameters missed earlier steps)."""
        by_step: dict[int, list[torch.Tensor]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            by_step.setdefault(state["step"], []).append(p)
        return by_step

    def update(self, group: dict, t: int, params: list[torch.Tensor]) -> None:
        beta, k, s = group["beta"], group["grad_accum_steps"], group["shrink_ratio"]
        grads = [p.grad for p in params]
        moments = [self.state[p]["exp_avg"] for p in params]
        # max |g| is NaN or inf exactly when g holds a NaN or an inf (a sum of squares could overflow)
        finite = torch.isfinite(torch.stack(torch._foreach_norm(grads, float("inf")))).unbind()

        decay = beta if (t - 1) % k == 0 else 1.0
        candidate = torch._foreach_mul(moments, decay)
        torch._foreach_add_(candidate, grads, alpha=(1 - beta) / k)
        torch._foreach_copy_(moments, [torch.where(f, c, m) for f, c, m in zip(finite, candidate, moments)])

        centre = 1.0 if group["norm_gain"] else 0.0
        fallback = torch._foreach_mul(params, s)                       # (θ − c)·s + c
        torch._foreach_add_(fallback, centre * (1 - s))
        updated = [p.clone() for p in params] if t % k else self.moved(group, params, moments)
        torch._foreach_copy_(params, [torch.where(f, u, b) for f, u, b in zip(finite, updated, fallback)])

    @staticmethod
    def moved(group: dict, params: list[torch.Tensor], moments: list[torch.Tensor]) -> list[torch.Tensor]:
        """θ − η·(sign(m) + λ·θ): kernels with η = α·RMS(θ) = α·‖θ‖/√n, embedding tables with each row's RMS,
        both with the group's λ; vectors with α/2 and λ = 0."""
        alpha, wd = group["lr"], group["weight_decay"]
        updates = torch._foreach_sign(moments)
        vector = group.get("vector") or group.get("norm_gain")
        kernels = [(u, p) for u, p in zip(updates, params) if p.ndim >= 2 and not vector]
        vectors = [u for u, p in zip(updates, params) if p.ndim < 2 or vector]
        if kernels:
            k_updates, k_params = (list(part) for part in zip(*kernels))
            if group.get("embedding"):
                steps = [p.pow(2).mean(-1, keepdim=True).sqrt() for p in k_params]
            else:
                steps = torch._foreach_div(torch._foreach_norm(k_params), [p.numel() ** 0.5 for p in k_params])
            torch._foreach_mul_(steps, alpha)
            if wd:
                torch._foreach_add_(k_updates, k_params, alpha=wd)
            torch._foreach_mul_(k_updates, steps)
        if vectors:
            torch._foreach_mul_(vectors, 0.5 * alpha)
        return torch._foreach_sub(params, updates)
