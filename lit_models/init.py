"""Every `init=` choice: how a weight matrix is drawn. `initialize` walks a module and applies the scheme.

A scheme is a function `scheme(weight)` that fills a 2-D weight (Linear [out, in], Embedding [n, d])
in place. Biases start at 0, LayerNorm at (γ = 1, β = 0), and an Embedding's padding row at 0.
The scheme applies to every weight of a from-scratch backbone and to the heads a task creates;
a pretrained backbone keeps its weights.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

Scheme = Callable[[torch.Tensor], None]


def bert(weight: torch.Tensor, std: float = 0.02) -> None:
    """BERT's truncated normal: N(0, std²) cut at ±2·std, std = 0.02 (effective std ≈ 0.0176).

    kexue.fm/archives/8747 explains why so small: it keeps a Post-Norm stack close to identity at the start.
    """
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def xavier(weight: torch.Tensor) -> None:
    """Xavier/Glorot normal: variance 2 / (m + n) for an m×n matrix (kexue.fm/archives/8725)."""
    fan_out, fan_in = weight.shape
    nn.init.normal_(weight, mean=0.0, std=math.sqrt(2.0 / (fan_in + fan_out)))


def initialize(module: nn.Module, scheme: Scheme) -> nn.Module:
    """Re-draw every Linear and Embedding weight of `module` with `scheme`; reset biases and norms."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            scheme(sub.weight.data)
        if isinstance(sub, nn.Linear) and sub.bias is not None:
            nn.init.zeros_(sub.bias)
        if isinstance(sub, nn.Embedding) and sub.padding_idx is not None:
            sub.weight.data[sub.padding_idx].zero_()
        if isinstance(sub, nn.LayerNorm) and sub.elementwise_affine:
            nn.init.ones_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
    return module
