"""task=bi_encoder: a sentence encoder trained on labelled pairs, evaluated by Spearman of cos(u, v) vs gold.

The setting of CoSENT vs Sentence-BERT (kexue.fm/archives/8847) and of BERT-whitening's poolings
(kexue.fm/archives/8069): both sentences go through the same encoder, a pooling turns hidden states
into one vector each, and whatever the training loss, inference compares cosines.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torchmetrics import SpearmanCorrCoef

from lit_models.base import TaskModule

POOLINGS = ("cls", "mean", "first_last_avg")
# Spearman needs every score of the split; the STS splits (<= 20k pairs) fit easily, so the warning is noise.
warnings.filterwarnings("ignore", message="Metric `SpearmanCorrcoef` will save all targets")


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def pool(hidden_states: list[torch.Tensor], attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """cls: the first token of the last layer; mean: masked mean of the last layer;
    first_last_avg: masked mean of the average of the first block's and the last block's outputs."""
    if pooling == "cls":
        return hidden_states[-1][:, 0]
    if pooling == "mean":
        return masked_mean(hidden_states[-1], attention_mask)
    if pooling == "first_last_avg":
        return masked_mean((hidden_states[1] + hidden_states[-1]) / 2, attention_mask)
    raise ValueError(f"task.pooling must be one of {POOLINGS}, got {pooling!r}")


class BiEncoder(TaskModule):
    """Siamese sentence encoder; `loss` is any pair loss of lit_models/losses.py taking (u, v, labels)."""

    def __init__(self, *, pooling: str = "mean", **common):
        if pooling not in POOLINGS:
            raise ValueError(f"task.pooling must be one of {POOLINGS}, got {pooling!r}")
        super().__init__(**common)
        self.pooling = pooling
        self.save_hyperparameters({"pooling": pooling, "monitor": self.monitor, "monitor_mode": self.monitor_mode})
        self.val_spearman, self.test_spearman = SpearmanCorrCoef(), SpearmanCorrCoef()

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return pool(self.backbone(input_ids, attention_mask), attention_mask, self.pooling)

    def pair_embeddings(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch stacks first sentences then second sentences: one encoder pass for both."""
        return self.embed(batch["input_ids"], batch["attention_mask"]).chunk(2)

    def training_step(self, batch, batch_idx):
        u, v = self.pair_embeddings(batch)
        loss = self.loss(u, v, batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def _evaluate(self, batch, metric: SpearmanCorrCoef, name: str):
        u, v = self.pair_embeddings(batch)
        metric.update(F.cosine_similarity(u.float(), v.float(), dim=-1), batch["labels"])
        self.log(name, metric, prog_bar=True, batch_size=len(batch["labels"]))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_spearman, "val/spearman")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_spearman, "test/spearman")
