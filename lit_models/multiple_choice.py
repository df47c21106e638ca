"""task=multiple_choice: C3 and CHID as one score per (text, option) pair, softmax over the options.

kexue.fm/archives/8739 (CLUE baselines): each option is joined with the passage (C3: and the question;
CHID: the candidate idiom with the passage around its blank) and encoded on its own; a Dense(1) on [CLS]
gives its score s_k, and the question's prediction is softmax over its options,

    p(k) = exp(s_k) / Σ_{j ∈ options} exp(s_j),   loss = −log p(answer)   (loss=cross_entropy)

with absent options (a C3 question with 2 or 3 of 4 options) at s = −∞. For CHID, the blanks of one line
share ten candidates and never share an answer; choosing each blank's argmax can repeat an idiom, so
with `hungarian` the blanks of a group are assigned distinct candidates maximizing Σ log p, the assignment
problem solved by scipy.optimize.linear_sum_assignment (the post: ≈ +6% accuracy).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.utilities import dim_zero_cat

from lit_models.base import TaskModule
from lit_models.components.init import initialize

ABSENT_SCORE = -1e9  # an absent option (−∞) in the assignment: finite, so scipy sees a feasible problem


def assign_distinct(log_probs: np.ndarray) -> np.ndarray:
    """Distinct options for m questions over the same n options, maximizing the summed log-probability:

        argmax_{σ injective} Σ_i log p_i(σ(i))      (linear_sum_assignment on the m × n matrix)

    With more questions than options (m > n) only n can be distinct; the others keep their argmax.
    """
    scores = np.nan_to_num(np.asarray(log_probs, dtype=np.float64), neginf=ABSENT_SCORE)
    choices = scores.argmax(1)
    rows, columns = linear_sum_assignment(scores, maximize=True)
    choices[rows] = columns
    return choices


def choose_options(log_probs: torch.Tensor, groups: torch.Tensor, distinct: bool) -> torch.Tensor:
    """Each question's option: the argmax of log_probs [N, C], or with `distinct` the assignment of
    `assign_distinct` within each group of questions (groups [N])."""
    choices = log_probs.argmax(-1).cpu().numpy()
    if distinct:
        groups = groups.cpu().numpy()
        order = np.argsort(groups, kind="stable")
        starts = np.unique(groups[order], return_index=True)[1]
        for rows in np.split(order, starts[1:]):
            if len(rows) > 1:
                choices[rows] = assign_distinct(log_probs[rows].float().cpu().numpy())
    return torch.as_tensor(choices, dtype=torch.long)


class AssignedAccuracy(Metric):
    """Accuracy of `choose_options(distinct=True)` over the whole split: the blanks of a group may fall in
    different batches (or on different ranks), so the log-probabilities are kept and decided in compute().
    An example seen twice (a distributed sampler's padding) counts once."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        for name in ("log_probs", "labels", "index", "group"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, log_probs: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, group: torch.Tensor):
        self.log_probs.append(log_probs.float())
        self.labels.append(labels)
        self.index.append(index)
        self.group.append(group)

    def compute(self) -> torch.Tensor:
        index = dim_zero_cat(self.index).tolist()
        first = torch.tensor(list({example: row for row, example in reversed(list(enumerate(index)))}.values()))
        log_probs, labels, group = (dim_zero_cat(s)[first] for s in (self.log_probs, self.labels, self.group))
        choices = choose_options(log_probs, group, distinct=True).to(labels.device)
        return (choices == labels).float().mean()


class MultipleChoice(TaskModule):
    """Score each (text, option) sequence from [CLS] with a Linear(hidden, 1); train with `loss=cross_entropy`.

    Batches come from datamodules/multiple_choice.py: the N existing options' sequences, `choice_mask`
    [B, num_choices] placing them, `labels`, `index` and `group` [B].

    Args:
        num_choices: options per question (C3: 4; CHID: 10, FewCLUE's 7); from the data.
        hungarian: decide the questions of a group together, with distinct answers (CHID). Then
            `{val,test}/accuracy` is that decision's and `{val,test}/accuracy_independent` the argmax's.
    """

    def __init__(self, *, num_choices: int, hungarian: bool = False, backbone: nn.Module, init, **common):
        super().__init__(backbone=backbone, init=init, **common)
        self.num_choices, self.hungarian = num_choices, hungarian
        self.head = nn.Linear(self.backbone.hidden_size, 1)
        initialize(self.head, init)  # built after TaskModule.__init__ drew the other new modules
        self.save_hyperparameters({"num_choices": num_choices, "hungarian": hungarian, "monitor": self.monitor,
                                   "monitor_mode": self.monitor_mode})
        self.accuracy = nn.ModuleDict({stage: self.new_accuracy() for stage in ("val", "test")})
        if hungarian:
            self.independent = nn.ModuleDict({stage: self.argmax_accuracy() for stage in ("val", "test")})

    def argmax_accuracy(self) -> MulticlassAccuracy:
        return MulticlassAccuracy(num_classes=self.num_choices, average="micro")

    def new_accuracy(self):
        return AssignedAccuracy() if self.hungarian else self.argmax_accuracy()

    def choice_logits(self, batch) -> torch.Tensor:
        """[B, num_choices]: each existing option's score, −∞ where the question has no such option."""
        cls = self.backbone(batch["input_ids"], batch["attention_mask"])[-1][:, 0]
        scores = self.head(cls).squeeze(-1).float()
        mask = batch["choice_mask"]
        if mask.sum() != len(scores):
            raise ValueError(f"choice_mask marks {int(mask.sum())} options, the batch has {len(scores)} sequences")
        return scores.new_full(mask.shape, float("-inf")).masked_scatter(mask, scores)

    def training_step(self, batch, batch_idx):
        loss = self.loss(self.choice_logits(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def _evaluate(self, batch, stage: str):
        logits, labels = self.choice_logits(batch), batch["labels"]
        size = len(labels)
        self.log(f"{stage}/loss", self.loss(logits, labels), batch_size=size)
        accuracy = self.accuracy[stage]
        if self.hungarian:
            accuracy.update(logits.log_softmax(-1), labels, batch["index"], batch["group"])
            self.independent[stage].update(logits.argmax(-1), labels)
            self.log(f"{stage}/accuracy_independent", self.independent[stage], batch_size=size)
        else:
            accuracy.update(logits.argmax(-1), labels)
        self.log(f"{stage}/accuracy", accuracy, prog_bar=True, batch_size=size)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx):
        """Per question: its index and group, the options' log-probabilities, and whether the DataModule decides
        them by group (`hungarian`; groups may span batches and ranks, so the decision waits for the split)."""
        log_probs = self.choice_logits(batch).log_softmax(-1)
        return [{"index": int(i), "group": int(g), "log_probs": row.tolist(), "hungarian": self.hungarian}
                for i, g, row in zip(batch["index"], batch["group"], log_probs.cpu())]
