"""Span metrics: entity-level P/R/F1 for NER (kexue.fm/archives/8373) and the official CMRC 2018 EM/F1
(scored by text/cmrc.py), as torchmetrics Metrics that reduce under DDP."""
from __future__ import annotations

import torch
from torchmetrics import Metric

from text.cmrc import cmrc_em, cmrc_f1


class CMRCScore(Metric):
    """Official CMRC 2018 EM and F1, averaged over questions. Sum states, so it reduces under DDP."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        for name in ("em", "f1", "questions"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predictions: list[str], references: list[list[str]]) -> None:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
        self.em += sum(cmrc_em(p, r) for p, r in zip(predictions, references))
        self.f1 += sum(cmrc_f1(p, r) for p, r in zip(predictions, references))
        self.questions += len(predictions)

    def compute(self) -> dict[str, torch.Tensor]:
        questions = self.questions.clamp(min=1)
        return {"em": (self.em / questions).float(), "f1": (self.f1 / questions).float()}


class EntityF1(Metric):
    """Entity-level precision, recall and F1 (kexue.fm/archives/8373): an entity counts as found only when its
    (example, type, start, end) all match a gold one.

        P = |pred ∩ gold| / |pred|,   R = |pred ∩ gold| / |gold|,   F1 = 2|pred ∩ gold| / (|pred| + |gold|)

    `update` takes [N, 4] long tensors of (example, type, start, end); duplicate rows count once. Sum states,
    so the counts add up over batches and DDP ranks before P/R/F1 are taken.
    """

    full_state_update = False

    def __init__(self):
        super().__init__()
        for name in ("found", "predicted", "gold"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predicted: torch.Tensor, gold: torch.Tensor) -> None:
        predicted, gold = unique_rows(predicted), unique_rows(gold)
        both = unique_rows(torch.cat([predicted, gold]))
        self.found += len(predicted) + len(gold) - len(both)
        self.predicted += len(predicted)
        self.gold += len(gold)

    def compute(self) -> dict[str, torch.Tensor]:
        found = self.found.double()
        return {"precision": (found / self.predicted.clamp(min=1)).float(),
                "recall": (found / self.gold.clamp(min=1)).float(),
                "f1": (2 * found / (self.predicted + self.gold).clamp(min=1)).float()}


def unique_rows(spans: torch.Tensor) -> torch.Tensor:
    return torch.unique(spans.reshape(-1, 4), dim=0)
