"""Every `loss=` choice. One loss, one class; each takes what its task gives it and returns a scalar.

Each loss declares `inputs`, what it takes, in the words a task's LOSS_INPUTS uses (hub.config checks the
match before anything is built):
    pair_embeddings: `(u, v, labels)`, the embeddings of the first and second sentences [B, d] and the gold
        labels [B], 0/1 or a graded similarity in [0, 1] (the pair DataModules scale every score to [0, 1]);
        a pair counts as similar iff its label > 0.5;
    pair_scores: `(scores [B], labels [B])`, one scalar score per pair (a cross-encoder's);
    logits: `(logits [N, C], class ids [N])`;  token_logits: `(logits [N, V], token ids [N])` with ignored
    positions;  span_scores: `(scores, 0/1 targets)` of one shape.
A loss with weights of the encoder's width (SBERT's classifier) builds them in `configure(hidden_size)`,
which the task calls.

Each pair loss declares `global_batch`: True when its value couples the pairs of a batch (CoSENT ranks
every pair against every other, InfoNCE/FlatNCE use the other pairs as negatives). Under DDP such a loss
must see the pairs of every rank, so the bi-encoder gathers them first (lit_models/components/distributed.py). A
per-pair loss (global_batch = False) is a mean over pairs, and DDP's averaging of the ranks' gradients is
already exact for it (the distributed sampler gives every rank as many pairs).
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

    inputs = ("pair_embeddings", "pair_scores")
    global_batch = True

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, u: torch.Tensor, v: torch.Tensor | None = None, labels: torch.Tensor | None = None
                ) -> torch.Tensor:
        """`(u, v, labels)`: pair embeddings, scored by λ·cos(u, v). `(scores, labels)`: one scalar score per
        pair, e.g. a cross-encoder's logit, ranked as is (no λ, no activation; kexue.fm/archives/9341)."""
        if labels is None:
            return cosent(u.float(), v)
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
    cos(u, v). Graded labels are binarized as in the post's STS-B runs: similar iff label > 0.5 (STS-B: score
    ≥ 3 of 5). `num_classes` = 3 takes NLI classes 0/1/2 as they are.
    """

    inputs = ("pair_embeddings",)
    global_batch = False

    def __init__(self, num_classes: int = 2, hidden_size: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        if hidden_size is not None:
            self.configure(hidden_size)

    def configure(self, hidden_size: int) -> None:
        """The classifier W [C, 3d], once the encoder's width d is known."""
        self.classifier = nn.Linear(3 * hidden_size, self.num_classes)

    def classes(self, labels: torch.Tensor) -> torch.Tensor:
        if self.num_classes == 2:
            return similar(labels).long()
        return labels.long()

    def logits(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.cat([u, v, (u - v).abs()], dim=-1))

    def forward(self, u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(u, v).float(), self.classes(labels))


class CosineMSELoss(nn.Module):
    """The naive cosine regression that kexue.fm/archives/8847 shows training badly:

        loss = mean((cos(u, v) − t)²),   t = label ∈ [0, 1]

    For binary labels this is the post's t·(1 − cos)² + (1 − t)·cos²; it pulls every hard negative
    towards cos = 0, which is what makes it overfit.
    """

    inputs = ("pair_embeddings",)
    global_batch = False

    def forward(self, u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.cosine_similarity(u.float(), v.float(), dim=-1)
        return F.mse_loss(cos, labels.float())


class TokenCrossEntropy(nn.Module):
    """Token-level cross-entropy of a language model (masked or causal): mean over positions with a label.

        loss = −(1/|P|) Σ_{t∈P} log softmax(logits_t)[label_t],   P = {t : label_t ≠ ignore_index}

    Takes `(logits [B, L, V], labels [B, L])`; positions labelled `ignore_index` (-100) do not count.
    """

    inputs = ("token_logits",)

    def __init__(self, ignore_index: int = -100, label_smoothing: float = 0.0):
        super().__init__()
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy of a classifier, with optional label smoothing ε:

        loss = mean_i [ −(1−ε)·log p_i[y_i] − (ε/C)·Σ_c log p_i[c] ],   p_i = softmax(logits_i)

    `(logits [B, C], labels [B])`; `-inf` logits (options a question does not have) get no probability.
    A 1-D `scores [B]` is one logit per pair, a cross-encoder's score s: the 2-class softmax over (0, s),
    so p(similar) = sigmoid(s) and the loss is the 2-class CE of kexue.fm/archives/9341's baseline;
    pairs count as similar iff label > 0.5 (STS-B: score ≥ 3 of 5).
    """

    inputs = ("pair_scores", "logits")

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.ndim == 1:
            logits = torch.stack([torch.zeros_like(logits), logits], dim=-1)
            labels = similar(labels)
        if self.label_smoothing and torch.isinf(logits).any():  # smoothing must not reward absent options
            log_p = logits.log_softmax(-1).masked_fill(torch.isinf(logits), 0.0)
            nll = -log_p.gather(-1, labels.long()[:, None]).squeeze(-1)
            uniform = -log_p.sum(-1) / torch.isfinite(logits).sum(-1)
            return ((1 - self.label_smoothing) * nll + self.label_smoothing * uniform).mean()
        return F.cross_entropy(logits, labels.long(), label_smoothing=self.label_smoothing)


def similar(labels: torch.Tensor) -> torch.Tensor:
    """Binarized pair labels (graded ones lie in [0, 1]), as in kexue.fm/archives/8847's STS-B runs: similar
    iff label > 0.5."""
    return labels > 0.5


class InfoNCELoss(nn.Module):
    """InfoNCE with in-batch negatives (van den Oord et al. 2018; the supervised setting of SimCSE, Gao et al.
    2021): each similar pair (u_i, v_i) classifies v_i among the second sentences of the whole batch.

        s_ij = cos(u_i, v_j) / τ,   loss = (1/|P|) Σ_{i∈P} [log Σ_j exp(s_ij) − s_ii] = (1/|P|) Σ_{i∈P} log(1 + ξ_i)
        ξ_i = Σ_{j≠i} exp(s_ij − s_ii)

    P, the anchors: the pairs labelled similar (`similar`: label > 0.5). A pair labelled non-similar
    is no anchor, since nothing says which sentence its u should retrieve, but its v stays a candidate: a hard
    negative for every anchor. j runs over every pair of the batch, under DDP the global batch
    (`global_batch`). τ = 0.05 as in SimCSE. `symmetric` averages with the reverse direction, v_i retrieving
    u_i among every u: (1/|P|) Σ_{i∈P} [log Σ_j exp(s_ji) − s_ii]. A batch without a similar pair, or of a
    single pair (no negative), gives 0 with zero gradient.

    Its gradient is that of Σ_ij (sg(p_ij) − t_ij)·s_ij (p = softmax of the scores, t = one-hot targets),
    which kexue.fm/archives/8471 turns into exact gradient accumulation (task.contrastive_accumulation).
    """

    inputs = ("pair_embeddings",)
    global_batch = True

    def __init__(self, temperature: float = 0.05, symmetric: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"loss.temperature must be > 0, got {temperature}")
        self.temperature, self.symmetric = temperature, symmetric

    def forward(self, u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        u, v = (x.to(torch.promote_types(x.dtype, torch.float32)) for x in (u, v))  # bf16/fp16 up, fp64 kept
        scores = F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T / self.temperature
        anchors = similar(labels).nonzero().squeeze(1)
        if len(anchors) == 0 or len(labels) < 2:
            return scores.sum() * 0.0
        loss = self.anchor_loss(scores[anchors], anchors)
        if self.symmetric:
            loss = (loss + self.anchor_loss(scores.T[anchors], anchors)) / 2
        return loss

    @staticmethod
    def anchor_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over the anchors (rows) of log Σ_j exp(logits_j) − logits_target."""
        return F.cross_entropy(logits, targets)


class FlatNCELoss(InfoNCELoss):
    """FlatNCE (Chen et al. 2021, "Simpler, Faster, Stronger: Breaking the log-K Curse on Contrastive Learners
    with FlatNCE"; kexue.fm/archives/8586): InfoNCE's anchors, candidates and scores, with the positive taken
    out of the logsumexp:

        loss = (1/|P|) Σ_{i∈P} [log Σ_{j≠i} exp(s_ij) − s_ii] = (1/|P|) Σ_{i∈P} log ξ_i

    The paper writes the loss as ξ/sg(ξ), whose value is always 1; the post notes ∇(ξ/sg(ξ)) = ∇ξ/ξ = ∇ log ξ,
    so log ξ trains identically, and it is what this returns and what train/loss logs. It is negative when
    the positive outscores the negatives' sum (ξ < 1), which is normal. Per anchor, InfoNCE = log(1 + ξ) =
    softplus(FlatNCE), and FlatNCE's gradient is InfoNCE's times (1 + ξ)/ξ: the same direction, but it does
    not fade as ξ → 0, where InfoNCE's gradient drowns in float error at small batch sizes (the post's point).
    """

    @staticmethod
    def anchor_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over the anchors (rows) of log Σ_{j≠target} exp(logits_j) − logits_target."""
        positive = logits.gather(1, targets[:, None]).squeeze(1)
        negatives = logits.scatter(1, targets[:, None], float("-inf"))
        return (torch.logsumexp(negatives, dim=1) - positive).mean()


class MultilabelCategoricalCrossEntropy(nn.Module):
    """Softmax cross-entropy generalized to several target classes (kexue.fm/archives/7359), the GlobalPointer
    loss of kexue.fm/archives/8373. Per type α, with P_α its gold spans and Q_α every other span:

        loss_α = log(1 + Σ_{(i,j)∈P_α} e^{−s_α(i,j)}) + log(1 + Σ_{(i,j)∈Q_α} e^{s_α(i,j)})

    It pushes gold scores above 0 and all others below, so decoding is s > 0, and it does not drown the few
    positives among the n(n+1)/2 candidates. Takes `(scores, targets)` of one shape: [N, C] (each row one
    problem over C classes) or [B, T, L, L] (each (example, type) one problem over its L×L spans); targets
    are 0/1. Masked spans carry a score of −1e12 and add e^{−1e12} = 0. Returns the mean over problems.
    """

    inputs = ("span_scores",)

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        scores = scores.float().flatten(start_dim=min(2, scores.ndim - 1))
        positive = targets.reshape(scores.shape).bool()
        zero = scores.new_zeros(scores.shape[:-1] + (1,))
        negatives = scores.masked_fill(positive, float("-inf"))
        positives = (-scores).masked_fill(~positive, float("-inf"))
        return (torch.logsumexp(torch.cat([zero, negatives], -1), -1)
                + torch.logsumexp(torch.cat([zero, positives], -1), -1)).mean()
