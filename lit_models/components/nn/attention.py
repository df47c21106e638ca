"""Every `attention=` choice of the from-scratch Transformer: a TokenMixer subclass, named by
conf/attention/<choice>.yaml as `_target_` + `_partial_: true` with its own options. The Transformer fills in
the model's sizes, the same keywords for every class:

    layer = attention(hidden_size=d, num_heads=H, rope=position == "rope", dropout=p,
                      bias=not qk_bias_only, activation=act)

and a layer mixes tokens: (x [B, L, d], key_mask [B, L], causal) -> [B, L, d]. Two class attributes tell the
block how to use it: `replaces_ffn` (two layers make a block, no feed-forward: GAU) and `supports_deepnorm`.

Every softmax-style choice (softmax, softmax_logn, local, gau) also takes `inference_window`: in evaluation
(not `training`), query i sees only keys with |i − j| < inference_window, so that a model trained with full
attention at length T can read longer inputs through windows of T (kexue.fm/archives/9431). It changes no
weight, so it can be set when a trained checkpoint is evaluated.

Linear layers carry an `init_role` that the init schemes read (lit_models/components/init.py): "query_key",
"value" for v and the expanding projections, "residual_out" for projections that write into the residual stream.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lit_models.components.nn.positions import RotaryEmbedding

ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "swish": F.silu}


class TokenMixer(nn.Module):
    """Base of every attention choice. A subclass takes (hidden_size, num_heads, *, rope, dropout, bias,
    activation), then its own options by keyword; forward(x, key_mask, causal) -> [B, L, d]."""

    replaces_ffn = False        # True: a block is two of these layers and no feed-forward (GAU)
    supports_deepnorm = True    # False: backbone.norm=deepnorm is refused (its gains assume attention + FFN)
    supports_packing = True     # False: data.packing=true is refused (its texts would see each other)
    supports_inference_window = True   # False: attention.inference_window is refused (no key mask to narrow)
    inference_window: int | None = None

    def set_inference_window(self, window: int | None) -> None:
        if window is None:
            return
        if not self.supports_inference_window:
            raise ValueError(f"attention.inference_window does not work with {type(self).__name__}: its sums run "
                             f"over every key; use attention=softmax, softmax_logn, local or gau")
        if int(window) != window or window < 1:
            raise ValueError(f"attention.inference_window must be a positive integer or null, got {window!r}")
        self.inference_window = int(window)

    def window_now(self, window: int | None = None) -> int | None:
        """The key window in force: the layer's own `window` (None: every key), narrowed in evaluation by
        `inference_window`."""
        if self.training or self.inference_window is None:
            return window
        return self.inference_window if window is None else min(window, self.inference_window)


def visible(key_mask: torch.Tensor, causal: bool, window: int | None = None) -> torch.Tensor:
    """[B, 1, L, L] True where query i may attend to key j. `key_mask` [B, L] is 0 at the padding and 1 at the
    tokens, or in rows that pack several texts each token's text number (1, 2, …): a query of text s then sees
    the keys of text s only (a block-diagonal mask), a padding query every key. A query always sees itself,
    so that no row is empty (padding queries would otherwise produce NaN that leaks through the values)."""
    L = key_mask.shape[1]
    i = torch.arange(L, device=key_mask.device)[:, None]
    j = torch.arange(L, device=key_mask.device)[None, :]
    allowed = torch.ones(L, L, dtype=torch.bool, device=key_mask.device)
    if causal:
        allowed &= j <= i
    if window is not None:
        allowed &= (i - j).abs() < window
    queries, keys = key_mask[:, None, :, None], key_mask[:, None, None, :]
    same_text = (keys != 0) & ((queries == keys) | (queries == 0))
    return (same_text & allowed) | (i == j)


class MultiHeadAttention(TokenMixer):
    """Softmax attention (Vaswani et al.): softmax(q kᵀ/√d_h) v per head, through F.scaled_dot_product_attention.
    q and k always have biases, `bias` is for v and the output; `activation` is unused (no φ here)."""

    def __init__(self, hidden_size: int, num_heads: int, *, rope: bool = False, dropout: float = 0.0,
                 bias: bool = True, activation: str = "gelu", inference_window: int | None = None):
        super().__init__()
        self.set_inference_window(inference_window)
        self.num_heads, self.dropout = num_heads, dropout
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
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
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible(key_mask, causal, self.window_now()),
                                              dropout_p=self.dropout if self.training else 0.0)


class LogNAttention(MultiHeadAttention):
    """Softmax attention with entropy-invariant scaling (kexue.fm/archives/9052, 9593):

        softmax(q kᵀ/√d_h · log n / log T) v,   n = number of keys the query sees, T = train_length

    so the attention's entropy stays put when a model trained at length T reads longer inputs."""

    def __init__(self, hidden_size: int, num_heads: int, *, train_length: int = 512, **model):
        super().__init__(hidden_size, num_heads, **model)
        self.train_length = train_length

    def mix(self, q, k, v, key_mask, causal):
        keep = visible(key_mask, causal, self.window_now())
        n = keep.sum(-1, keepdim=True).clamp(min=1).to(q.dtype)                  # [B, 1, L, 1]
        q = q * (torch.log(n) / math.log(self.train_length))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0)


class LocalAttention(MultiHeadAttention):
    """Sliding-window softmax attention (kexue.fm/archives/9431): query i sees only keys with |i − j| < window
    (causal: 0 ≤ i − j < window). With RoPE it extrapolates to lengths beyond training."""

    def __init__(self, hidden_size: int, num_heads: int, *, window: int = 128, **model):
        super().__init__(hidden_size, num_heads, **model)
        self.window = window

    def mix(self, q, k, v, key_mask, causal):
        keep = visible(key_mask, causal, self.window_now(self.window))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0)


class LinearAttention(MultiHeadAttention):
    """Kernelized linear attention (Katharopoulos et al. 2020; discussed in kexue.fm/archives/8610):

        y_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / φ(q_i)ᵀ Σ_j φ(k_j),   φ(x) = elu(x) + 1

    O(n·d_h²) instead of O(n²·d_h); causal by prefix sums over j ≤ i. The post's point: at n ≤ 512 the
    feed-forward layers dominate the cost anyway. The causal form holds an [L, d_h, d_h] state per head.
    Its sums run over the whole row, so rows that pack several texts are refused (supports_packing)."""

    supports_packing = False
    supports_inference_window = False

    def mix(self, q, k, v, key_mask, causal):
        q, k = F.elu(q) + 1, (F.elu(k) + 1) * (key_mask != 0)[:, None, :, None].to(k.dtype)
        if causal:
            state = torch.cumsum(k.unsqueeze(-1) * v.unsqueeze(-2), dim=2)          # [B, H, L, d, d]
            numerator = (q.unsqueeze(-2) @ state).squeeze(-2)
            denominator = (q * torch.cumsum(k, dim=2)).sum(-1, keepdim=True)
        else:
            numerator = q @ (k.transpose(-1, -2) @ v)
            denominator = q @ k.sum(2, keepdim=True).transpose(-1, -2)
        return numerator / denominator.clamp(min=1e-6)


class GatedAttentionUnit(TokenMixer):
    """GAU, the layer of FLASH (Hua et al. 2022; kexue.fm/archives/8934, 8990, 9052):

        U = φ(X W_u), V = φ(X W_v) ∈ R^{n×e},  Z = φ(X W_z) ∈ R^{n×s},  Q = γ_q ⊙ Z + β_q,  K = γ_k ⊙ Z + β_k
        relu2:        A = relu²(Q Kᵀ / √s) / n                 (= relu²(QKᵀ)/(n s), Su's 1/(ns) scaling)
        softmax_plus: A = softmax(Q Kᵀ / √s · log n / log T)   (GAU-α, T = train_length)
        O = (U ⊙ A V) W_o

    single head (num_heads is unused), RoPE on Q and K, n = number of keys the query sees, φ = `activation`,
    e = expansion·d, s = key_size. Two GAU layers replace one attention + feed-forward pair, a pair DeepNorm's
    gains are not derived for."""

    replaces_ffn = True
    supports_deepnorm = False
    scale_offset = ("gamma", "beta")   # per-dimension, no weight decay (lit_models/base.py parameter_groups)

    def __init__(self, hidden_size: int, num_heads: int = 1, *, rope: bool = False, dropout: float = 0.0,
                 bias: bool = True, activation: str = "swish", key_size: int = 128, expansion: int = 2,
                 normalization: str = "relu2", train_length: int = 512, inference_window: int | None = None):
        super().__init__()
        self.set_inference_window(inference_window)
        if normalization not in ("relu2", "softmax_plus"):
            raise ValueError(f"GAU normalization must be relu2 or softmax_plus, got {normalization!r}")
        self.dropout, self.normalization, self.train_length = dropout, normalization, train_length
        self.e, self.s = expansion * hidden_size, key_size
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
        keep = visible(key_mask, causal, self.window_now())[:, 0]                     # [B, L, L]
        n = keep.sum(-1, keepdim=True).clamp(min=1).to(q.dtype)
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.s)
        if self.normalization == "relu2":
            weights = F.relu(logits).square().masked_fill(~keep, 0.0) / n
        else:
            logits = logits * (torch.log(n) / math.log(self.train_length))
            weights = logits.masked_fill(~keep, float("-inf")).softmax(-1)
        weights = F.dropout(weights, self.dropout, self.training)
        return self.out(u * (weights @ v))


# backbone.pt files written before attention was a `_target_` stored {"kind": ..., every option of every kind}.
LEGACY_KINDS = {"softmax": (MultiHeadAttention, ()), "softmax_logn": (LogNAttention, ("train_length",)),
                "local": (LocalAttention, ("window",)), "linear": (LinearAttention, ()),
                "gau": (GatedAttentionUnit, ("key_size", "expansion", "normalization", "train_length"))}


def attention_class(factory: Callable[..., TokenMixer]) -> type[TokenMixer]:
    """The class a factory (a class, or a partial of one) builds; its attributes describe every layer it makes."""
    return getattr(factory, "func", factory)


def attention_factory(attention: Callable[..., TokenMixer] | Mapping) -> Callable[..., TokenMixer]:
    """The callable that builds one layer: a TokenMixer class or partial as given, or one re-created from a spec
    {"_target_": "module.Class", **options} (or a legacy {"kind": ...}) as backbone.pt stores it."""
    if isinstance(attention, Mapping):
        spec = {k: v for k, v in attention.items() if k != "_partial_"}
        if "kind" in spec:
            cls, options = LEGACY_KINDS[spec["kind"]]
            return partial(cls, **{k: spec[k] for k in options if k in spec})
        module, _, name = spec.pop("_target_").rpartition(".")
        attention = partial(getattr(importlib.import_module(module), name), **spec)
    cls = attention_class(attention)
    if not (isinstance(cls, type) and issubclass(cls, TokenMixer)):
        raise TypeError(f"attention must be a TokenMixer subclass or a partial of one (conf/attention/*.yaml: "
                        f"_target_ + _partial_: true), got {attention!r}")
    return attention


def attention_spec(factory: Callable[..., TokenMixer]) -> dict:
    """{"_target_": "module.Class", **options}: plain data that attention_factory turns back into `factory`."""
    if getattr(factory, "args", ()):
        raise ValueError(f"an attention partial fills its options by keyword, got positional {factory.args}")
    cls = attention_class(factory)
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **getattr(factory, "keywords", {})}
