import math

import pytest
import torch
import torch.nn.functional as F

from lit_models.losses import CoSENTLoss, CosineMSELoss, SBERTLoss


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
    head = SBERTLoss(hidden_size=12, label_max=5.0)
    assert head.classifier.weight.shape == (2, 36)
    u, v = torch.randn(6, 12), torch.randn(6, 12)
    assert head.logits(u, v).shape == (6, 2)
    graded = torch.tensor([0.0, 1.0, 2.0, 2.5, 3.0, 5.0])
    assert head.classes(graded).tolist() == [0, 0, 0, 0, 1, 1]
    binary = SBERTLoss(hidden_size=12, label_max=1.0)
    assert binary.classes(torch.tensor([0.0, 1.0, 1.0, 0.0])).tolist() == [0, 1, 1, 0]
    nli = SBERTLoss(hidden_size=12, label_max=2.0, num_classes=3)
    assert nli.classes(torch.tensor([0.0, 1.0, 2.0])).tolist() == [0, 1, 2]


def test_sbert_loss_is_cross_entropy_over_u_v_absdiff():
    torch.manual_seed(0)
    head = SBERTLoss(hidden_size=4, label_max=5.0)
    u, v = torch.randn(3, 4), torch.randn(3, 4)
    features = torch.cat([u, v, (u - v).abs()], dim=1)
    logits = features @ head.classifier.weight.T + head.classifier.bias
    expected = -torch.log_softmax(logits, dim=1)[torch.arange(3), torch.tensor([1, 0, 1])].mean()
    assert head(u, v, torch.tensor([4.0, 1.0, 3.0])).item() == pytest.approx(expected.item(), rel=1e-6)


def test_cosine_mse_matches_the_posts_formula_on_binary_labels():
    torch.manual_seed(0)
    u, v = torch.randn(5, 8), torch.randn(5, 8)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    cos = F.cosine_similarity(u, v)
    expected = (t * (1 - cos) ** 2 + (1 - t) * cos ** 2).mean()
    assert CosineMSELoss(label_max=1.0)(u, v, t).item() == pytest.approx(expected.item(), rel=1e-6)
    graded = CosineMSELoss(label_max=5.0)(u, v, 5 * t)
    assert graded.item() == pytest.approx(expected.item(), rel=1e-6)


def test_token_cross_entropy_skips_ignored_positions():
    from lit_models.losses import TokenCrossEntropy

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, -100, 4], [-100, -100, 0]])
    picked = [(0, 0, 1), (0, 2, 4), (1, 2, 0)]
    expected = -sum(torch.log_softmax(logits[b, t], -1)[y] for b, t, y in picked) / 3
    assert TokenCrossEntropy()(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
