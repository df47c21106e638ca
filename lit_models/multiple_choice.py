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

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.utilities import dim_zero_cat

from lit_models.base import Step, TaskModule
from text.choices import choose_options


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

    LOSS_INPUTS = ("logits",)
    DATA_KINDS = ("choices",)
    PAIR_ENCODING = "joint"

    def __init__(self, *, hungarian: bool | None = None, **common):
        self.hungarian_option = hungarian
        super().__init__(**common)

    @property
    def num_choices(self) -> int:
        return self.data_info.require("num_choices", "multiple_choice")

    @property
    def hungarian(self) -> bool:
        """task.hungarian, or as the data says (CHID's blanks of a passage take distinct idioms)."""
        return self.data_info.distinct_answers if self.hungarian_option is None else self.hungarian_option

    def build_head(self) -> nn.Module:
        return nn.Linear(self.backbone.hidden_size, 1)

    def make_metrics(self, stage: str) -> dict:
        argmax = MulticlassAccuracy(num_classes=self.num_choices, average="micro")
        if self.hungarian:
            return {"accuracy": AssignedAccuracy(), "accuracy_independent": argmax}
        return {"accuracy": argmax}

    def choice_logits(self, batch) -> torch.Tensor:
        """[B, num_choices]: each existing option's score, −∞ where the question has no such option."""
        cls = self.backbone(batch["input_ids"], batch["attention_mask"])[-1][:, 0]
        scores = self.head(cls).squeeze(-1).float()
        mask = batch["choice_mask"]
        if mask.sum() != len(scores):
            raise ValueError(f"choice_mask marks {int(mask.sum())} options, the batch has {len(scores)} sequences")
        return scores.new_full(mask.shape, float("-inf")).masked_scatter(mask, scores)

    def step(self, batch, stage: str) -> Step:
        logits, labels = self.choice_logits(batch), batch["labels"]
        chosen = (logits.argmax(-1), labels)
        inputs = {"accuracy": (logits.log_softmax(-1), labels, batch["index"], batch["group"]) if self.hungarian
                  else chosen, "accuracy_independent": chosen}
        return Step(self.loss(logits, labels), inputs, len(labels))

    def predict_step(self, batch, batch_idx):
        """Per question: its index and group, the options' log-probabilities, and whether the DataModule decides
        them by group (`hungarian`; groups may span batches and ranks, so the decision waits for the split)."""
        log_probs = self.choice_logits(batch).log_softmax(-1)
        return [{"index": int(i), "group": int(g), "log_probs": row.tolist(), "hungarian": self.hungarian}
                for i, g, row in zip(batch["index"], batch["group"], log_probs.cpu())]
