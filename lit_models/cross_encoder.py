"""task=cross_encoder: an interactive similarity model, one score per sentence pair (kexue.fm/archives/9341).

Both sentences go through the encoder as one sequence, [CLS] a [SEP] b [SEP], and a linear head on the last
layer's [CLS] gives a scalar s per pair, with no activation. Post 9341 trains s with CoSENT's ranking loss,

    loss = log(1 + Σ_{y_i < y_j} exp(s_i − s_j))          (loss=cosent; only the order of the labels counts)

and compares it with the usual 2-class softmax cross-entropy over (0, s), i.e. sigmoid(s) with binary CE
(loss=cross_entropy; graded labels, scaled to [0, 1] by the data, binarized at 0.5): about equal (BERT Spearman avg 67.10 vs 66.77).
Evaluation follows kexue.fm/archives/8860: Spearman of s vs gold, and accuracy at the threshold chosen on
valid, applied unchanged to test.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics import SpearmanCorrCoef
from torchmetrics.classification import BinaryAccuracy

from lit_models.base import Step, TaskModule
from lit_models.components.distributed import loss_batch
from lit_models.components.losses import similar
from lit_models.components.threshold import ThresholdSearch

warnings.filterwarnings("ignore", message="Metric `SpearmanCorrcoef` will save all targets")


class CrossEncoder(TaskModule):
    """Scores a pair from the [CLS] vector of its joint encoding: s = w·dropout(h_[CLS]) + b.

    The head is drawn by `init`. Logs val/spearman, val/accuracy and val/threshold: each validation epoch
    picks the accuracy-optimal threshold on valid (`best_threshold`, lit_models/components/threshold.py)
    and keeps it in the `threshold` buffer, so the checkpoint saved for that epoch carries it; test/accuracy
    applies the tested checkpoint's threshold (with train=false: 0, i.e. p(similar) = sigmoid(s) > 0.5 for
    the cross-entropy baseline). Prediction: "index", "score" = s and "label" = 1 if s > threshold else 0.

    Args:
        dropout: on the [CLS] vector, during training.
    """

    LOSS_INPUTS = ("pair_scores",)
    DATA_KINDS = ("joint_pairs",)
    CUDA_GRAPHS = True
    PAIR_ENCODING = "joint"
    EVAL_LOSS = False

    def __init__(self, *, dropout: float = 0.1, **common):
        self.dropout_p = dropout
        super().__init__(**common)
        self.register_buffer("threshold", torch.tensor(0.0, dtype=torch.float64))  # float64: a midpoint stays one

    def build_head(self) -> nn.Module:
        return nn.Sequential(nn.Dropout(self.dropout_p), nn.Linear(self.backbone.hidden_size, 1))

    def make_metrics(self, stage: str) -> dict:
        if stage == "val":
            return {"spearman": SpearmanCorrCoef(), "search": ThresholdSearch()}
        return {"spearman": SpearmanCorrCoef(), "accuracy": BinaryAccuracy()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The score s [B] of each pair of the batch."""
        hidden = self.backbone(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))[-1]
        return self.head(hidden[:, 0]).squeeze(-1)

    def loss_batch(self, scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Under DDP CoSENT ranks the pairs of every rank (as the bi-encoder does, components/distributed.py)."""
        return loss_batch(self.loss, scores, labels)

    def step(self, batch, stage: str) -> Step:
        scores, labels = self(batch), batch["labels"]
        if stage == "train":
            return Step(self.loss(*self.loss_batch(scores, labels)), size=len(labels))
        scores, positive = scores.float(), similar(labels)
        inputs = {"spearman": (scores, labels.float()), "search": (scores, positive),
                  "accuracy": (self.predicted(scores), positive.long())}
        return Step(None, inputs, len(labels))

    def on_metrics(self, stage: str, values: dict) -> None:
        if stage == "val":
            self.threshold.fill_(values["threshold"])

    def predicted(self, scores: torch.Tensor) -> torch.Tensor:
        """1 (similar) where s > threshold, else 0."""
        return (scores.double() > self.threshold).long()

    def predict_step(self, batch, batch_idx) -> list[dict]:
        scores = self(batch).float()
        return [{"index": int(i), "score": float(s), "label": int(p)}
                for i, s, p in zip(batch["index"], scores, self.predicted(scores))]
