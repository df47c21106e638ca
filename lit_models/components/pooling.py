"""`task.pooling`: one vector per text from the encoder's hidden states (kexue.fm/archives/8069, 8321)."""
from __future__ import annotations

from typing import Callable

import torch

POOLINGS = ("cls", "pooler", "mean", "first_last_avg")   # P1-P4 of kexue.fm/archives/8321


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def pool(hidden_states: list[torch.Tensor], attention_mask: torch.Tensor, pooling: str,
         pooler: Callable | None = None) -> torch.Tensor:
    """cls: the first token of the last layer; pooler: BERT's pooler on it, tanh(W·h_cls + b) (`pooler`, the
    backbone's); mean: masked mean of the last layer; first_last_avg: masked mean of the average of the first
    block's and the last block's outputs."""
    if pooling == "cls":
        return hidden_states[-1][:, 0]
    if pooling == "pooler":
        return pooler(hidden_states[-1])
    if pooling == "mean":
        return masked_mean(hidden_states[-1], attention_mask)
    if pooling == "first_last_avg":
        return masked_mean((hidden_states[1] + hidden_states[-1]) / 2, attention_mask)
    raise ValueError(f"task.pooling must be one of {POOLINGS}, got {pooling!r}")


def encode(backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str,
           token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """One vector per row: the backbone's hidden states, pooled (`pool`, with the backbone's pooler)."""
    hidden = (backbone(input_ids, attention_mask) if token_type_ids is None
              else backbone(input_ids, attention_mask, token_type_ids))
    return pool(hidden, attention_mask, pooling, getattr(backbone, "pooler", None))


def check_pooling(pooling: str, backbone) -> None:
    """Fail at build time on a pooling the task does not know, or `pooler` on a backbone without one."""
    if pooling not in POOLINGS:
        raise ValueError(f"task.pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling == "pooler" and getattr(backbone, "pooler", None) is None:
        raise ValueError(f"task.pooling=pooler reads BERT's pooler, which {type(backbone).__name__} does not have "
                         f"(backbone=scratch_* has none): use cls, mean or first_last_avg")
