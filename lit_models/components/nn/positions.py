"""Position information: rotary (applied to queries and keys inside attention) or added to the embeddings."""
from __future__ import annotations

import math

import torch
from torch import nn

POSITIONS = ("rope", "learned", "sinusoidal", "none")


def sinusoidal_table(length: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """[length, dim]: sin(p·ω_i) in even columns, cos(p·ω_i) in odd ones, ω_i = base^(−2i/dim) (Vaswani et al.)."""
    positions = torch.arange(length, dtype=torch.float32)[:, None]
    frequencies = torch.exp(-math.log(base) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(positions * frequencies)
    table[:, 1::2] = torch.cos(positions * frequencies)[:, : dim // 2]
    return table


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al., RoFormer; kexue.fm/archives/8265): rotate each pair (x_2i, x_2i+1) of a query/key at
    position m by the angle m·θ_i, θ_i = 10000^(−2i/d), so that ⟨R_m q, R_n k⟩ depends on m − n only.
    Works at any length: nothing is learned per position, which is what length extrapolation needs."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"RoPE needs an even head size, got {dim}")
        self.dim, self.base = dim, base   # no buffer: a module cast to bf16 would round the frequencies

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x [..., L, dim] → x rotated by its position (offset + 0 … offset + L − 1). The angles m·θ_i are
        formed in float64: in float32 they are off by up to 1.7e-4 rad at m = 8191, which is what a model read
        beyond its training length would meet."""
        positions = torch.arange(offset, offset + x.shape[-2], device=x.device, dtype=torch.float64)
        frequencies = self.base ** (-torch.arange(0, self.dim, 2, device=x.device, dtype=torch.float64) / self.dim)
        angles = positions[:, None] * frequencies
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
