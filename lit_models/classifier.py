"""task=classifier: one text (or text pair, joined by [SEP]) -> one of C classes, as in Su Jianlin's CLUE
baselines (kexue.fm/archives/8739): the last layer's [CLS] vector, dropout, a Dense softmax layer.

    p(c | x) = softmax(W · dropout(h_[CLS](x)) + b)_c,    W [C, d],    loss = cross-entropy (`loss=cross_entropy`)

Data: data=afqmc|tnews|iflytek|ocnli|cmnli|csl|wsc (datamodules/clue.py), whose DataInfo gives C and the
label names. The CLUE metric is accuracy; macro F1 is logged beside it.
"""
from __future__ import annotations

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lit_models.base import Step, TaskModule
from lit_models.components.pooling import check_pooling, pool


class Classifier(TaskModule):
    """A softmax head on the pooled encoder output.

    Logs `train/loss`, `{val,test}/loss`, `{val,test}/accuracy` and `{val,test}/macro_f1`; predict_step returns
    one {"index", "label": class id, "probabilities": [C floats]} per example. The classes (how many, their
    names) come from the data.

    Args:
        pooling: cls (the post) | pooler | mean | first_last_avg (lit_models/components/pooling.py).
        dropout: on the pooled vector, before the head.
    """

    LOSS_INPUTS = ("logits",)
    DATA_KINDS = ("classification",)
    CUDA_GRAPHS = True
    PAIR_ENCODING = "joint"

    def __init__(self, *, pooling: str = "cls", dropout: float = 0.1, **common):
        check_pooling(pooling, common["backbone"])
        self.pooling, self.dropout = pooling, dropout
        super().__init__(**common)

    def build_head(self) -> nn.Module:
        num_labels = self.data_info.require("num_labels", "classifier")
        if num_labels < 2:
            raise ValueError(f"task=classifier needs at least 2 classes, data={self.data_info.name} has {num_labels}")
        return nn.Sequential(nn.Dropout(self.dropout), nn.Linear(self.backbone.hidden_size, num_labels))

    def make_metrics(self, stage: str) -> dict:
        classes = self.data_info.num_labels
        return {"accuracy": MulticlassAccuracy(num_classes=classes, average="micro"),
                "macro_f1": MulticlassF1Score(num_classes=classes, average="macro")}

    def forward(self, batch) -> torch.Tensor:
        """Logits [B, C]."""
        hidden = self.backbone(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return self.head(pool(hidden, batch["attention_mask"], self.pooling, getattr(self.backbone, "pooler", None)))

    def step(self, batch, stage: str) -> Step:
        logits, labels = self(batch), batch["labels"]
        return Step(self.loss(logits, labels), (logits.argmax(-1), labels), len(labels))

    def predict_step(self, batch, batch_idx) -> list[dict]:
        probabilities = self(batch).float().softmax(-1)
        return [{"index": int(index), "label": int(p.argmax()), "probabilities": p.tolist()}
                for index, p in zip(batch["index"].tolist(), probabilities.cpu())]
