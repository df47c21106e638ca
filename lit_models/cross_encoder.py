"""task=cross_encoder: an interactive similarity model, one score per sentence pair (kexue.fm/archives/9341).

Both sentences go through the encoder as one sequence, [CLS] a [SEP] b [SEP], and a linear head on the last
layer's [CLS] gives a scalar s per pair, with no activation. Post 9341 trains s with CoSENT's ranking loss,

    loss = log(1 + Σ_{y_i < y_j} exp(s_i − s_j))          (loss=cosent; only the order of the labels counts)

and compares it with the usual 2-class softmax cross-entropy over (0, s), i.e. sigmoid(s) with binary CE
(loss=cross_entropy; graded labels binarized at label_max / 2): about equal (BERT Spearman avg 67.10 vs 66.77).
Evaluation follows kexue.fm/archives/8860: Spearman of s vs gold, and accuracy at the threshold chosen on
valid, applied unchanged to test.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics import SpearmanCorrCoef
from torchmetrics.classification import BinaryAccuracy

from lit_models.base import TaskModule
from lit_models.components.distributed import gather_with_grad, world_size
from lit_models.components.init import initialize
from lit_models.components.losses import CoSENTLoss, CrossEntropyLoss, similar
from lit_models.components.threshold import ThresholdSearch

SCORE_LOSSES = {"cosent": CoSENTLoss, "cross_entropy": CrossEntropyLoss}
warnings.filterwarnings("ignore", message="Metric `SpearmanCorrcoef` will save all targets")


class CrossEncoder(TaskModule):
    """Scores a pair from the [CLS] vector of its joint encoding: s = w·dropout(h_[CLS]) + b.

    The head is drawn by `init`. Any label dtype works (STS-B float scores 0-5, CLUE long 0/1 labels).
    Logs val/spearman, val/accuracy and val/threshold: each validation epoch picks the accuracy-optimal
    threshold on valid (`best_threshold`, lit_models/components/threshold.py) and keeps it in the `threshold` buffer,
    so the checkpoint saved for that epoch carries it; test/accuracy applies the tested checkpoint's
    threshold (with train=false: 0, i.e. p(similar) = sigmoid(s) > 0.5 for the cross-entropy baseline).
    Prediction: "index", "score" = s and "label" = 1 if s > threshold else 0, per pair.

    Args:
        input_format: must be "joint": the DataModule gives each pair as one sequence.
        label_max: labels lie in [0, label_max]; a pair counts as similar iff label > label_max / 2.
        dropout: on the [CLS] vector, during training.
    """

    def __init__(self, *, backbone: nn.Module, loss: nn.Module, init, input_format: str = "joint",
                 label_max: float = 1.0, dropout: float = 0.1, **common):
        if input_format != "joint":
            raise ValueError(f"task=cross_encoder reads each pair as one sequence: task.input_format must be "
                             f"'joint', got {input_format!r}")
        if not isinstance(loss, tuple(SCORE_LOSSES.values())):
            raise ValueError(f"task=cross_encoder trains one score per pair with loss={'|'.join(SCORE_LOSSES)}, "
                             f"got {type(loss).__name__}")
        super().__init__(backbone=backbone, loss=loss, init=init, **common)
        self.label_max = label_max
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.hidden_size, 1)
        initialize(self.head, init)  # built after TaskModule.__init__ drew the other new modules
        self.register_buffer("threshold", torch.tensor(0.0, dtype=torch.float64))  # float64: a midpoint stays one
        self.save_hyperparameters({"input_format": input_format, "label_max": label_max, "dropout": dropout,
                                   "monitor": self.monitor, "monitor_mode": self.monitor_mode})
        self.val_spearman, self.test_spearman = SpearmanCorrCoef(), SpearmanCorrCoef()
        self.val_threshold, self.test_accuracy = ThresholdSearch(), BinaryAccuracy()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The score s [B] of each pair of the batch."""
        hidden = self.backbone(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))[-1]
        return self.head(self.dropout(hidden[:, 0])).squeeze(-1)

    def similar(self, labels: torch.Tensor) -> torch.Tensor:
        return similar(labels, self.label_max)

    def loss_batch(self, scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Under DDP CoSENT ranks the pairs of every rank (as the bi-encoder does, lit_models/components/distributed.py)."""
        if getattr(self.loss, "global_batch", False) and world_size() > 1:
            return gather_with_grad(scores), gather_with_grad(labels)
        return scores, labels

    def training_step(self, batch, batch_idx):
        loss = self.loss(*self.loss_batch(self(batch), batch["labels"]))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch, batch_idx):
        scores, labels = self(batch).float(), batch["labels"]
        self.val_spearman.update(scores, labels.float())
        self.val_threshold.update(scores, self.similar(labels))
        self.log("val/spearman", self.val_spearman, prog_bar=True, batch_size=len(labels))

    def on_validation_epoch_end(self):
        threshold, accuracy = self.val_threshold.compute()
        self.val_threshold.reset()
        self.threshold.fill_(threshold)
        self.log("val/accuracy", accuracy, prog_bar=True, sync_dist=True)   # the same on every rank
        self.log("val/threshold", threshold.float(), sync_dist=True)

    def test_step(self, batch, batch_idx):
        scores, labels = self(batch).float(), batch["labels"]
        self.test_spearman.update(scores, labels.float())
        self.test_accuracy.update(self.predicted(scores), self.similar(labels).long())
        self.log("test/spearman", self.test_spearman, batch_size=len(labels))
        self.log("test/accuracy", self.test_accuracy, batch_size=len(labels))

    def predicted(self, scores: torch.Tensor) -> torch.Tensor:
        """1 (similar) where s > threshold, else 0."""
        return (scores.double() > self.threshold).long()

    def predict_step(self, batch, batch_idx) -> list[dict]:
        scores = self(batch).float()
        return [{"index": int(i), "score": float(s), "label": int(p)}
                for i, s, p in zip(batch["index"], scores, self.predicted(scores))]
