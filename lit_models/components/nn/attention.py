"""Every `attention=` choice of the from-scratch Transformer. Each mixes tokens: (x [B, L, d], key_mask [B, L],
causal) -> [B, L, d]. The multi-head variants share their projections and differ in `mix`; GAU replaces a
whole attention + feed-forward pair (two GAU layers per block).

Linear layers carry an `init_role` that the init schemes read (lit_models/components/init.py): "value" for v and
the expanding projections, "residual_out" for projections that write into the residual stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lit_models.components.nn.positions import RotaryEmbedding

ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "swish": F.silu}


@dataclass
class AttentionConfig:
    kind: str = "softmax"          # softmax | softmax_logn | local | linear | gau
    window: int = 128              # local: query i sees keys j with |i − j| < window (causal: 0 ≤ i − j < window)
    train_length: int = 512        # softmax_logn and GAU's softmax_plus: logits × log n / log train_length
    key_size: int = 128            # gau: s, the size of the shared Z
    expansion: int = 2             # gau: e = expansion × d
    normalization: str = "relu2"   # gau: relu2 | softmax_plus

    def __post_init__(self):
        if self.kind not in ATTENTIONS:
            raise ValueError(f"attention kind must be one of {sorted(ATTENTIONS)}, got {self.kind!r}")
        if self.normalization not in ("relu2", "softmax_plus"):
            raise ValueError(f"GAU normalization must be relu2 or softmax_plus, got {self.normalization!r}")


def visible(key_mask: torch.Tensor, causal: bool, window: int | None = None) -> torch.Tensor:
    """[B, 1, L, L] True where query i may attend to key j. A query always sees itself, so that no row is
    empty (padding queries would otherwise produce NaN that leaks through the values)."""
    L = key_mask.shape[1]
    i = torch.arange(L, device=key_mask.device)[:, None]
    j = torch.arange(L, device=key_mask.device)[None, :]
    allowed = torch.ones(L, L, dtype=torch.bool, device=key_mask.device)
    if causal:
        allowed &= j <= i
    if window is not None:
        allowed &= (i - j).abs() < window
    return (key_mask.bool()[:, None, None, :] & allowed) | (i == j)


class MultiHeadAttention(nn.Module):
    """Softmax attention (Vaswani et al.): softmax(q kᵀ/√d_h) v per head, through F.scaled_dot_product_attention."""

    def __init__(self, hidden_size: int, num_heads: int, attention: AttentionConfig, rope: bool, dropout: float,
                 qk_bias: bool = True, bias: bool = True):
        super().__init__()
        self.num_heads, self.dropout, self.cfg = num_heads, dropout, attention
        self.query = nn.Linear(hidden_size, hidden_size, bias=qk_bias)
        self.key = nn.Linear(hidden_size, hidden_size, bias=qk_bias)
        self.value = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.out = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.query.init_role = self.key.init_role = "query_key"
        self.value.init_role, self.out.init_role = "value", "residual_out"
        self.rope = RotaryEmbedding(hidden_size // num_heads) if rope else None

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        return x.view(B, L, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, causal: bool = False) -> torch.Tensor:
        q, k, v = self.heads(self.query(x)), self.heads(self.key(x)), self.heads(self.value(x))
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        y = self.mix(q, k, v, key_mask, causal)
        return self.out(y.transpose(1, 2).flatten(2))

    def mix(self, q, k, v, key_mask, causal):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible(key_mask, causal),
                                              dropout_p=self.dropout if self.training else 0.0)


class LogNAttention(MultiHeadAttention):
    """Softmax attention with entropy-invariant scaling (kexue.fm/archives/9052, 9593):

        softmax(q kᵀ/√d_h · log n / log T) v,   n = number of keys the query sees, T = train_length

    so the attention's entropy stays put when a model trained at length T reads longer inputs."""

    def mix(self, q, k, v, key_mask, causal):
        keep = visible(key_mask, causal)
        n = keep.sum(-1, keepdim=True).clamp(min=1).to(q.dtype)                  # [B, 1, L, 1]
        q = q * (torch.log(n) / math.log(self.cfg.train_length))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0)


class LocalAttention(MultiHeadAttention):
    """Sliding-window softmax attention (kexue.fm/archives/9431): query i sees only keys with |i − j| < window
    (causal: 0 ≤ i − j < window). With RoPE it extrapolates to lengths beyond training."""

    def mix(self, q, k, v, key_mask, causal):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible(key_mask, causal, self.cfg.window),
                                              dropout_p=self.dropout if self.training else 0.0)


class LinearAttention(MultiHeadAttention):
    """Kernelized linear attention (Katharopoulos et al. 2020; discussed in kexue.fm/archives/8610):

        y_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / φ(q_i)ᵀ Σ_j φ(k_j),   φ(x) = elu(x) + 1

    O(n·d_h²) instead of O(n²·d_h); causal by prefix sums over j ≤ i. The post's point: at n ≤ 512 the
    feed-forward layers dominate the cost anyway. The causal form holds an [L, d_h, d_h] state per head."""

    def mix(self, q, k, v, key_mask, causal):
        q, k = F.elu(q) + 1, (F.elu(k) + 1) * key_mask[:, None, :, None].to(k.dtype)
        if causal:
            state = torch.cumsum(k.unsqueeze(-1) * v.unsqueeze(-2), dim=2)          # [B, H, L, d, d]
            numerator = (q.unsqueeze(-2) @ state).squeeze(-2)
            denominator = (q * torch.cumsum(k, dim=2)).sum(-1, keepdim=True)
        else:
            numerator = q @ (k.transpose(-1, -2) @ v)
            denominator = q @ k.sum(2, keepdim=True).transpose(-1, -2)
        return numerator / denominator.clamp(min=1e-6)


class GatedAttentionUnit(nn.Module):
    """GAU, the layer of FLASH (Hua et al. 2022; kexue.fm/archives/8934, 8990, 9052):

        U = φ(X W_u), V = φ(X W_v) ∈ R^{n×e},  Z = φ(X W_z) ∈ R^{n×s},  Q = γ_q ⊙ Z + β_q,  K = γ_k ⊙ Z + β_k
        relu2:        A = relu²(Q Kᵀ / √s) / n                 (= relu²(QKᵀ)/(n s), Su's 1/(ns) scaling)
        softmax_plus: A = softmax(Q Kᵀ / √s · log n / log 512)  (GAU-α)
        O = (U ⊙ A V) W_o

    single head, RoPE on Q and K, n = number of keys the query sees. Two GAU layers replace one
    attention + feed-forward pair."""

    def __init__(self, hidden_size: int, attention: AttentionConfig, rope: bool, dropout: float,
                 activation: str = "swish", bias: bool = True):
        super().__init__()
        self.cfg, self.dropout = attention, dropout
        self.e, self.s = attention.expansion * hidden_size, attention.key_size
        self.uvz = nn.Linear(hidden_size, 2 * self.e + self.s, bias=bias)
        self.uvz.init_role = "value"
        self.gamma = nn.Parameter(torch.randn(2, self.s) * 0.02)
        self.beta = nn.Parameter(torch.zeros(2, self.s))
        self.out = nn.Linear(self.e, hidden_size, bias=bias)
        self.out.init_role = "residual_out"
        self.act = ACTIVATIONS[activation]
        self.rope = RotaryEmbedding(self.s) if rope else None

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, causal: bool = False) -> torch.Tensor:
        u, v, z = torch.split(self.act(self.uvz(x)), [self.e, self.e, self.s], dim=-1)
        q, k = z * self.gamma[0] + self.beta[0], z * self.gamma[1] + self.beta[1]
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        keep = visible(key_mask, causal)[:, 0]                                        # [B, L, L]
        n = keep.sum(-1, keepdim=True).clamp(min=1).to(q.dtype)
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.s)
        if self.cfg.normalization == "relu2":
            weights = F.relu(logits).square().masked_fill(~keep, 0.0) / n
        else:
            logits = logits * (torch.log(n) / math.log(self.cfg.train_length))
            weights = logits.masked_fill(~keep, float("-inf")).softmax(-1)
        weights = F.dropout(weights, self.dropout, self.training)
        return self.out(u * (weights @ v))


ATTENTIONS = {"softmax": MultiHeadAttention, "softmax_logn": LogNAttention, "local": LocalAttention,
              "linear": LinearAttention, "gau": GatedAttentionUnit}
