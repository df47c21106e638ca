"""The accuracy-optimal cut of a scalar score, chosen on valid and applied to test (kexue.fm/archives/8860).

The post turns a similarity model into a classifier by searching a threshold on the validation split with
Powell's method over tanh-parametrized cuts, then reports test accuracy at that threshold. For one scalar
score the search is one-dimensional, and accuracy only changes where the cut crosses a score, so trying every
cut between consecutive distinct scores (plus "all similar" and "all not similar") finds the optimum exactly,
in one sort: O(n log n), where Powell gives a local optimum of a piecewise-constant function.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def best_threshold(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """The threshold t maximizing accuracy of `similar iff score > t` against binary `labels`, and that accuracy.

    Candidates: −inf, every midpoint (u_k + u_{k+1}) / 2 of consecutive distinct scores u_1 < … < u_K, and
    +inf. A cut between u_k and u_{k+1} predicts "not similar" for the first k groups of equal scores:

        correct(k) = Σ_{j≤k} negatives(u_j) + Σ_{j>k} positives(u_j),   accuracy = max_k correct(k) / n

    Among equally accurate cuts, the lowest threshold wins. Computed in float64, so a midpoint lies strictly
    between its two scores.
    """
    scores, positive = scores.detach().double().flatten(), labels.detach().bool().flatten()
    if scores.numel() == 0 or scores.shape != positive.shape:
        raise ValueError(f"best_threshold needs as many labels as scores (at least one), got "
                         f"{tuple(scores.shape)} scores and {tuple(positive.shape)} labels")
    if not torch.isfinite(scores).all():
        raise ValueError("best_threshold got a non-finite score (nan or inf)")
    distinct, group = torch.unique(scores, sorted=True, return_inverse=True)
    positives = torch.zeros_like(distinct).index_add_(0, group, positive.double())
    negatives = torch.zeros_like(distinct).index_add_(0, group, (~positive).double())
    zero = distinct.new_zeros(1)
    correct = torch.cat([zero, negatives.cumsum(0)]) + positives.sum() - torch.cat([zero, positives.cumsum(0)])
    infinity = distinct.new_full((1,), float("inf"))
    cuts = torch.cat([-infinity, (distinct[1:] + distinct[:-1]) / 2, infinity])
    best = int(torch.argmax(correct))  # the first maximum: the lowest of equally good cuts
    return float(cuts[best]), float(correct[best]) / len(scores)


class ThresholdSearch(Metric):
    """Keeps the scores and binary gold labels of a split (every rank's under DDP); `compute()` returns
    `best_threshold` of them: {"threshold": t, "accuracy": accuracy at t}."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("positive", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, positive: torch.Tensor) -> None:
        self.scores.append(scores.detach().double().flatten())
        self.positive.append(positive.detach().double().flatten())  # float: gathers on every backend

    def compute(self) -> dict[str, torch.Tensor]:
        threshold, accuracy = best_threshold(dim_zero_cat(self.scores), dim_zero_cat(self.positive))
        return {"threshold": torch.tensor(threshold, dtype=torch.float64, device=self.device),
                "accuracy": torch.tensor(accuracy, device=self.device)}
