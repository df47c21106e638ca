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
from lit_models.components.pooling import check_pooling, encode
from text.info import DataInfo


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
        return classification_head(self.backbone.hidden_size, self.data_info, self.dropout)

    def make_metrics(self, stage: str) -> dict:
        return classification_metrics(self.data_info.num_labels)

    def forward(self, batch) -> torch.Tensor:
        """Logits [B, C]."""
        return classify(self.backbone, self.head, batch, self.pooling)

    def step(self, batch, stage: str) -> Step:
        logits, labels = self(batch), batch["labels"]
        return Step(self.loss(logits, labels), (logits.argmax(-1), labels), len(labels))

    def predict_step(self, batch, batch_idx) -> list[dict]:
        probabilities = self(batch).float().softmax(-1)
        return [{"index": int(index), "label": int(p.argmax()), "probabilities": p.tolist()}
                for index, p in zip(batch["index"].tolist(), probabilities.cpu())]


def classification_head(hidden_size: int, data: DataInfo, dropout: float, task: str = "classifier") -> nn.Module:
    """dropout → Linear [C, d] for the classes of `data` (at least 2)."""
    num_labels = data.require("num_labels", task)
    if num_labels < 2:
        raise ValueError(f"task={task} needs at least 2 classes, data={data.name} has {num_labels}")
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_labels))


def classification_metrics(num_labels: int) -> dict:
    """Accuracy (the CLUE metric) and macro F1, fed (predicted class ids, gold class ids)."""
    return {"accuracy": MulticlassAccuracy(num_classes=num_labels, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes=num_labels, average="macro")}


def classify(backbone, head: nn.Module, batch: dict, pooling: str) -> torch.Tensor:
    """Logits [B, C]: the head on the pooled encoder output of the batch."""
    return head(encode(backbone, batch["input_ids"], batch["attention_mask"], pooling, batch.get("token_type_ids")))
