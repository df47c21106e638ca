"""task=classifier: one text (or text pair, joined by [SEP]) -> one of C classes, as in Su Jianlin's CLUE
baselines (kexue.fm/archives/8739): the last layer's [CLS] vector, dropout, a Dense softmax layer.

    p(c | x) = softmax(W · dropout(h_[CLS](x)) + b)_c,    W [C, d],    loss = cross-entropy (`loss=cross_entropy`)

Data: data=afqmc|tnews|iflytek|ocnli|cmnli|csl|wsc (datamodules/clue.py), whose `task_inputs` give C and the
label names. The CLUE metric is accuracy; macro F1 is logged beside it.
"""
from __future__ import annotations

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lit_models.base import TaskModule
from lit_models.components.pooling import POOLINGS, pool
from lit_models.components.init import initialize


class Classifier(TaskModule):
    """A softmax head on the pooled encoder output.

    Logs `train/loss`, `{val,test}/loss`, `{val,test}/accuracy` and `{val,test}/macro_f1`; predict_step returns
    one {"index", "label": class id, "probabilities": [C floats]} per example.

    Args:
        num_labels: C, the number of classes (from the data).
        label_names: the classes' names (from the data), kept with the checkpoint's hyperparameters.
        pooling: cls (the post) | mean | first_last_avg, as in lit_models/bi_encoder.py.
        dropout: on the pooled vector, before the head.
    """

    def __init__(self, *, num_labels: int, label_names: list[str] | None = None, pooling: str = "cls",
                 dropout: float = 0.1, backbone: nn.Module, init, **common):
        if num_labels < 2:
            raise ValueError(f"task=classifier needs at least 2 classes, the data gives num_labels={num_labels}")
        if label_names is not None and len(label_names) != num_labels:
            raise ValueError(f"{len(label_names)} label_names for num_labels={num_labels}")
        if pooling not in POOLINGS:
            raise ValueError(f"task.pooling must be one of {POOLINGS}, got {pooling!r}")
        super().__init__(backbone=backbone, init=init, **common)
        self.pooling = pooling
        label_names = None if label_names is None else [str(name) for name in label_names]  # no ListConfig in ckpt
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.hidden_size, num_labels))
        initialize(self.head, init)  # built after TaskModule.__init__ drew the other new modules
        self.save_hyperparameters({"num_labels": num_labels, "label_names": label_names, "pooling": pooling,
                                   "dropout": dropout, "monitor": self.monitor, "monitor_mode": self.monitor_mode})
        self.metrics = nn.ModuleDict({
            f"{stage}_{name}": metric(num_classes=num_labels, average=average)
            for stage in ("val", "test")
            for name, metric, average in (("accuracy", MulticlassAccuracy, "micro"),
                                          ("macro_f1", MulticlassF1Score, "macro"))})

    def forward(self, batch) -> torch.Tensor:
        """Logits [B, C]."""
        hidden = self.backbone(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return self.head(pool(hidden, batch["attention_mask"], self.pooling))

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        logits, labels = self(batch), batch["labels"]
        self.log(f"{stage}/loss", self.loss(logits, labels), batch_size=len(labels), sync_dist=True)
        predicted = logits.argmax(-1)
        for name in ("accuracy", "macro_f1"):
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(predicted, labels)
            self.log(f"{stage}/{name}", metric, prog_bar=name == "accuracy", batch_size=len(labels))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx) -> list[dict]:
        probabilities = self(batch).float().softmax(-1)
        return [{"index": int(index), "label": int(p.argmax()), "probabilities": p.tolist()}
                for index, p in zip(batch["index"].tolist(), probabilities.cpu())]
