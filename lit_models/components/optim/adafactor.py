"""Adafactor (Shazeer & Stern 2018) as transformers defines it, stepped without host syncs."""
from __future__ import annotations

import math

import torch
from transformers.optimization import Adafactor as TransformersAdafactor


class Adafactor(TransformersAdafactor):
    """transformers' Adafactor (same arguments, defaults and state, so its checkpoints load), with the step
    written as multi-tensor kernels per group and every step size kept on the device.

    Per parameter θ with gradient g, at step t (transformers' formulas):

        ρ_t = lr, or min(10⁻² (10⁻⁶·t with warmup_init), 1/√t) with relative_step
        η_t = ρ_t · max(ε₂, RMS(θ))  with scale_parameter, else ρ_t
        β₂ₜ = 1 − t^decay_rate
        V_t = β₂ₜ·V + (1 − β₂ₜ)·(g² + ε₁), factored for matrices into row and column means:
              R ← β₂ₜ·R + (1 − β₂ₜ)·mean_col(g² + ε₁),  C likewise over rows,  V̂ = (R / mean(R)) ⊗ C
        u = g / √V̂,  u ← u / max(1, RMS(u)/d),  u ← η_t·u
        m = β₁·m + (1 − β₁)·u  (with beta1), and u = m
        θ ← θ − weight_decay·η_t·θ − u

    transformers evaluates max(ε₂, RMS(θ)) in Python, which waits for the GPU once per parameter and step;
    with scale_parameter (the CLUE baselines' setting, kexue.fm/archives/8739) that made an epoch of
    CMRC2018 take about twice AdamW's time. Here RMS(θ), the clipping and the steps stay tensors, and the
    element-wise work of a group runs as `torch._foreach_*` kernels; only the factored second moment's
    row/column means run per matrix.
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            loss = closure()
        for group in self.param_groups:
            by_step: dict[int, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Adafactor does not support sparse gradients.")
                state = self.state[p]
                if not state:
                    self.init_state(group, p, state)
                state["step"] += 1
                by_step.setdefault(state["step"], []).append(p)
            for t, params in by_step.items():
                self.update(group, t, params)
        return loss

    @staticmethod
    def init_state(group: dict, p: torch.Tensor, state: dict) -> None:
        grad = p.grad.float() if p.grad.dtype in (torch.float16, torch.bfloat16) else p.grad
        state["step"] = 0
        if group["beta1"] is not None:
            state["exp_avg"] = torch.zeros_like(grad)
        if grad.ndim >= 2:
            state["exp_avg_sq_row"] = torch.zeros(grad.shape[:-1]).to(grad)
            state["exp_avg_sq_col"] = torch.zeros(grad.shape[:-2] + grad.shape[-1:]).to(grad)
        else:
            state["exp_avg_sq"] = torch.zeros_like(grad)
        state["RMS"] = 0

    def update(self, group: dict, t: int, params: list[torch.Tensor]) -> None:
        states = [self.state[p] for p in params]
        low = [p.dtype in (torch.float16, torch.bfloat16) for p in params]
        grads = [p.grad.float() if lo else p.grad for p, lo in zip(params, low)]
        weights = [p.float() if lo else p for p, lo in zip(params, low)]
        sizes = [p.numel() ** 0.5 for p in params]

        rms = torch._foreach_div(torch._foreach_norm(weights), sizes)
        for state, r in zip(states, rms):
            state["RMS"] = r
        rho = group["lr"]
        if group["relative_step"]:
            rho = min(1e-6 * t if group["warmup_init"] else 1e-2, 1.0 / math.sqrt(t))
        lr = torch._foreach_mul(torch._foreach_clamp_min(rms, group["eps"][1]), rho) if group["scale_parameter"] \
            else None   # None: the step is the float rho

        beta2t = 1.0 - math.pow(t, group["decay_rate"])
        squared = torch._foreach_mul(grads, grads)
        torch._foreach_add_(squared, group["eps"][0])
        updates = [None] * len(params)
        vectors = [i for i, g in enumerate(grads) if g.ndim < 2]
        if vectors:
            second = [states[i]["exp_avg_sq"] for i in vectors]
            torch._foreach_mul_(second, beta2t)
            torch._foreach_add_(second, [squared[i] for i in vectors], alpha=1.0 - beta2t)
            for i, u in zip(vectors, torch._foreach_mul(torch._foreach_rsqrt(second), [grads[i] for i in vectors])):
                updates[i] = u
        matrices = [i for i, g in enumerate(grads) if g.ndim >= 2]
        if matrices:
            rows = [states[i]["exp_avg_sq_row"] for i in matrices]
            cols = [states[i]["exp_avg_sq_col"] for i in matrices]
            torch._foreach_mul_(rows, beta2t)
            torch._foreach_add_(rows, [squared[i].mean(dim=-1) for i in matrices], alpha=1.0 - beta2t)
            torch._foreach_mul_(cols, beta2t)
            torch._foreach_add_(cols, [squared[i].mean(dim=-2) for i in matrices], alpha=1.0 - beta2t)
            for i, row, col in zip(matrices, rows, cols):
                updates[i] = self._approx_sq_grad(row, col).mul_(grads[i])

        clip = torch._foreach_div(torch._foreach_norm(updates), [s * group["clip_threshold"] for s in sizes])
        torch._foreach_div_(updates, torch._foreach_clamp_min(clip, 1.0))
        torch._foreach_mul_(updates, lr if lr is not None else rho)
        if group["beta1"] is not None:
            moments = [state["exp_avg"] for state in states]
            torch._foreach_mul_(moments, group["beta1"])
            torch._foreach_add_(moments, updates, alpha=1 - group["beta1"])
            updates = moments
        if group["weight_decay"] != 0:
            decay = torch._foreach_mul(weights, lr) if lr is not None else torch._foreach_mul(weights, rho)
            torch._foreach_add_(weights, decay, alpha=-group["weight_decay"])
        torch._foreach_sub_(weights, updates)
        for p, w, lo in zip(params, weights, low):
            if lo:
                p.copy_(w)
