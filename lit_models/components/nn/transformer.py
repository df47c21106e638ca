"""A from-scratch Transformer encoder (a decoder when run with causal=True), small enough to read in one sitting.

Token (+ position) (+ segment) embeddings → LayerNorm → N blocks. A block is attention + feed-forward, or two
attention layers when the attention class replaces the feed-forward too (GAU). `attention` is the callable from
conf/attention (nn/attention.py) that builds one such layer. Each sublayer F is wrapped by the norm placement:

    post:     x ← LN(x + F(x))            (BERT)
    pre:      x ← x + F(LN(x))            (GPT-2; a final LN after the last block)
    deepnorm: x ← LN(α·x + F(x))          (DeepNet, kexue.fm/archives/8978; init=deepnorm gives F's gain β)

Weights are drawn by the `init` group (lit_models/components/init.py), not here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lit_models.components.nn.attention import (
    ACTIVATIONS,
    MultiHeadAttention,
    TokenMixer,
    attention_class,
    attention_factory,
    attention_spec,
)
from lit_models.components.nn.positions import POSITIONS, sinusoidal_table

NORMS = ("post", "pre", "deepnorm")

# DeepNorm (α, β) for N blocks (2N sublayers): kexue.fm/archives/8978 derives them per optimizer;
# "deepnet" is the DeepNet paper's choice for encoder-only and decoder-only models.
DEEPNORM_RULES = {
    "deepnet": lambda n: ((2 * n) ** 0.25, (8 * n) ** -0.25),
    "adam": lambda n: ((2 * n) ** 0.5, (2 * n) ** -0.5),
    "sgd": lambda n: ((2 * n) ** 0.25, (2 * n) ** -0.25),
}


def deepnorm_constants(num_layers: int, rule: str = "deepnet") -> tuple[float, float]:
    """(α, β): residual scale α in LN(α·x + F(x)) and init gain β of F's value/output projections."""
    if rule not in DEEPNORM_RULES:
        raise ValueError(f"deepnorm rule must be one of {sorted(DEEPNORM_RULES)}, got {rule!r}")
    return DEEPNORM_RULES[rule](num_layers)


@dataclass
class TransformerConfig:
    vocab_size: int
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ffn_size: int = 512
    max_position: int = 512        # learned/sinusoidal tables; RoPE and "none" have no length limit
    dropout: float = 0.1
    norm: str = "post"             # post | pre | deepnorm
    deepnorm_rule: str = "deepnet"
    position: str = "learned"      # rope | learned | sinusoidal | none
    activation: str = "gelu"       # gelu | gelu_tanh | swish
    qk_bias_only: bool = False     # biases on the query/key projections only (kexue.fm/archives/9577)
    recompute: bool = False        # recompute each block in backward: less memory, ~25% more time (7367)
    attention: Callable[..., TokenMixer] | dict = MultiHeadAttention   # kept as its spec dict, see __post_init__
    pad_token_id: int = 0
    type_vocab_size: int = 2       # segment ids (sentence A/B, or the speaker of a dialogue turn)
    layer_norm_eps: float = 1e-12

    def __post_init__(self):
        # the callable builds the layers; the field keeps {"_target_": ..., **options}, so asdict(cfg) is plain
        # data (backbone.pt) and TransformerConfig(**asdict(cfg)) re-creates the same attention
        self.make_attention = attention_factory(self.attention)
        self.attention = attention_spec(self.make_attention)
        attention = attention_class(self.make_attention)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        for key, value, allowed in (("norm", self.norm, NORMS), ("position", self.position, POSITIONS),
                                    ("activation", self.activation, tuple(ACTIVATIONS))):
            if value not in allowed:
                raise ValueError(f"backbone.{key} must be one of {'|'.join(allowed)}, got {value!r}")
        if self.norm == "deepnorm" and not attention.supports_deepnorm:
            raise ValueError(f"backbone.norm=deepnorm does not work with attention {attention.__name__} (DeepNorm's "
                             f"gains are derived for attention + feed-forward sublayers); use norm=post or norm=pre")
        deepnorm_constants(self.num_layers, self.deepnorm_rule)


class FeedForward(nn.Module):
    """Position-wise act(x W_1) W_2; the mask and causality do not concern it."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        bias = not cfg.qk_bias_only
        self.up = nn.Linear(cfg.hidden_size, cfg.ffn_size, bias=bias)
        self.down = nn.Linear(cfg.ffn_size, cfg.hidden_size, bias=bias)
        self.up.init_role, self.down.init_role = "value", "residual_out"
        self.act = ACTIVATIONS[cfg.activation]

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor = None, causal: bool = False) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


def token_mixer(cfg: TransformerConfig) -> TokenMixer:
    """One attention layer at the model's sizes; the partial from conf/attention holds the layer's own options."""
    return cfg.make_attention(hidden_size=cfg.hidden_size, num_heads=cfg.num_heads, rope=cfg.position == "rope",
                              dropout=cfg.dropout, bias=not cfg.qk_bias_only, activation=cfg.activation)


class Block(nn.Module):
    """Two residual sublayers: attention then feed-forward, or attention twice when it `replaces_ffn` (GAU)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        mixer = token_mixer(cfg)
        self.sublayers = nn.ModuleList([mixer, token_mixer(cfg) if mixer.replaces_ffn else FeedForward(cfg)])
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) for _ in range(2))
        self.drop = nn.Dropout(cfg.dropout)
        self.placement = cfg.norm
        self.alpha = deepnorm_constants(cfg.num_layers, cfg.deepnorm_rule)[0] if cfg.norm == "deepnorm" else 1.0

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, causal: bool) -> torch.Tensor:
        for sublayer, norm in zip(self.sublayers, self.norms):
            if self.placement == "pre":
                x = x + self.drop(sublayer(norm(x), key_mask, causal))
            else:
                x = norm(self.alpha * x + self.drop(sublayer(x, key_mask, causal)))
        return x


def restarting(segment_ids: torch.Tensor) -> torch.Tensor:
    """[B, L] position of each token within its text (segment_ids as TransformerEncoder.forward takes them):
    0 at each text's first token; the padding after a text continues its count."""
    index = torch.arange(segment_ids.shape[1], device=segment_ids.device).expand_as(segment_ids)
    previous = F.pad(segment_ids[:, :-1], (1, 0), value=-1)
    starts = torch.where((segment_ids != previous) & (segment_ids != 0), index, torch.zeros_like(index))
    return index - starts.cummax(dim=1).values


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embedding = nn.Embedding(cfg.max_position, cfg.hidden_size) if cfg.position == "learned" else None
        if cfg.position == "sinusoidal":
            self.register_buffer("sinusoids", sinusoidal_table(cfg.max_position, cfg.hidden_size), persistent=False)
        self.type_embedding = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.embedding_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.norm == "pre" else nn.Identity()

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
              segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        L = input_ids.shape[1]
        if L > self.cfg.max_position and self.cfg.position in ("learned", "sinusoidal"):
            raise ValueError(f"input of length {L} exceeds backbone.max_position={self.cfg.max_position} "
                             f"of position={self.cfg.position}; RoPE or none have no limit")
        x = self.token_embedding(input_ids)
        positions = torch.arange(L, device=input_ids.device) if segment_ids is None else restarting(segment_ids)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)
        elif self.cfg.position == "sinusoidal":
            x = x + self.sinusoids[positions].to(x.dtype)
        if token_type_ids is not None:
            x = x + self.type_embedding(token_type_ids)
        else:
            x = x + self.type_embedding.weight[0]
        return self.drop(self.embedding_norm(x))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                causal: bool = False, segment_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Hidden states of the embedding layer and of every block, each [B, L, d] (the last one final-normed).

        causal: position i attends only to positions ≤ i (a decoder / language model).
        segment_ids: [B, L] for rows that pack several texts, 1, 2, … per text and 0 at the padding: a token
            attends only to tokens of its own text (attention.visible) and positions restart at 0 with each
            text, so each text is encoded as if it were alone in its row."""
        key_mask = attention_mask.long() if segment_ids is None else segment_ids
        hidden = [self.embed(input_ids, token_type_ids, segment_ids)]
        for block in self.blocks:
            if self.cfg.recompute and self.training:
                hidden.append(checkpoint(block, hidden[-1], key_mask, causal, use_reentrant=False))
            else:
                hidden.append(block(hidden[-1], key_mask, causal))
        hidden[-1] = self.final_norm(hidden[-1])
        return hidden
