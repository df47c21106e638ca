"""task=causal_lm: a left-to-right language model over rows of a token stream (data=documents), for the length
extrapolation claims (kexue.fm/archives/9431, 9577, and log-n scaling of 8823).

    loss = −(1/N) Σ_t log p(x_{t+1} | x_≤t),   p(· | …) = softmax(logits_t)

over the N target positions (position t is scored against token t + 1; padding and tokens labelled −100 carry
no label). The backbone is our own Transformer run with `causal=True` (backbone=scratch_*), and the LM head is
BERT's MLM head on the tied token embedding (MLMHead). Validation and test report the split's perplexity and
next-token accuracy; with `data.eval_max_length` longer than `data.max_length`, they are those of a model
reading beyond its training length. task=dialogue_lm is this model on dialogues, plus reply generation.
"""
from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.text import Perplexity

from lit_models.base import Step, TaskModule
from lit_models.components.heads import MLMHead
from text.padding import IGNORE_INDEX


class NextTokenAccuracy(MeanMetric):
    """Share of the target positions whose argmax logit is the next token, over the whole split."""

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        super().update((logits.argmax(-1) == labels).float().flatten())


class CausalLM(TaskModule):
    """A causal LM; `loss` is TokenCrossEntropy (loss=lm) on (logits, next tokens)."""

    LOSS_INPUTS = ("token_logits",)
    DATA_KINDS = ("documents", "dialogues")
    SCRATCH_ONLY = True

    def build_head(self) -> nn.Module:
        return MLMHead(self.backbone.hidden_size, self.backbone.encoder.token_embedding.num_embeddings)

    def make_metrics(self, stage: str) -> dict:
        """Perplexity of the whole split: exp of the token-weighted mean NLL (not a mean of batch values); the
        next-token accuracy over the same positions."""
        return {"perplexity": Perplexity(ignore_index=IGNORE_INDEX), "accuracy": NextTokenAccuracy()}

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states [B, L, d] of the causal backbone: position t sees only positions ≤ t."""
        return self.backbone(input_ids, attention_mask, token_type_ids, causal=True)[-1]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits [..., V] of hidden states [..., d]."""
        return self.head(hidden, self.backbone.encoder.token_embedding.weight)

    def targets(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, V] and labels [N] of the N positions whose next token is a target (the shift by one)."""
        hidden = self.hidden(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))[:, :-1]
        labels = batch["labels"][:, 1:]
        scored = labels != IGNORE_INDEX
        return self.logits(hidden[scored]), labels[scored]

    def step(self, batch, stage: str) -> Step:
        logits, labels = self.targets(batch)
        # size = tokens: the epoch's loss is the token-weighted mean, the log of the perplexity
        metric_inputs = {"perplexity": (logits[None].float(), labels[None]), "accuracy": (logits, labels)}
        return Step(self.loss(logits, labels), metric_inputs, len(labels))
