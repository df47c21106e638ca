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

from lit_models.base import TaskModule
from lit_models.components.init import initialize
from lit_models.components.heads import MLMHead

log = logging.getLogger(__name__)
BACKBONE_FILE = "backbone.pt"


class MaskedLM(TaskModule):
    """Masked-LM pretraining of a from-scratch backbone (`backbone=scratch_*`), with `loss=lm`.

    Logits are computed only where a label is set (≈15% of the tokens), which saves most of the [·, V]
    product. Logs `{train,val,test}/loss` (mean cross-entropy per predicted token) and
    `{val,test}/accuracy` (share of predicted tokens whose argmax is the original). At the end of fit,
    the encoder weights of the best checkpoint (on `monitor`; the final weights when no checkpoint was
    kept) are saved as `backbone.pt` = {"encoder": state_dict, "config": TransformerConfig as a dict}.
    """

    def __init__(self, *, backbone: nn.Module, loss: nn.Module, init, activation: str = "gelu", **common):
        if not hasattr(backbone, "encoder"):
            raise ValueError(f"task=masked_lm pretrains our own encoder and saves it as {BACKBONE_FILE}; "
                             f"{type(backbone).__name__} has no `.encoder` (a pretrained Hugging Face model). "
                             f"Use backbone=scratch_tiny (or another scratch_* choice).")
        if not hasattr(loss, "ignore_index"):
            raise ValueError(f"task=masked_lm trains with a token loss (loss=lm), got {type(loss).__name__}")
        super().__init__(backbone=backbone, loss=loss, init=init, **common)
        embedding = self.backbone.encoder.token_embedding
        self.head = MLMHead(self.backbone.hidden_size, embedding.num_embeddings, activation,
                            self.backbone.encoder.cfg.layer_norm_eps)
        initialize(self.head, init)  # built after TaskModule.__init__ drew the other new modules
        self.save_hyperparameters({"activation": activation, "monitor": self.monitor,
                                   "monitor_mode": self.monitor_mode})
        self.val_accuracy = MulticlassAccuracy(num_classes=embedding.num_embeddings, average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes=embedding.num_embeddings, average="micro")

    def masked_logits(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [M, V], labels [M]) at the M positions with a label."""
        hidden = self.backbone(batch["input_ids"], batch["attention_mask"])[-1]
        predicted = batch["labels"] != self.loss.ignore_index
        return self.head(hidden[predicted], self.backbone.encoder.token_embedding.weight), batch["labels"][predicted]

    def training_step(self, batch, batch_idx):
        logits, labels = self.masked_logits(batch)
        loss = self.loss(logits, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=labels.numel())
        return loss

    def _evaluate(self, batch, accuracy: MulticlassAccuracy, stage: str):
        logits, labels = self.masked_logits(batch)
        self.log(f"{stage}/loss", self.loss(logits, labels), prog_bar=True, batch_size=labels.numel())
        accuracy.update(logits, labels)
        self.log(f"{stage}/accuracy", accuracy, prog_bar=True, batch_size=labels.numel())

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_accuracy, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_accuracy, "test")

    def best_encoder_state(self) -> dict[str, torch.Tensor]:
        """The encoder's state_dict from the best checkpoint, or the current one when there is none."""
        callback = self.trainer.checkpoint_callback
        if callback is not None and callback.best_model_path:
            state = torch.load(callback.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
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
