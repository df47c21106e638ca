"""BERT-whitening (kexue.fm/archives/8069, 8321): a linear map that makes sentence vectors isotropic.

With μ and Σ the mean and covariance of a set of sentence vectors and U Λ Uᵀ = SVD(Σ), the kernel is
W = U·diag(1/√Λ) and a vector becomes x̃ = (x − μ)·W: mean 0, identity covariance, its dimensions ordered by
variance, so W[:, :k] keeps the k principal ones (PCA). Cosines are then taken between the x̃.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


class StreamingMoments:
    """μ and Σ (the population covariance, 1/n) of vectors seen batch by batch, in float64, holding no vector.

    The post's streaming update, for a batch X of m rows after n vectors:
        μ' = n/(n+m)·μ + Σ_i x_i/(n+m)
        Σ' = n/(n+m)·(Σ + μᵀμ) + XᵀX/(n+m) − μ'ᵀμ'
    (8069 writes it one vector at a time, m = 1.)
    """

    def __init__(self):
        self.count, self.mean, self.cov = 0, None, None

    def update(self, vectors: torch.Tensor) -> None:
        x = vectors.detach().to(torch.float64).reshape(-1, vectors.shape[-1])
        if self.mean is None:
            self.mean = x.new_zeros(x.shape[1])
            self.cov = x.new_zeros(x.shape[1], x.shape[1])
        n, m = self.count, x.shape[0]
        total = n + m
        mean = self.mean * (n / total) + x.sum(0) / total
        self.cov = (self.cov + torch.outer(self.mean, self.mean)) * (n / total) + x.T @ x / total \
            - torch.outer(mean, mean)
        self.mean, self.count = mean, total


def whitening_kernel(cov: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """W = U·diag(1/√Λ) from the SVD of Σ, its first `dim` columns (all when None). A zero eigenvalue (fewer
    vectors than dimensions) would divide by zero: eigenvalues are floored at 1e-12 of the largest."""
    u, s, _ = torch.linalg.svd(cov.to(torch.float64))
    kernel = u / s.clamp(min=s.max() * 1e-12).sqrt()
    return kernel[:, :dim] if dim else kernel


class Whitening(nn.Module):
    """x ↦ (x − μ)·W, in float32. The buffers are not part of a checkpoint's weights: they are fitted on the
    encoder's own vectors at evaluation time, and written beside results.json (`save`)."""

    def __init__(self, mean: torch.Tensor, kernel: torch.Tensor, fitted_on: dict):
        super().__init__()
        self.register_buffer("mean", mean.to(torch.float32), persistent=False)
        self.register_buffer("kernel", kernel.to(torch.float32), persistent=False)
        self.fitted_on = fitted_on

    @classmethod
    def fit(cls, moments: StreamingMoments, dim: int | None, fitted_on: dict) -> "Whitening":
        width = moments.mean.shape[0]
        if dim is not None and not 0 < dim <= width:
            raise ValueError(f"task.whitening={dim}: keep between 1 and {width} dimensions (the vectors' width)")
        if moments.count <= width:
            log.warning("whitening fitted on %d vectors of width %d: Σ is singular, its smallest directions are noise",
                        moments.count, width)
        return cls(moments.mean, whitening_kernel(moments.cov, dim),
                   fitted_on | {"vectors": moments.count, "dim": dim or width})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) @ self.kernel

    def save(self, path: Path) -> dict:
        """`mean` (d) and `kernel` (d × k) as safetensors: what an exported encoder appends as a Dense layer."""
        from safetensors.torch import save_file

        save_file({"mean": self.mean.cpu().contiguous(), "kernel": self.kernel.cpu().contiguous()}, str(path))
        return self.fitted_on | {"file": str(path)}
