"""Heads a task draws on top of an encoder: BERT's masked-LM head and the GlobalPointer span scorers
(`task.head=global_pointer|efficient_global_pointer`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lit_models.components.nn.attention import ACTIVATIONS
from lit_models.components.nn.positions import RotaryEmbedding


class MLMHead(nn.Module):
    """BERT's masked-LM head (kexue.fm/archives/8747), tied to the token embedding E [V, d]:

        logits = LN(act(h·Wᵀ + b_W)) · Eᵀ + b,    W [d, d], b [V]

    E is passed to `forward` rather than held, so the head owns only W, b_W, the LayerNorm and the output
    bias b: the `init` group draws the head without touching the encoder's embedding.
    """

    def __init__(self, hidden_size: int, vocab_size: int, activation: str = "gelu", layer_norm_eps: float = 1e-12):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"task.activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = ACTIVATIONS[activation]
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """hidden [..., d], embedding [V, d] → logits [..., V]."""
        return F.linear(self.norm(self.activation(self.dense(hidden))), embedding, self.bias)


# "−∞" that stays finite: e^NEG = 0 in float32, and −NEG (a masked gold span in the loss) does not overflow.
NEG = -1e12


def mask_spans(scores: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
    """scores [B, T, L, L] set to NEG where i > j (lower triangle) or where token i or j is not in span_mask."""
    length = scores.shape[-1]
    upper = torch.ones(length, length, dtype=torch.bool, device=scores.device).triu()
    valid = span_mask[:, None, :, None] & span_mask[:, None, None, :] & upper
    return scores.masked_fill(~valid, NEG)


class GlobalPointer(nn.Module):
    """GlobalPointer (kexue.fm/archives/8373): per type α, q_{i,α} = W_{q,α} h_i + b, k_{i,α} = W_{k,α} h_i + b,

        s_α(i, j) = (R_i q_{i,α})ᵀ (R_j k_{j,α}) / √d,      d = head_size,

    R_i the RoPE rotation of position i, which puts the relative position j − i into the score (the post: F1
    drops by 30+ points without it); the 1/√d is bert4keras's. One Dense gives [q_α; k_α] of every type.
    """

    def __init__(self, hidden_size: int, num_types: int, head_size: int = 64):
        super().__init__()
        self.num_types, self.head_size = num_types, head_size
        self.dense = nn.Linear(hidden_size, num_types * 2 * head_size)
        self.rope = RotaryEmbedding(head_size)

    def forward(self, hidden: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
        """hidden [B, L, H], span_mask [B, L] (bool) → float32 scores [B, T, L, L]."""
        batch, length, _ = hidden.shape
        qk = self.dense(hidden).float().view(batch, length, self.num_types, 2, self.head_size)
        q, k = (self.rope(x.transpose(1, 2)) for x in qk.unbind(3))           # [B, T, L, d] each
        return mask_spans(q @ k.transpose(-1, -2) / math.sqrt(self.head_size), span_mask.bool())


class EfficientGlobalPointer(nn.Module):
    """Efficient GlobalPointer (kexue.fm/archives/8877): q, k shared by all types, a per-type term w_α ∈ R^{4d}:

        s_α(i, j) = (R_i q_i)ᵀ (R_j k_j) / √d + w_αᵀ [q_i; k_i; q_j; k_j]

    As in bert4keras: one Dense h → 2d gives q (even dims) and k (odd dims); a second Dense of the un-rotated
    [q; k] gives 2 numbers per type, halved: the odd one, the start term, is added at row i, the even one,
    the end term, at column j. A new type costs 4d + 2 parameters instead of 2·(H + 1)·d.
    """

    def __init__(self, hidden_size: int, num_types: int, head_size: int = 64):
        super().__init__()
        self.num_types, self.head_size = num_types, head_size
        self.dense = nn.Linear(hidden_size, 2 * head_size)
        self.type_dense = nn.Linear(2 * head_size, 2 * num_types)
        self.rope = RotaryEmbedding(head_size)

    def forward(self, hidden: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
        """hidden [B, L, H], span_mask [B, L] (bool) → float32 scores [B, T, L, L]."""
        qk = self.dense(hidden)                                                 # [B, L, 2d]
        terms = self.type_dense(qk).float().transpose(1, 2) / 2                 # [B, 2T, L]
        qk = qk.float()
        q, k = self.rope(qk[..., 0::2]), self.rope(qk[..., 1::2])
        pairs = q @ k.transpose(-1, -2) / math.sqrt(self.head_size)            # [B, L, L]
        scores = pairs[:, None] + terms[:, 1::2, :, None] + terms[:, 0::2, None, :]
        return mask_spans(scores, span_mask.bool())


HEADS = {"global_pointer": GlobalPointer, "efficient_global_pointer": EfficientGlobalPointer}
