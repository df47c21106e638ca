"""What every task module shares: weight init of new weights, optimizer param groups and the LR schedule."""
from __future__ import annotations

import inspect
from typing import Callable

import lightning as L
from torch import nn

from lit_models.components.init import initialize

NORMS = (nn.LayerNorm, nn.RMSNorm)


class TaskModule(L.LightningModule):
    """Base of every `task=` choice.

    Args:
        backbone: encoder + tokenizer (lit_models/components/backbones.py).
        loss: the `loss=` module; heads it owns count as new weights.
        optimizer: `optimizer=` factory, called with the parameter groups.
        scheduler: `scheduler=` factory, called with (optimizer, num_training_steps).
        init: `init=` scheme, applied to the new weights: the loss's heads, and the backbone if from scratch.
        monitor: the validation metric that selects the best checkpoint.
        monitor_mode: "max" when higher is better (Spearman, accuracy), "min" for losses and perplexity.
        head_lr_scale: lr multiplier of the weights the task adds on top of the backbone (`self.head` and the
            loss's parameters). A head drawn from scratch on a pretrained encoder can need larger steps than
            the encoder's fine-tuning lr gives it (a GlobalPointer head, for one, starts on a long plateau).
    """

    def __init__(self, backbone: nn.Module, loss: nn.Module, optimizer: Callable, scheduler: Callable,
                 init: Callable, monitor: str, monitor_mode: str = "max", head_lr_scale: float = 1.0):
        super().__init__()
        self.backbone, self.loss = backbone, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        if monitor_mode not in ("max", "min"):
            raise ValueError(f"task.monitor_mode must be 'max' or 'min', got {monitor_mode!r}")
        self.monitor, self.monitor_mode = monitor, monitor_mode
        if head_lr_scale <= 0:
            raise ValueError(f"task.head_lr_scale must be > 0, got {head_lr_scale}")
        self.head_lr_scale = head_lr_scale
        for module in self.new_modules():
            initialize(module, init)

    def new_modules(self) -> list[nn.Module]:
        return [self.loss] + ([self.backbone] if self.backbone.from_scratch else [])

    def parameter_groups(self) -> list[dict]:
        """Matrices take the optimizer's weight decay; biases and norm gains (1-D) take none.

        Norm gains are marked `norm_gain` for optimizers that treat them apart (Tiger's NaN guard). With
        `head_lr_scale` ≠ 1, the head's and the loss's parameters form groups of their own marked `lr_scale`."""
        gains = {id(m.weight) for m in self.modules() if isinstance(m, NORMS) and m.weight is not None}
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.ndim >= 2]},
                  {"params": [p for p in params if p.ndim < 2 and id(p) not in gains], "weight_decay": 0.0},
                  {"params": [p for p in params if id(p) in gains], "weight_decay": 0.0, "norm_gain": True}]
        if getattr(self, "head_lr_scale", 1.0) != 1.0:
            groups = [part for group in groups for part in self.split_head(group)]
        return [group for group in groups if group["params"]]

    def split_head(self, group: dict) -> list[dict]:
        heads = [m for m in (getattr(self, "head", None), self.loss) if isinstance(m, nn.Module)]
        new = {id(p) for m in heads for p in m.parameters()}
        return [dict(group, params=[p for p in group["params"] if id(p) not in new]),
                dict(group, params=[p for p in group["params"] if id(p) in new], lr_scale=self.head_lr_scale)]

    def configure_optimizers(self):
        extra = {}
        if self.device.type == "cuda" and "fused" in inspect.signature(self.optimizer_factory).parameters:
            extra["fused"] = True
        optimizer = self.optimizer_factory(self.parameter_groups(), **extra)
        for group in optimizer.param_groups:  # before the scheduler records each group's base lr
            group["lr"] *= group.get("lr_scale", 1.0)
        scheduler = self.scheduler_factory(optimizer, num_training_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
