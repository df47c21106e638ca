"""Every `init=` choice: how a weight matrix is drawn. `initialize` walks a module and applies the scheme.

A scheme is a function `scheme(weight, role)` that fills a 2-D weight (Linear [out, in] = [m, n],
Embedding [vocab, d]) in place. `role` is the Linear's `init_role` ("query_key", "value", "residual_out"
or "other"; see lit_models/components/nn/attention.py), which the depth-aware schemes read. Biases start at 0,
LayerNorm at (γ = 1, β = 0), an Embedding's padding row at 0. The scheme applies to every weight of a
from-scratch backbone and to the heads a task creates; a pretrained backbone keeps its weights.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from lit_models.components.nn.transformer import deepnorm_constants

Scheme = Callable[[torch.Tensor, str], None]


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    fan_out, fan_in = weight.shape
    return fan_in, fan_out


def bert(weight: torch.Tensor, role: str = "other", std: float = 0.02) -> None:
    """BERT's truncated normal: N(0, std²) cut at ±2·std, std = 0.02 (effective std ≈ 0.0176).

    kexue.fm/archives/8747 explains why so small: it keeps a Post-Norm stack close to identity at the start.
    """
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def xavier(weight: torch.Tensor, role: str = "other", gain: float = 1.0) -> None:
    """Xavier/Glorot normal: variance gain² · 2 / (m + n) for an m×n matrix (kexue.fm/archives/8725)."""
    fan_in, fan_out = _fans(weight)
    nn.init.normal_(weight, mean=0.0, std=gain * math.sqrt(2.0 / (fan_in + fan_out)))


def lecun(weight: torch.Tensor, role: str = "other") -> None:
    """LeCun normal: variance 1 / fan_in, which keeps the forward variance (kexue.fm/archives/8990, GAU's init)."""
    fan_in, _ = _fans(weight)
    nn.init.normal_(weight, mean=0.0, std=math.sqrt(1.0 / fan_in))


def geometric(weight: torch.Tensor, role: str = "other") -> None:
    """Geometric mean of the fans: variance 1 / √(m·n), so stacked m→n→m layers keep their variance
    (kexue.fm/archives/8725)."""
    fan_in, fan_out = _fans(weight)
    nn.init.normal_(weight, mean=0.0, std=(fan_in * fan_out) ** -0.25)


def deepnorm(weight: torch.Tensor, role: str = "other", num_layers: int = 1, rule: str = "deepnet") -> None:
    """DeepNet's init (kexue.fm/archives/8978): Xavier normal, with gain β on the value, output and
    feed-forward projections (roles "value", "residual_out"); queries and keys keep gain 1.
    β from deepnorm_constants(N); pair it with backbone.norm=deepnorm, whose residual scale α comes from the
    same rule."""
    beta = deepnorm_constants(num_layers, rule)[1]
    xavier(weight, gain=beta if role in ("value", "residual_out") else 1.0)


def scaled_residual(weight: torch.Tensor, role: str = "other", num_layers: int = 1, std: float = 0.02) -> None:
    """GPT-2's scaled init: N(0, std²) everywhere, std/√(2N) on projections into the residual stream
    (role "residual_out"), since 2N sublayers add up there (as in nanoGPT)."""
    scale = 1 / math.sqrt(2 * num_layers) if role == "residual_out" else 1.0
    nn.init.normal_(weight, mean=0.0, std=std * scale)


def initialize(module: nn.Module, scheme: Scheme) -> nn.Module:
    """Re-draw every Linear and Embedding weight of `module` with `scheme`; reset biases and norms."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            scheme(sub.weight.data, getattr(sub, "init_role", "other"))
        if isinstance(sub, nn.Linear) and sub.bias is not None:
            nn.init.zeros_(sub.bias)
        if isinstance(sub, nn.Embedding) and sub.padding_idx is not None:
            sub.weight.data[sub.padding_idx].zero_()
        if isinstance(sub, (nn.LayerNorm, nn.RMSNorm)) and sub.weight is not None:
            nn.init.ones_(sub.weight)
            if getattr(sub, "bias", None) is not None:
                nn.init.zeros_(sub.bias)
    return module
