"""The from-scratch Transformer against naive references written out here."""
import copy
import math
from dataclasses import asdict
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_models.components.init import (
    deepnorm,
    geometric,
    initialize,
    lecun,
    scaled_residual,
)
from lit_models.components.nn.attention import (
    GatedAttentionUnit,
    LinearAttention,
    LocalAttention,
    LogNAttention,
    MultiHeadAttention,
    TokenMixer,
    attention_factory,
    visible,
)
from lit_models.components.nn.positions import RotaryEmbedding
from lit_models.components.nn.transformer import (
    Block,
    TransformerConfig,
    TransformerEncoder,
    deepnorm_constants,
)

# conf/attention/<choice>.yaml instantiated, with options small enough to matter at these lengths
ATTENTIONS = {"softmax": partial(MultiHeadAttention), "softmax_logn": partial(LogNAttention, train_length=4),
              "local": partial(LocalAttention, window=3), "linear": partial(LinearAttention),
              "gau": partial(GatedAttentionUnit, key_size=8)}
KINDS = list(ATTENTIONS)
torch.manual_seed(0)


def naive_visible(key_mask, causal, window=None):
    B, L = key_mask.shape
    keep = torch.zeros(B, L, L, dtype=torch.bool)
    for b in range(B):
        for i in range(L):
            for j in range(L):
                ok = bool(key_mask[b, j]) and (not causal or j <= i) and (window is None or abs(i - j) < window)
                keep[b, i, j] = ok or i == j
    return keep


def naive_multihead(module, x, key_mask, causal, kind):
    """Per head, per query: explicit scores over the visible keys, then the mixing rule of `kind`."""
    B, L, d = x.shape
    H = module.num_heads
    q, k, v = (module.heads(p(x)) for p in (module.query, module.key, module.value))
    keep = naive_visible(key_mask, causal, module.window if kind == "local" else None)
    out = torch.zeros(B, H, L, d // H, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            for i in range(L):
                js = keep[b, i].nonzero().flatten()
                if kind == "linear":
                    phi_q, phi_k = F.elu(q[b, h, i]) + 1, F.elu(k[b, h, js]) + 1
                    weights = phi_k @ phi_q
                    out[b, h, i] = weights @ v[b, h, js] / weights.sum()
                    continue
                scores = k[b, h, js] @ q[b, h, i] / math.sqrt(d // H)
                if kind == "softmax_logn":
                    scores = scores * math.log(len(js)) / math.log(module.train_length)
                out[b, h, i] = scores.softmax(0) @ v[b, h, js]
    return module.out(out.transpose(1, 2).reshape(B, L, d))


def naive_gau(module, x, key_mask, causal):
    u, v, z = torch.split(F.silu(module.uvz(x)), [module.e, module.e, module.s], dim=-1)
    q, k = z * module.gamma[0] + module.beta[0], z * module.gamma[1] + module.beta[1]
    keep = naive_visible(key_mask, causal)
    out = torch.zeros_like(u)
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            js = keep[b, i].nonzero().flatten()
            qk = k[b, js] @ q[b, i]
            if module.normalization == "relu2":
                weights = F.relu(qk).square() / (len(js) * module.s)
            else:
                weights = (qk / math.sqrt(module.s) * math.log(len(js)) / math.log(512)).softmax(0)
            out[b, i] = weights @ v[b, js]
    return module.out(u * out)


@pytest.fixture
def inputs():
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    key_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    return x, key_mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["softmax", "softmax_logn", "local", "linear"])
def test_multihead_variants_match_the_naive_formula(kind, causal, inputs):
    x, key_mask = inputs
    module = ATTENTIONS[kind](hidden_size=16, num_heads=4, rope=False, dropout=0.0).double()
    got, expected = module(x, key_mask, causal), naive_multihead(module, x, key_mask, causal, kind)
    valid = key_mask[:, :, None].expand_as(got)
    assert torch.allclose(got[valid], expected[valid], atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("normalization", ["relu2", "softmax_plus"])
def test_gau_matches_the_naive_formula(normalization, causal, inputs):
    x, key_mask = inputs
    module = GatedAttentionUnit(16, key_size=8, expansion=2, normalization=normalization).double()
    nn.init.normal_(module.gamma, std=1.0)                  # make the scores non-trivial
    got, expected = module(x, key_mask, causal), naive_gau(module, x, key_mask, causal)
    valid = key_mask[:, :, None].expand_as(got)
    assert torch.allclose(got[valid], expected[valid], atol=1e-10)


@pytest.mark.parametrize("kind", ["softmax", "softmax_logn", "local", "gau"])
def test_the_inference_window_narrows_the_keys_in_evaluation_only(kind):
    """In eval mode, with inference_window=2 the output at position 4 depends on positions 3-5 only; in training
    mode the layer computes what it computes without the option (`local`'s own window is 3: positions 2-6).
    Softmax with the window is LocalAttention."""
    torch.manual_seed(0)
    x, key_mask = torch.randn(1, 9, 16, dtype=torch.float64), torch.ones(1, 9, dtype=torch.bool)
    far = x.clone()
    far[:, [0, 1, 2, 6, 7, 8]] = torch.randn(1, 6, 16, dtype=torch.float64)   # every position but 3-5
    layer = ATTENTIONS[kind](hidden_size=16, num_heads=4, rope=True, dropout=0.0).double()
    if kind == "gau":
        nn.init.normal_(layer.gamma, std=1.0)   # scores large enough for distant keys to matter
    windowed = ATTENTIONS[kind](hidden_size=16, num_heads=4, rope=True, dropout=0.0, inference_window=2).double()
    windowed.load_state_dict(layer.state_dict())
    for causal in (False, True):
        windowed.train(), layer.train()
        assert torch.allclose(windowed(x, key_mask, causal), layer(x, key_mask, causal), atol=1e-12)
        windowed.eval(), layer.eval()
        assert torch.allclose(windowed(x, key_mask, causal)[0, 4], windowed(far, key_mask, causal)[0, 4], atol=1e-12)
        assert not torch.allclose(layer(x, key_mask, causal)[0, 4], layer(far, key_mask, causal)[0, 4], atol=1e-6)
    if kind == "softmax":
        local = LocalAttention(16, 4, rope=True, dropout=0.0, window=2).double().eval()
        local.load_state_dict(layer.state_dict())
        assert torch.allclose(windowed(x, key_mask), local(x, key_mask), atol=1e-12)


def test_a_causal_inference_window_of_t_gives_the_logits_of_each_window_alone():
    """A one-layer causal RoPE model with inference_window = T, on 4T tokens: the state at position i equals
    that of the last position of tokens i − T + 1 … i run alone (relative positions, one layer: nothing
    reaches i from farther back)."""
    torch.manual_seed(0)
    T = 6
    cfg = TransformerConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, ffn_size=32, dropout=0.0,
                            position="rope", attention=partial(MultiHeadAttention, inference_window=T))
    model = TransformerEncoder(cfg).double().eval()
    ids = torch.randint(0, 50, (1, 4 * T))
    whole = model(ids, torch.ones_like(ids), causal=True)[-1][0]
    for i in range(4 * T):
        part = ids[:, max(0, i - T + 1): i + 1]
        alone = model(part, torch.ones_like(part), causal=True)[-1][0, -1]
        assert torch.allclose(whole[i], alone, atol=1e-10), i
    model.train()   # in training the window is off: position 4T − 1 sees the whole row
    late = model(ids, torch.ones_like(ids), causal=True)[-1][0, -1]
    assert not torch.allclose(late, alone, atol=1e-6)


def test_linear_attention_refuses_an_inference_window():
    with pytest.raises(ValueError, match="inference_window does not work with LinearAttention"):
        LinearAttention(16, 4, inference_window=8)


def encoder(kind, position="rope", **overrides):
    cfg = TransformerConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, ffn_size=32, dropout=0.0,
                            position=position, attention=ATTENTIONS[kind],
                            max_position=64, **overrides)
    return TransformerEncoder(cfg).eval()


@pytest.mark.parametrize("kind", KINDS)
def test_causal_masks_leak_no_future_token(kind):
    model = encoder(kind)
    for module in model.modules():
        if isinstance(module, GatedAttentionUnit):       # GAU starts near identity (kexue 8990): wake it up
            nn.init.normal_(module.gamma, std=1.0)
    ids = torch.randint(1, 50, (1, 9))
    perturbed = ids.clone()
    perturbed[0, 6] = (ids[0, 6] % 49) + 1
    mask = torch.ones_like(ids)
    a, b = model(ids, mask, causal=True)[-1], model(perturbed, mask, causal=True)[-1]
    assert torch.equal(a[0, :6], b[0, :6]) and not torch.allclose(a[0, 6:], b[0, 6:], atol=1e-6)
    a, b = model(ids, mask, causal=False)[-1], model(perturbed, mask, causal=False)[-1]
    assert not torch.equal(a[0, :6], b[0, :6])          # without the mask the change does reach the past


def test_rope_scores_depend_on_relative_position_only():
    rope = RotaryEmbedding(8)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    seq_q, seq_k = q.expand(40, 8), k.expand(40, 8)
    rq, rk = rope(seq_q), rope(seq_k)
    assert torch.allclose(rq[5] @ rk[2], rq[30] @ rk[27], atol=1e-9)
    assert torch.allclose(rq[3] @ rk[3], q @ k, atol=1e-9)
    assert not torch.allclose(rq[5] @ rk[2], rq[5] @ rk[4], atol=1e-6)


def test_rope_angles_are_exact_far_beyond_a_training_length():
    """At position 8191 float32 angles m·θ_i are off by up to 1.7e-4 rad; the rotation must match math.cos/sin."""
    dim, m = 64, 8191
    x = torch.zeros(m + 1, dim, dtype=torch.float64)
    x[:, 0::2] = 1.0                                         # each pair (1, 0) rotates to (cos mθ_i, sin mθ_i)
    rotated = RotaryEmbedding(dim)(x)[m]
    theta = [10000.0 ** (-2 * i / dim) for i in range(dim // 2)]
    expected = torch.tensor([[math.cos(m * t), math.sin(m * t)] for t in theta], dtype=torch.float64)
    assert (rotated.view(-1, 2) - expected).abs().max() < 1e-9


def test_local_attention_with_rope_runs_past_the_training_length():
    model = encoder("local", position="rope")
    long = torch.randint(1, 50, (2, 200))                    # max_position is 64
    hidden = model(long, torch.ones_like(long))
    assert hidden[-1].shape == (2, 200, 16) and torch.isfinite(hidden[-1]).all()
    with pytest.raises(ValueError, match="exceeds backbone.max_position=64 of position=learned"):
        encoder("local", position="learned")(long, torch.ones_like(long))


def test_deepnorm_constants():
    assert deepnorm_constants(48) == pytest.approx((96 ** 0.25, 384 ** -0.25))       # DeepNet
    assert deepnorm_constants(6, "adam") == pytest.approx((12 ** 0.5, 12 ** -0.5))  # kexue 8978, Adam
    with pytest.raises(ValueError, match="deepnorm rule"):
        deepnorm_constants(6, "lamb")


def test_deepnorm_residual_is_layernorm_of_alpha_x_plus_f():
    cfg = TransformerConfig(vocab_size=10, hidden_size=8, num_layers=6, num_heads=2, ffn_size=16, dropout=0.0,
                            norm="deepnorm")
    block = Block(cfg).eval()
    fixed = torch.randn(1, 3, 8)
    block.sublayers[0].forward = lambda x, key_mask, causal: fixed
    block.sublayers[1].forward = lambda x, key_mask, causal: torch.zeros_like(x)
    x = torch.randn(1, 3, 8)
    alpha = 12 ** 0.25
    expected = F.layer_norm(F.layer_norm(alpha * x + fixed, (8,), eps=1e-12) * alpha, (8,), eps=1e-12)
    assert torch.allclose(block(x, torch.ones(1, 3, dtype=torch.bool), False), expected, atol=1e-5)


def test_deepnorm_and_gau_clash_names_both_keys():
    with pytest.raises(ValueError, match="backbone.norm=deepnorm does not work with attention GatedAttentionUnit"):
        TransformerConfig(vocab_size=10, norm="deepnorm", attention=partial(GatedAttentionUnit, key_size=8))


class MeanMixer(TokenMixer):
    """A new attention defined here: every query takes the mean of the values it sees, times `scale`."""

    supports_deepnorm = False

    def __init__(self, hidden_size, num_heads, *, rope=False, dropout=0.0, bias=True, activation="gelu", scale=1.0):
        super().__init__()
        self.value = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.scale = scale

    def forward(self, x, key_mask, causal=False):
        keep = visible(key_mask, causal)[:, 0].to(x.dtype)
        return self.scale * (keep @ self.value(x)) / keep.sum(-1, keepdim=True)


class MeanMixerWithoutFFN(MeanMixer):
    replaces_ffn = True


@pytest.mark.parametrize("mixer, second", [(MeanMixer, "FeedForward"), (MeanMixerWithoutFFN, "MeanMixerWithoutFFN")])
def test_a_new_attention_class_builds_blocks_from_its_class_attributes(mixer, second):
    cfg = TransformerConfig(vocab_size=50, hidden_size=16, num_heads=2, ffn_size=32, attention=partial(mixer, scale=0.5))
    model = TransformerEncoder(cfg).eval()
    assert [type(m).__name__ for m in model.blocks[0].sublayers] == [mixer.__name__, second]
    assert model.blocks[0].sublayers[0].scale == 0.5 and cfg.attention["scale"] == 0.5
    ids = torch.randint(1, 50, (2, 6))
    assert model(ids, torch.ones_like(ids), causal=True)[-1].shape == (2, 6, 16)
    with pytest.raises(ValueError, match="deepnorm does not work with attention " + mixer.__name__):
        TransformerConfig(vocab_size=50, norm="deepnorm", attention=mixer)
    with pytest.raises(TypeError, match="TokenMixer subclass"):
        TransformerConfig(vocab_size=50, attention=partial(nn.Linear, bias=False))


@pytest.mark.parametrize("kind", KINDS)
def test_the_stored_config_re_creates_the_same_attention(kind):
    model = encoder(kind)
    saved = asdict(model.cfg)                                           # what backbone.pt holds
    assert saved["attention"] == {"_target_": f"lit_models.components.nn.attention.{ATTENTIONS[kind].func.__name__}",
                                  **ATTENTIONS[kind].keywords}
    again = TransformerEncoder(TransformerConfig(**saved)).eval()
    again.load_state_dict(model.state_dict())
    ids = torch.randint(1, 50, (2, 9))
    assert torch.equal(model(ids, torch.ones_like(ids))[-1], again(ids, torch.ones_like(ids))[-1])


def test_backbone_files_of_the_kind_era_still_load():
    old = {"kind": "gau", "window": 128, "train_length": 256, "key_size": 8, "expansion": 2, "normalization": "relu2"}
    factory = attention_factory(old)
    assert factory.func is GatedAttentionUnit and factory.keywords == {
        "key_size": 8, "expansion": 2, "normalization": "relu2", "train_length": 256}
    cfg = TransformerConfig(vocab_size=10, hidden_size=8, num_heads=2, attention={**old, "kind": "local"})
    assert cfg.attention == {"_target_": "lit_models.components.nn.attention.LocalAttention", "window": 128}


@pytest.mark.parametrize("scheme, role, expected_std", [
    (lecun, "other", math.sqrt(1 / 1024)),
    (geometric, "other", (1024 * 512) ** -0.25),
    (lambda w, r: deepnorm(w, r, num_layers=48), "value", 384 ** -0.25 * math.sqrt(2 / 1536)),
    (lambda w, r: deepnorm(w, r, num_layers=48), "query_key", math.sqrt(2 / 1536)),
    (lambda w, r: scaled_residual(w, r, num_layers=12), "residual_out", 0.02 / math.sqrt(24)),
    (lambda w, r: scaled_residual(w, r, num_layers=12), "value", 0.02),
])
def test_init_scheme_std_matches_its_formula(scheme, role, expected_std):
    layer = nn.Linear(1024, 512)
    layer.init_role = role
    initialize(layer, scheme)
    assert layer.weight.std().item() == pytest.approx(expected_std, rel=0.05)


def test_init_roles_reach_the_right_projections():
    model = encoder("softmax", position="learned")
    initialize(model, lambda w, r: deepnorm(w, r, num_layers=2))
    attention, ffn = model.blocks[0].sublayers
    beta = deepnorm_constants(2)[1]
    assert attention.value.weight.std().item() == pytest.approx(beta * math.sqrt(2 / 32), rel=0.25)
    assert attention.query.weight.std().item() == pytest.approx(math.sqrt(2 / 32), rel=0.25)
    assert (ffn.up.init_role, ffn.down.init_role, attention.out.init_role) == ("value", "residual_out", "residual_out")


def test_qk_bias_only_removes_every_other_bias():
    model = encoder("softmax", qk_bias_only=True)
    attention, ffn = model.blocks[0].sublayers
    assert attention.query.bias is not None and attention.key.bias is not None
    assert attention.value.bias is None and attention.out.bias is None and ffn.up.bias is None


@pytest.mark.parametrize("kind", ["softmax", "gau"])
def test_recompute_gives_the_same_gradients(kind):
    torch.manual_seed(0)
    plain = encoder(kind).train()
    recomputed = encoder(kind, recompute=True).train()
    recomputed.load_state_dict(plain.state_dict())
    ids = torch.randint(1, 50, (2, 10))
    grads = []
    for model in (plain, recomputed):
        model(ids, torch.ones_like(ids))[-1].square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize("position", ["rope", "learned", "sinusoidal", "none"])
@pytest.mark.parametrize("norm", ["post", "pre", "deepnorm"])
def test_every_norm_and_position_runs_and_pads_cleanly(norm, position):
    model = encoder("softmax", position=position, norm=norm)
    alone = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
    h_alone = model(alone, torch.ones_like(alone))[-1]
    h_padded = model(padded, (padded != 0).long())[-1]
    assert torch.allclose(h_alone[0], h_padded[0, :3], atol=1e-5)
