"""What every task module shares: weight init of new weights, optimizer param groups and the LR schedule."""
from __future__ import annotations

import inspect
from typing import Callable

import lightning as L
from torch import nn

from lit_models.init import initialize

NORMS = (nn.LayerNorm, nn.RMSNorm)


class TaskModule(L.LightningModule):
    """Base of every `task=` choice.

    Args:
        backbone: encoder + tokenizer (lit_models/backbones.py).
        loss: the `loss=` module; heads it owns count as new weights.
        optimizer: `optimizer=` factory, called with the parameter groups.
        scheduler: `scheduler=` factory, called with (optimizer, num_training_steps).
        init: `init=` scheme, applied to the new weights: the loss's heads, and the backbone if from scratch.
        monitor: the validation metric that selects the best checkpoint.
        monitor_mode: "max" when higher is better (Spearman, accuracy), "min" for losses and perplexity.
    """

    def __init__(self, backbone: nn.Module, loss: nn.Module, optimizer: Callable, scheduler: Callable,
                 init: Callable, monitor: str, monitor_mode: str = "max"):
        super().__init__()
        self.backbone, self.loss = backbone, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        if monitor_mode not in ("max", "min"):
            raise ValueError(f"task.monitor_mode must be 'max' or 'min', got {monitor_mode!r}")
        self.monitor, self.monitor_mode = monitor, monitor_mode
        for module in self.new_modules():
            initialize(module, init)

    def new_modules(self) -> list[nn.Module]:
        return [self.loss] + ([self.backbone] if self.backbone.from_scratch else [])

    def parameter_groups(self) -> list[dict]:
        """Matrices take the optimizer's weight decay; biases and norm gains (1-D) take none.

        Norm gains are marked `norm_gain` for optimizers that treat them apart (Tiger's NaN guard)."""
        gains = {id(m.weight) for m in self.modules() if isinstance(m, NORMS) and m.weight is not None}
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.ndim >= 2]},
                  {"params": [p for p in params if p.ndim < 2 and id(p) not in gains], "weight_decay": 0.0},
                  {"params": [p for p in params if id(p) in gains], "weight_decay": 0.0, "norm_gain": True}]
        return [group for group in groups if group["params"]]

    def configure_optimizers(self):
        extra = {}
        if self.device.type == "cuda" and "fused" in inspect.signature(self.optimizer_factory).parameters:
            extra["fused"] = True
        optimizer = self.optimizer_factory(self.parameter_groups(), **extra)
        scheduler = self.scheduler_factory(optimizer, num_training_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
