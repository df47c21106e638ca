"""Every `loss=` choice. One loss, one class; each takes what its task gives it and returns a scalar.

Sentence-pair losses (task=bi_encoder) take `(u, v, labels)`: the embeddings of the first and second
sentences [B, d] and the gold labels [B] (0/1, or a graded score in [0, label_max]).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CoSENTLoss(nn.Module):
    """CoSENT (Su, kexue.fm/archives/8847): a ranking loss on the cosines of a batch of pairs.

        loss = log(1 + Σ_{sim(i,j) > sim(k,l)} exp(λ·(cos(u_k, v_k) − cos(u_i, v_i))))

    Every pair of pairs whose gold labels are ordered adds a term, so only the label *order* matters:
    binary labels, NLI classes mapped to an order, or STS-B scores all work. λ = 20 as in the post.
    """

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        scores = self.scale * F.cosine_similarity(u.float(), v.float(), dim=-1)
        return cosent(scores, labels)


def cosent(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log(1 + Σ_{labels[a] < labels[b]} exp(scores[a] − scores[b])), as logsumexp over [0, differences]."""
    differences = scores[:, None] - scores[None, :]               # [a, b] = s_a − s_b
    lower = labels[:, None] < labels[None, :]                     # pair a should score below pair b
    differences = differences.masked_fill(~lower, float("-inf"))
    zero = torch.zeros(1, dtype=scores.dtype, device=scores.device)
    return torch.logsumexp(torch.cat([zero, differences.flatten()]), dim=0)


class SBERTLoss(nn.Module):
    """Sentence-BERT / InferSent training head (Reimers & Gurevych 2019; the baseline of kexue.fm/archives/8847).

        p = softmax(W·[u; v; |u − v|] + b),   loss = cross-entropy(p, class)

    Training and inference differ: the classifier is used only for training, inference compares
    cos(u, v). Graded labels are binarized as in the post's STS-B runs: similar iff label > label_max / 2
    (STS-B: score ≥ 3). `num_classes` = 3 takes NLI classes 0/1/2 as they are.
    """

    def __init__(self, hidden_size: int, label_max: float = 1.0, num_classes: int = 2):
        super().__init__()
        self.label_max, self.num_classes = label_max, num_classes
        self.classifier = nn.Linear(3 * hidden_size, num_classes)

    def classes(self, labels: torch.Tensor) -> torch.Tensor:
        if self.num_classes == 2:
            return (labels > self.label_max / 2).long()
        return labels.long()

    def logits(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.cat([u, v, (u - v).abs()], dim=-1))

    def forward(self, u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(u, v).float(), self.classes(labels))


class CosineMSELoss(nn.Module):
    """The naive cosine regression that kexue.fm/archives/8847 shows training badly:

        loss = mean((cos(u, v) − t)²),   t = label / label_max ∈ [0, 1]

    For binary labels this is the post's t·(1 − cos)² + (1 − t)·cos²; it pulls every hard negative
    towards cos = 0, which is what makes it overfit.
    """

    def __init__(self, label_max: float = 1.0):
        super().__init__()
        self.label_max = label_max

    def forward(self, u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.cosine_similarity(u.float(), v.float(), dim=-1)
        return F.mse_loss(cos, labels.float() / self.label_max)


class TokenCrossEntropy(nn.Module):
    """Token-level cross-entropy of a language model (masked or causal): mean over positions with a label.

        loss = −(1/|P|) Σ_{t∈P} log softmax(logits_t)[label_t],   P = {t : label_t ≠ ignore_index}

    Takes `(logits [B, L, V], labels [B, L])`; positions labelled `ignore_index` (-100) do not count.
    """

    def __init__(self, ignore_index: int = -100, label_smoothing: float = 0.0):
        super().__init__()
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)
