"""task=masked_lm: pretrain a from-scratch encoder with BERT's masked language model, then save it for fine-tuning.

The head is BERT's, whose extra Dense+LayerNorm kexue.fm/archives/8747 explains: with the small (0.02)
init, logits against the embedding matrix start near 0, and the model wants to scale them up; without a
head of its own the fastest way is the gamma of the encoder's last LayerNorm, which would leave the last
layer out of scale with the others. Dense+LN gives that gamma a place outside the encoder. The data are
data=corpus (datamodules/corpus.py: dynamic 80/10/10 masking, optionally whole words as in
kexue.fm/archives/9052); at the end of fit the encoder is written to `<default_root_dir>/backbone.pt`,
which `backbone.checkpoint=` loads.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lit_models.base import Step, TaskModule
from lit_models.components.heads import MLMHead

log = logging.getLogger(__name__)
BACKBONE_FILE = "backbone.pt"


class MaskedLM(TaskModule):
    """Masked-LM pretraining of a from-scratch backbone (`backbone=scratch_*`), with `loss=lm`.

    Logits are computed only at the predicted positions (≈15% of the tokens), which saves most of the [·, V]
    product. Packed rows (data.packing=true) reach the backbone with their `segment_ids`. Logs `{train,val,test}/loss` (mean cross-entropy per predicted token) and
    `{val,test}/accuracy` (share of predicted tokens whose argmax is the original). At the end of fit,
    the encoder weights of the best checkpoint (on `monitor`; the final weights when no checkpoint was
    kept) are saved as `backbone.pt` = {"encoder": state_dict, "config": TransformerConfig as a dict}.
    """

    LOSS_INPUTS = ("token_logits",)
    DATA_KINDS = ("corpus",)
    SCRATCH_ONLY = True
    CUDA_GRAPHS = True   # masked positions are host-counted indices in a few padded counts: no sync, few shapes

    def __init__(self, *, activation: str = "gelu", **common):
        self.activation = activation
        super().__init__(**common)

    def build_head(self) -> nn.Module:
        encoder = self.backbone.encoder
        return MLMHead(self.backbone.hidden_size, encoder.token_embedding.num_embeddings, self.activation,
                       encoder.cfg.layer_norm_eps)

    def make_metrics(self, stage: str) -> dict:
        vocab = self.backbone.encoder.token_embedding.num_embeddings
        return {"accuracy": MulticlassAccuracy(num_classes=vocab, average="micro")}

    def masked_logits(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [M, V], labels [M]) at the batch's `masked_positions` [M] (datamodules/corpus.py): flat indices
        counted on the host, so nothing here waits for the GPU as boolean indexing would. The few unused slots
        carry the label ignore_index, which neither the loss nor the accuracy counts."""
        hidden = self.backbone(batch["input_ids"], batch["attention_mask"], segment_ids=batch.get("segment_ids"))[-1]
        at_masks = hidden.flatten(0, 1)[batch["masked_positions"]]
        return self.head(at_masks, self.backbone.encoder.token_embedding.weight), batch["masked_labels"]

    def step(self, batch, stage: str) -> Step:
        logits, labels = self.masked_logits(batch)
        predicted = labels != self.loss.ignore_index
        if stage == "train":   # the logged mean weighs batches by rows: counting labels would wait for the GPU
            return Step(self.loss(logits, labels), size=len(batch["input_ids"]))
        return Step(self.loss(logits, labels), (logits[predicted], labels[predicted]), int(predicted.sum()))

    def best_encoder_state(self) -> dict[str, torch.Tensor]:
        """The encoder's state_dict from the best checkpoint, or the current one when there is none."""
        best = next((c for c in self.trainer.checkpoint_callbacks if c.monitor), None)   # not last.ckpt
        if best is not None and best.best_model_path:
            state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            prefix = "backbone.encoder."
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        return {k: v.detach().cpu().clone() for k, v in self.backbone.encoder.state_dict().items()}

    def on_fit_end(self):
        if not self.trainer.is_global_zero:
            return
        path = Path(self.trainer.default_root_dir) / BACKBONE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"encoder": self.best_encoder_state(), "config": asdict(self.backbone.encoder.cfg)}, path)
        log.info("pretrained encoder saved to %s (fine-tune: backbone.checkpoint=%s)", path, path)
