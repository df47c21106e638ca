"""The global batch under DDP: a batch-level loss (`loss.global_batch`) sees the rows of every rank.

Each rank gathers the embeddings of all ranks with `gather_with_grad` and computes the same loss L on the
concatenation. Why the gradients then equal single-process training on the concatenated batch, with no
rescaling of the loss (J_i = ∂h_i/∂θ, W ranks, rank r holding rows R_r):

    the W ranks' losses are W copies of L, so the gather's backward, which sums the gradient of every rank's
    copy, hands rank r  W·∂L/∂h_i  for its own rows i ∈ R_r, and rank r's parameters get  W·Σ_{i∈R_r} J_iᵀ ∂L/∂h_i;
    DDP averages over ranks: (1/W)·Σ_r W·Σ_{i∈R_r} J_iᵀ ∂L/∂h_i = Σ_i J_iᵀ ∂L/∂h_i = ∇_θ L.

A gather whose backward kept only each rank's own copy would hand rank r ∂L/∂h_i, and the loss would have to
be multiplied by W to undo DDP's averaging; that would also multiply by W the gradient of any parameter used
after the gather, which this form gets right as it is.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """The number of processes of the default group; 1 without torch.distributed."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def loss_batch(loss, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What `loss` sees: under DDP, a batch-level loss (`loss.global_batch`) gets the rows of every rank, gathered
    with gradients; a per-row loss gets this rank's rows."""
    if getattr(loss, "global_batch", False) and world_size() > 1:
        return tuple(gather_with_grad(t) for t in tensors)
    return tensors


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `tensor` along dim 0, in rank order; the gradient flows back to each rank's rows.

    Ranks may hold different numbers of rows. Without torch.distributed (or with one process) it is `tensor`.
    """
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


class _GatherWithGrad(torch.autograd.Function):
    """Forward: all-gather (rows padded to the longest rank's, then trimmed). Backward: the sum over ranks of
    the gradient w.r.t. the concatenation (all-reduce), sliced to this rank's rows (see the module docstring)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ranks = dist.get_world_size()
        sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(ranks)]
        dist.all_gather(sizes, torch.tensor([len(tensor)], dtype=torch.long, device=tensor.device))
        sizes = [int(size) for size in sizes]
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[:len(tensor)] = tensor
        parts = [torch.empty_like(padded) for _ in range(ranks)]
        dist.all_gather(parts, padded)
        ctx.start = sum(sizes[:dist.get_rank()])
        ctx.rows = len(tensor)
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start:ctx.start + ctx.rows]
