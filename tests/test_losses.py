import math

import pytest
import torch
import torch.nn.functional as F

from lit_models.components.losses import (
    CoSENTLoss,
    CosineMSELoss,
    FlatNCELoss,
    InfoNCELoss,
    SBERTLoss,
)


def cosent_brute_force(u, v, labels, scale):
    """log(1 + Σ_{label_i > label_j} exp(λ(cos_j − cos_i))), one pair of pairs at a time."""
    cos = [F.cosine_similarity(u[i], v[i], dim=0).item() for i in range(len(labels))]
    total = 1.0
    for i in range(len(labels)):
        for j in range(len(labels)):
            if labels[i] > labels[j]:
                total += math.exp(scale * (cos[j] - cos[i]))
    return math.log(total)


@pytest.mark.parametrize("labels", [
    [0, 1, 1, 0, 1, 0, 0, 1],                       # binary
    [0.0, 5.0, 3.0, 3.0, 2.4, 1.0, 4.0, 3.0],       # graded STS-B scores, with ties
    [2, 2, 2, 2, 2, 2, 2, 2],                       # all equal: no ordered pair, loss 0
    [1, 0, 0, 0, 0, 0, 0, 0],                       # a single positive
])
@pytest.mark.parametrize("scale", [20.0, 1.0])
def test_cosent_equals_brute_force(labels, scale):
    torch.manual_seed(len(labels) + int(scale))
    u = torch.randn(len(labels), 16, dtype=torch.float64, requires_grad=True)
    v = torch.randn(len(labels), 16, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(labels, dtype=torch.float64)
    loss = CoSENTLoss(scale)(u, v, y)
    assert loss.item() == pytest.approx(cosent_brute_force(u.detach(), v.detach(), labels, scale), rel=1e-5)
    loss.backward()
    assert torch.isfinite(u.grad).all() and torch.isfinite(v.grad).all()
    if len(set(labels)) == 1:
        assert loss.item() == 0.0 and u.grad.abs().max() == 0


def test_cosent_is_finite_when_the_order_is_badly_wrong():
    u = torch.randn(4, 8)
    v = torch.cat([u[:2], -u[2:]])                 # cos = 1, 1, -1, -1
    loss = CoSENTLoss(20.0)(u, v, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(40 + math.log(4), rel=1e-3)


def test_sbert_head_shapes_and_label_mapping():
    head = SBERTLoss(hidden_size=12)
    assert head.classifier.weight.shape == (2, 36)
    u, v = torch.randn(6, 12), torch.randn(6, 12)
    assert head.logits(u, v).shape == (6, 2)
    graded = torch.tensor([0.0, 1.0, 2.0, 2.5, 3.0, 5.0]) / 5        # the data scales STS-B's 0-5 to [0, 1]
    assert head.classes(graded).tolist() == [0, 0, 0, 0, 1, 1]
    binary = SBERTLoss(hidden_size=12)
    assert binary.classes(torch.tensor([0.0, 1.0, 1.0, 0.0])).tolist() == [0, 1, 1, 0]
    late = SBERTLoss()                                                # the task gives the width later
    late.configure(12)
    assert late.classifier.weight.shape == (2, 36)
    nli = SBERTLoss(hidden_size=12, num_classes=3)
    assert nli.classes(torch.tensor([0.0, 1.0, 2.0])).tolist() == [0, 1, 2]


def test_sbert_loss_is_cross_entropy_over_u_v_absdiff():
    torch.manual_seed(0)
    head = SBERTLoss(hidden_size=4)
    u, v = torch.randn(3, 4), torch.randn(3, 4)
    features = torch.cat([u, v, (u - v).abs()], dim=1)
    logits = features @ head.classifier.weight.T + head.classifier.bias
    expected = -torch.log_softmax(logits, dim=1)[torch.arange(3), torch.tensor([1, 0, 1])].mean()
    assert head(u, v, torch.tensor([4.0, 1.0, 3.0]) / 5).item() == pytest.approx(expected.item(), rel=1e-6)


def test_cosine_mse_matches_the_posts_formula_on_binary_labels():
    torch.manual_seed(0)
    u, v = torch.randn(5, 8), torch.randn(5, 8)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    cos = F.cosine_similarity(u, v)
    expected = (t * (1 - cos) ** 2 + (1 - t) * cos ** 2).mean()
    assert CosineMSELoss()(u, v, t).item() == pytest.approx(expected.item(), rel=1e-6)


def test_token_cross_entropy_skips_ignored_positions():
    from lit_models.components.losses import TokenCrossEntropy

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, -100, 4], [-100, -100, 0]])
    picked = [(0, 0, 1), (0, 2, 4), (1, 2, 0)]
    expected = -sum(torch.log_softmax(logits[b, t], -1)[y] for b, t, y in picked) / 3
    assert TokenCrossEntropy()(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def nce_brute_force(u, v, labels, tau, flat=False, symmetric=False):
    """InfoNCE (or FlatNCE: the positive left out of the sum) over the similar pairs, one anchor at a time."""
    n = len(labels)
    cos = [[F.cosine_similarity(u[i], v[j], dim=0).item() / tau for j in range(n)] for i in range(n)]
    anchors = [i for i in range(n) if labels[i] > 0.5]

    def direction(score):
        total = 0.0
        for i in anchors:
            denominator = sum(math.exp(score(i, j)) for j in range(n) if not (flat and j == i))
            total += math.log(denominator) - score(i, i)
        return total / len(anchors)
    forward = direction(lambda i, j: cos[i][j])
    return (forward + direction(lambda i, j: cos[j][i])) / 2 if symmetric else forward


@pytest.mark.parametrize("labels", [
    [1, 0, 1, 1, 0, 1, 0, 1],                              # binary: the 0-pairs are only candidates
    [0.0, 1.0, 0.6, 0.5, 0.48, 0.2, 0.8, 0.6],             # graded (STS-B / 5): anchors are the labels > 0.5
    [1, 1, 1, 1, 1, 1],
])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("loss_class", [InfoNCELoss, FlatNCELoss])
def test_infonce_and_flatnce_equal_brute_force(labels, symmetric, loss_class):
    torch.manual_seed(len(labels))
    u = torch.randn(len(labels), 6, dtype=torch.float64)
    v = u + torch.randn(len(labels), 6, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    loss = loss_class(temperature=0.1, symmetric=symmetric)(u, v, y)
    expected = nce_brute_force(u, v, labels, 0.1, flat=loss_class is FlatNCELoss, symmetric=symmetric)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("loss_class", [InfoNCELoss, FlatNCELoss])
def test_nce_without_anchor_or_negative_is_zero_with_zero_gradient(loss_class):
    u = torch.randn(4, 6, requires_grad=True)
    for labels, rows in ((torch.zeros(4), 4), (torch.ones(1), 1)):
        loss = loss_class()(u[:rows], u[:rows].flip(0), labels)
        loss.backward()
        assert loss.item() == 0.0 and u.grad.abs().max() == 0


def test_flatnce_is_log_xi_can_be_negative_and_gives_infonce_softplus():
    """One anchor: FlatNCE = log ξ, InfoNCE = log(1 + ξ) = softplus(FlatNCE); ξ < 1 makes FlatNCE negative."""
    torch.manual_seed(0)
    u = torch.randn(5, 8, dtype=torch.float64)
    v = torch.cat([u[:1], torch.randn(4, 8, dtype=torch.float64)])   # the anchor's positive is itself: s_t = 1/τ
    labels = torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)
    flat, info = FlatNCELoss(0.05)(u, v, labels), InfoNCELoss(0.05)(u, v, labels)
    s = F.cosine_similarity(u[:1], v) / 0.05
    xi = torch.exp(s[1:] - s[0]).sum()
    assert flat.item() < 0 and flat.item() == pytest.approx(torch.log(xi).item(), rel=1e-5)
    assert info.item() == pytest.approx(F.softplus(flat).item(), rel=1e-5)


def test_flatnce_gradient_is_that_of_xi_over_sg_xi_and_infonces_direction():
    """kexue.fm/archives/8586: ∇ log ξ = ∇ξ / ξ = ∇(ξ / sg(ξ)), and InfoNCE's ∇ log(1 + ξ) = ∇ξ / (1 + ξ):
    per anchor, FlatNCE's gradient is InfoNCE's times (1 + ξ) / ξ."""
    torch.manual_seed(1)
    u0, v0 = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    for anchor in range(6):
        labels = torch.zeros(6, dtype=torch.float64)
        labels[anchor] = 1

        def grads(loss_fn):
            u, v = u0.clone().requires_grad_(), v0.clone().requires_grad_()
            loss_fn(u, v).backward()
            return torch.cat([u.grad.flatten(), v.grad.flatten()])

        def xi_of(u, v):
            s = F.cosine_similarity(u[anchor:anchor + 1], v) / 0.2
            return torch.cat([s[:anchor], s[anchor + 1:]]).sub(s[anchor]).exp().sum()
        flat = grads(lambda u, v: FlatNCELoss(0.2)(u, v, labels))
        info = grads(lambda u, v: InfoNCELoss(0.2)(u, v, labels))
        paper = grads(lambda u, v: xi_of(u, v) / xi_of(u, v).detach())
        xi = xi_of(u0, v0).item()
        assert torch.allclose(flat, paper, rtol=1e-9, atol=1e-12)
        assert torch.allclose(flat, info * (1 + xi) / xi, rtol=1e-9, atol=1e-12)


def test_batch_level_losses_declare_global_batch():
    assert CoSENTLoss.global_batch and InfoNCELoss.global_batch and FlatNCELoss.global_batch
    assert not SBERTLoss.global_batch and not CosineMSELoss.global_batch
