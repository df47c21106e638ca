"""A from-scratch BERT-style Transformer encoder, small enough to read in one sitting.

Token + learned position embeddings → LayerNorm → N blocks of (self-attention, feed-forward), each
sublayer wrapped Post-Norm `LN(x + F(x))` as in BERT, or Pre-Norm `x + F(LN(x))`. Attention goes through
`F.scaled_dot_product_attention`. Weights are drawn by the `init` group (lit_models/init.py), not here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    vocab_size: int
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ffn_size: int = 512
    max_position: int = 512
    dropout: float = 0.1
    norm: str = "post"            # post | pre
    pad_token_id: int = 0
    type_vocab_size: int = 2       # segment ids (sentence A/B, or the speaker of a dialogue turn)
    layer_norm_eps: float = 1e-12

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.norm not in ("post", "pre"):
            raise ValueError(f"norm must be 'post' or 'pre', got {self.norm!r}")


class SelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.num_heads, self.dropout = cfg.num_heads, cfg.dropout
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x [B, L, d]; keep [B, 1, L or 1, L] True where query i may attend to key j."""
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, L, d))


class FeedForward(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.ffn_size)
        self.down = nn.Linear(cfg.ffn_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.pre_norm = cfg.norm == "pre"
        self.attention, self.ffn = SelfAttention(cfg), FeedForward(cfg)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attention(self.norm1(x), keep))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attention(x, keep)))
        return self.norm2(x + self.drop(self.ffn(x)))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embedding = nn.Embedding(cfg.max_position, cfg.hidden_size)
        self.type_embedding = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.embedding_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.norm == "pre" else nn.Identity()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                causal: bool = False) -> list[torch.Tensor]:
        """Hidden states of the embedding layer and of every block, each [B, L, d] (the last one normed).

        causal: position i attends only to positions ≤ i (a decoder / language model)."""
        L = input_ids.shape[1]
        positions = torch.arange(L, device=input_ids.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.token_embedding(input_ids) + self.position_embedding(positions) + self.type_embedding(token_type_ids)
        x = self.drop(self.embedding_norm(x))
        keep = attention_mask.bool()[:, None, None, :]
        if causal:
            keep = keep & torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        hidden = [x]
        for block in self.blocks:
            hidden.append(block(hidden[-1], keep))
        hidden[-1] = self.final_norm(hidden[-1])
        return hidden
