"""task=global_pointer: GlobalPointer span scoring for NER (CLUENER) and extractive reading comprehension (CMRC 2018).

GlobalPointer (kexue.fm/archives/8373) scores every token pair (i, j), i ≤ j, as "tokens i…j form an entity of
type α", so nested and flat entities are decoded alike: every span with s_α(i, j) > 0. Efficient GlobalPointer
(kexue.fm/archives/8877) shares the pair scoring between types and adds a cheap per-type term. The CLUE
baselines (kexue.fm/archives/8739) use it for CLUENER and, with a single type, for CMRC 2018: each window of a
long context scores its best span, a window without the answer points to (0, 0) = [CLS], and the question's
answer is the best-scoring span over its windows.

Batches (datamodules/cluener.py, datamodules/cmrc2018.py) hold, besides input_ids/attention_mask:
    span_mask [B, L]: tokens that may begin or end a span (text tokens; for CMRC also the [CLS] of "no answer");
    offsets [B, L, 2]: each token's characters [start, end) in the text or context (−1: none);
    NER: labels [B, T, L, L] (gold token spans), gold_spans [N, 4] (example, type, first char, last char) —
        every gold entity, also those no token span matches, so that they count as missed;
    CMRC: labels [R, 2] (start, end token of the answer in each window, (0, 0) when it is not inside),
        question [R] (which question of the batch a window belongs to), contexts and answers (strings).
"""
from __future__ import annotations

import torch
from torch import nn

from lit_models.base import Step, TaskModule
from lit_models.components.heads import HEADS
from lit_models.components.losses import CrossEntropyLoss
from lit_models.components.span_metrics import CMRCScore, EntityF1, unique_rows


def entity_spans(scores: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Decoded entities [N, 4] = (example, type, first char, last char): every span with s_α(i, j) > 0."""
    example, kind, first, last = (scores > 0).nonzero(as_tuple=True)
    spans = torch.stack([example, kind, offsets[example, first, 0], offsets[example, last, 1] - 1], dim=1)
    return unique_rows(spans)


def best_window_spans(scores: torch.Tensor, span_mask: torch.Tensor, max_tokens: int | None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per window, the best answer span (score, start, end) over i ≤ j < i + max_tokens, [CLS] (position 0,
    "no answer here") excluded; scores [R, 1, L, L] as masked by the head."""
    scores = scores[:, 0]
    length = scores.shape[-1]
    allowed = span_mask.bool().clone()
    allowed[:, 0] = False
    band = torch.ones(length, length, dtype=torch.bool, device=scores.device).triu()
    if max_tokens:
        band &= ~band.triu(diagonal=max_tokens)
    valid = allowed[:, :, None] & allowed[:, None, :] & band
    best, where = scores.masked_fill(~valid, float("-inf")).flatten(1).max(dim=1)
    return best, where // length, where % length


class GlobalPointerTask(TaskModule):
    """GlobalPointer head on the backbone's last hidden states, in one of two modes the data decides:

    NER (data=cluener; `entity_types` its types): spans with s > 0 are the entities; `val/precision`,
    `val/recall`, `val/f1` are entity-level (exact (type, first char, last char) match, 8373), computed in
    characters against every gold entity, so a gold span no token span matches counts as missed.
    Loss: loss=multilabel_ce.

    Span extraction (data=cmrc2018; `span_extraction` true, one type "answer"): the answer of a window is its
    best span over context tokens no longer than `max_answer_tokens`; a question's answer is the best-scoring
    span over its windows, mapped to characters of the context; `val/em`, `val/f1` are the official CMRC 2018
    scores (lit_models/components/span_metrics.py). Loss: loss=multilabel_ce (one gold span per window, (0, 0) = [CLS]
    when the answer is not inside), or loss=cross_entropy: a softmax over all spans of the window, which is
    what the post's CMRC 2018 code trains with.

    Args:
        head: global_pointer (8373) | efficient_global_pointer (8877).
        head_size: d of q and k (64 in the posts).
        entity_types: the types' names, from the data.
        span_extraction: CMRC mode, from the data.
        max_answer_tokens: longest answer decoded, in tokens (null: any length; the post's code sets none); 64
            keeps 99.7% of the CMRC 2018 dev references in bert-base-chinese tokens (the longest has 85), where
            30, a common SQuAD choice, would keep 94%.
    """

    LOSS_INPUTS = ("span_scores", "logits")
    DATA_KINDS = ("spans",)
    PAIR_ENCODING = "joint"
    EVAL_LOSS = False

    def __init__(self, *, head: str = "global_pointer", head_size: int = 64, max_answer_tokens: int | None = 64,
                 **common):
        if head not in HEADS:
            raise ValueError(f"task.head must be one of {sorted(HEADS)}, got {head!r}")
        self.head_name, self.head_size, self.max_answer_tokens = head, head_size, max_answer_tokens
        super().__init__(**common)
        if isinstance(self.loss, CrossEntropyLoss) and not self.span_extraction:
            raise ValueError("loss=cross_entropy picks one span per window: it fits span extraction (data=cmrc2018); "
                             "NER has any number of entities per text, use loss=multilabel_ce")

    @property
    def entity_types(self) -> list[str]:
        return list(self.data_info.require("entity_types", "global_pointer"))

    @property
    def span_extraction(self) -> bool:
        return self.data_info.span_extraction

    def build_head(self) -> nn.Module:
        if self.span_extraction and len(self.entity_types) != 1:
            raise ValueError(f"span extraction scores one span type, got {self.entity_types}")
        return HEADS[self.head_name](self.backbone.hidden_size, len(self.entity_types), self.head_size)

    def make_metrics(self, stage: str) -> dict:
        return {"cmrc": CMRCScore()} if self.span_extraction else {"entities": EntityF1()}

    def forward(self, batch) -> torch.Tensor:
        """Masked span scores [B, T, L, L] (float32)."""
        hidden = self.backbone(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))[-1]
        return self.head(hidden, batch["span_mask"])

    def loss_of(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """NER: labels are the gold spans [B, T, L, L]. Span extraction: labels [R, 2], each window's gold span."""
        if not self.span_extraction:
            return self.loss(scores, labels)
        length = scores.shape[-1]
        if isinstance(self.loss, CrossEntropyLoss):  # one class per span (i, j), numbered i·L + j
            return self.loss(scores[:, 0].flatten(1), labels[:, 0] * length + labels[:, 1])
        targets = torch.zeros_like(scores, dtype=torch.bool)
        targets[torch.arange(len(labels), device=labels.device), 0, labels[:, 0], labels[:, 1]] = True
        return self.loss(scores, targets)

    def step(self, batch, stage: str) -> Step:
        scores = self(batch)
        if stage == "train":
            return Step(self.loss_of(scores, batch["labels"]), size=len(batch["labels"]))
        if self.span_extraction:
            texts = [context[first:end] for context, (first, end, _) in
                     zip(batch["contexts"], self.question_answers(batch, scores))]
            return Step(None, (texts, batch["answers"]), len(texts))
        return Step(None, (entity_spans(scores, batch["offsets"]), batch["gold_spans"]), len(batch["index"]))

    def question_answers(self, batch, scores: torch.Tensor) -> list[tuple[int, int, float]]:
        """Per question of the batch: (first char, end char) of its best span over its windows, and its score."""
        best, start, end = best_window_spans(scores, batch["span_mask"], self.max_answer_tokens)
        answers = []
        for question in range(len(batch["index"])):
            rows = (batch["question"] == question).nonzero().squeeze(1)
            row = rows[best[rows].argmax()]
            offsets = batch["offsets"][row]
            answers.append((int(offsets[start[row], 0]), int(offsets[end[row], 1]), float(best[row])))
        return answers

    def predict_step(self, batch, batch_idx) -> list[dict]:
        """One dict per example: "index" and, for NER, "entities" [[type, first char, last char], …];
        for span extraction, the answer's characters "start", "end" (exclusive) and its "score"."""
        scores = self(batch)
        indices = batch["index"].tolist()
        if self.span_extraction:
            return [{"index": index, "start": first, "end": end, "score": score}
                    for index, (first, end, score) in zip(indices, self.question_answers(batch, scores))]
        entities = [[] for _ in indices]
        for example, kind, first, last in entity_spans(scores, batch["offsets"]).tolist():
            entities[example].append([kind, first, last])
        return [{"index": index, "entities": found} for index, found in zip(indices, entities)]
