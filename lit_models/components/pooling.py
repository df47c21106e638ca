"""`task.pooling`: one vector per text from the encoder's hidden states (kexue.fm/archives/8069, 8321)."""
from __future__ import annotations

import torch

POOLINGS = ("cls", "mean", "first_last_avg")


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def pool(hidden_states: list[torch.Tensor], attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """cls: the first token of the last layer; mean: masked mean of the last layer;
    first_last_avg: masked mean of the average of the first block's and the last block's outputs."""
    if pooling == "cls":
        return hidden_states[-1][:, 0]
    if pooling == "mean":
        return masked_mean(hidden_states[-1], attention_mask)
    if pooling == "first_last_avg":
        return masked_mean((hidden_states[1] + hidden_states[-1]) / 2, attention_mask)
    raise ValueError(f"task.pooling must be one of {POOLINGS}, got {pooling!r}")
