"""The contract of every task: the base owns the loop body, a task writes `step` and `make_metrics`."""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from typing import Callable, ClassVar, Mapping

import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torchmetrics import Metric, MetricCollection

from lit_models.components.graphs import GraphedLoss
from lit_models.components.init import initialize
from text.info import DataInfo

NORMS = (nn.LayerNorm, nn.RMSNorm)
STAGES = ("val", "test")


@dataclass
class Step:
    """What one batch gave: the loss (None where a stage does not need it), the inputs of the stage's metrics
    (one tuple for all, or one tuple per metric name) and the batch size the logged means weigh by."""

    loss: torch.Tensor | None
    metric_inputs: tuple | dict[str, tuple] = field(default_factory=tuple)
    size: int = 1


class TaskModule(L.LightningModule):
    """Base of every `task=` choice.

    It owns training/validation/test steps around one `step(batch, stage) -> Step`, the metrics of each
    evaluation stage (`make_metrics(stage)`, computed once per epoch, so no metric math runs per batch on the
    host), `save_hyperparameters`, the init of every new weight (the loss's, the head's of `build_head`, and
    a from-scratch backbone's), the optimizer's parameter groups and the LR schedule. A task writes `step`,
    `make_metrics`, optionally `build_head` and `predict_step`, and declares what it works with; hub.config
    checks those declarations before anything is built:

        LOSS_INPUTS: what the task calls its loss with; a loss class lists the same words in `inputs`
            (pair_embeddings, pair_scores, logits, token_logits, span_scores).
        DATA_KINDS: what it reads; a DataModule class lists its `kinds` (pairs, joint_pairs, classification,
            spans, choices, corpus, dialogues).
        SCRATCH_ONLY: needs our own Transformer (backbone=scratch_*).
        PAIR_ENCODING: how a pair data set encodes its pairs for this task: separate | joint.
        EVAL_LOSS: log `{val,test}/loss` too.
        MODULE_ARGS: init arguments of the subclass that are modules (task=multitask's weighting): kept out of
            the hyperparameters, as backbone and loss are.
        CUDA_GRAPHS: its training step can be recorded as CUDA graphs, one per batch shape: shapes depend
            only on the batch's shapes, and nothing reads a device value on the host (no `.item()`, no boolean
            indexing). `speed.cuda_graphs=auto` then replays it on a single CUDA device (graphs.py).

    Args:
        backbone: encoder + tokenizer (lit_models/components/backbones.py).
        loss: the `loss=` module; heads it owns count as new weights.
        optimizer: `optimizer=` factory, called with the parameter groups.
        scheduler: `scheduler=` factory, called with (optimizer, num_training_steps).
        init: `init=` scheme, applied to the new weights.
        data: what the data set tells the task (text/info.py).
        monitor: the validation metric that selects the best checkpoint.
        monitor_mode: "max" when higher is better (Spearman, accuracy), "min" for losses and perplexity.
        head_lr_scale: lr multiplier of the weights the task adds on top of the backbone (`self.head` and the
            loss's parameters). A head drawn from scratch on a pretrained encoder can need larger steps than
            the encoder's fine-tuning lr gives it (a GlobalPointer head, for one, starts on a long plateau).
        cuda_graphs: replay the training step as CUDA graphs: "auto" (when the task declares CUDA_GRAPHS and
            training runs on one CUDA device), true (fail where it cannot) or false (`speed.cuda_graphs`).
        compile: `torch.compile` the backbone when training starts (`speed.compile`), before any graphs are
            recorded: fuses its elementwise kernels; the loss and the head stay eager.
    """

    LOSS_INPUTS: ClassVar[tuple[str, ...]] = ()
    DATA_KINDS: ClassVar[tuple[str, ...]] = ()
    SCRATCH_ONLY: ClassVar[bool] = False
    PAIR_ENCODING: ClassVar[str] = "separate"
    EVAL_LOSS: ClassVar[bool] = True
    CUDA_GRAPHS: ClassVar[bool] = False
    MODULE_ARGS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, backbone: nn.Module, loss: nn.Module, optimizer: Callable, scheduler: Callable,
                 init: Callable, data: DataInfo | Mapping, monitor: str, monitor_mode: str = "max",
                 head_lr_scale: float = 1.0, cuda_graphs: bool | str = False,
                 compile: bool = False):
        super().__init__()
        if monitor_mode not in ("max", "min"):
            raise ValueError(f"task.monitor_mode must be 'max' or 'min', got {monitor_mode!r}")
        if head_lr_scale <= 0:
            raise ValueError(f"task.head_lr_scale must be > 0, got {head_lr_scale}")
        if cuda_graphs not in (True, False, "auto"):
            raise ValueError(f"speed.cuda_graphs must be auto, true or false, got {cuda_graphs!r}")
        self.data_info = as_data_info(data)
        self.cuda_graphs, self.graphed_loss, self.compile_backbone = cuda_graphs, None, compile
        self.save_hyperparameters(ignore=["backbone", "loss", "optimizer", "scheduler", "init", "data",
                                          "cuda_graphs", "compile", *self.MODULE_ARGS])
        for key, value in list(self.hparams.items()):   # plain values: the checkpoint loads with weights_only
            self.hparams[key] = plain(value)
        self.hparams["data"] = asdict(self.data_info)
        self.backbone, self.loss = backbone, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.monitor, self.monitor_mode, self.head_lr_scale = monitor, monitor_mode, head_lr_scale
        if hasattr(loss, "configure"):   # a loss with weights of the encoder's width (SBERT's classifier)
            loss.configure(backbone.hidden_size)
        self.head = self.build_head()
        for module in self.new_modules():
            initialize(module, init)
        self.metrics = nn.ModuleDict({stage: MetricCollection(self.make_metrics(stage), compute_groups=False)
                                      for stage in STAGES})

    # --- what a task writes -------------------------------------------------------------------------------

    def build_head(self) -> nn.Module | None:
        """The weights the task adds on top of the backbone (drawn by `init`); None: none."""
        return None

    def step(self, batch, stage: str) -> Step:
        raise NotImplementedError

    def make_metrics(self, stage: str) -> dict[str, Metric]:
        """The metrics of `stage` ("val" or "test"), by the name they are logged under (`<stage>/<name>`)."""
        raise NotImplementedError

    def on_metrics(self, stage: str, values: dict[str, torch.Tensor]) -> None:
        """Called with a stage's epoch values before they are logged (the cross-encoder keeps its threshold);
        values it adds are logged too (task=multitask's mean)."""

    def save_evaluation_state(self, folder) -> dict:
        """Write what evaluation fitted beyond the weights (the bi-encoder's whitening) into the run folder;
        returns what results.json records of it. Nothing by default."""
        return {}

    # --- the loop body ------------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        loss, size = (self.graphed_loss or self.train_loss)(batch)
        self.log("train/loss", loss, batch_size=size)   # shown by hub.callbacks.ProgressBar
        return loss

    def train_loss(self, batch) -> tuple[torch.Tensor, int]:
        out = self.step(batch, "train")
        return out.loss, out.size

    def on_train_start(self):
        if self.compile_backbone:
            self.backbone.compile(dynamic=False)   # one graph per padded shape, as the CUDA graphs record
        self.graphed_loss = GraphedLoss(self, self.train_loss) if self.graphs_wanted() else None

    def graphs_wanted(self) -> bool:
        """Whether `cuda_graphs` asks for graphs here; true where they cannot run is an error naming why."""
        if self.cuda_graphs is False:
            return False
        obstacles = [why for why, present in (
            (f"task={type(self).__name__} does not declare CUDA_GRAPHS", not self.CUDA_GRAPHS),
            (f"training runs on {self.device.type}, not a CUDA GPU", self.device.type != "cuda"),
            (f"{self.trainer.world_size} processes (graphs are single-device)", self.trainer.world_size > 1),
            ("the task optimizes by hand", not self.automatic_optimization)) if present]
        if obstacles and self.cuda_graphs is True:
            raise ValueError(f"speed.cuda_graphs=true cannot run: {'; '.join(obstacles)}. "
                             f"Use speed.cuda_graphs=auto (graphs where they can run) or false")
        return not obstacles

    def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
        """Zeroed in place under CUDA graphs: the backward graphs add into the same `.grad` tensors every step."""
        optimizer.zero_grad(set_to_none=self.graphed_loss is None)

    def speed_summary(self) -> dict:
        """Which training path ran, for results.json: eager or CUDA graphs (with their counts), and whether the
        backbone was compiled."""
        compiled = {"compiled": self.compile_backbone}
        if self.graphed_loss is None:
            return {"path": "eager"} | compiled
        return {"path": "cuda_graphs"} | compiled | self.graphed_loss.summary()

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, "test")

    def evaluate(self, batch, stage: str) -> None:
        out = self.step(batch, stage)
        if self.EVAL_LOSS and out.loss is not None:
            self.log(f"{stage}/loss", out.loss, prog_bar=f"{stage}/loss" == self.monitor, batch_size=out.size,
                     sync_dist=True)
        for name, metric in self.metrics[stage].items():
            inputs = out.metric_inputs.get(name) if isinstance(out.metric_inputs, dict) else out.metric_inputs
            if inputs is not None:   # a dict without the metric: not this batch's (a multitask batch is one task's)
                metric.update(*inputs)

    def on_validation_epoch_end(self):
        self.log_metrics("val")

    def on_test_epoch_end(self):
        self.log_metrics("test")

    def log_metrics(self, stage: str) -> None:
        """The stage's metrics over the whole split (every rank's under DDP), logged once per epoch."""
        collection = self.metrics[stage]
        if not any(metric.update_called for metric in collection.values()):
            return
        values = collection.compute()
        collection.reset()
        self.on_metrics(stage, values)
        for name, value in values.items():
            key = f"{stage}/{name}"
            self.log(key, value.float(), prog_bar=key == self.monitor, sync_dist=True)

    # --- weights, optimizer, schedule ---------------------------------------------------------------------

    def new_modules(self) -> list[nn.Module]:
        modules = [self.loss] + ([self.head] if self.head is not None else [])
        return modules + ([self.backbone] if self.backbone.from_scratch else [])

    def parameter_groups(self) -> list[dict]:
        head = [m for m in (self.head, self.loss) if m is not None]
        return parameter_groups(self, head, self.head_lr_scale)

    def configure_optimizers(self):
        extra = {}
        if self.device.type == "cuda" and "fused" in inspect.signature(self.optimizer_factory).parameters:
            extra["fused"] = True
        optimizer = self.optimizer_factory(self.parameter_groups(), **extra)
        for group in optimizer.param_groups:  # before the scheduler records each group's base lr
            group["lr"] *= group.get("lr_scale", 1.0)
        scheduler = self.scheduler_factory(optimizer, num_training_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def parameter_groups(model: nn.Module, head: list[nn.Module] = (), head_lr_scale: float = 1.0) -> list[dict]:
    """Matrices and embedding tables take the optimizer's weight decay; biases, norm gains and per-dimension
    scales and offsets (a module's `scale_offset` parameters, e.g. GAU's γ and β) take none.

    The groups are marked for optimizers that treat them apart (Tiger, as bojone/tiger does): `embedding` (a
    table, stepped by each row's RMS), `vector` (biases, scales and offsets) and `norm_gain` (its NaN guard's
    centre is 1). With `head_lr_scale` ≠ 1, the parameters of the `head` modules form groups of their own
    marked `lr_scale`."""
    gains = {id(m.weight) for m in model.modules() if isinstance(m, NORMS) and m.weight is not None}
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    offsets = {id(getattr(m, name)) for m in model.modules() for name in getattr(m, "scale_offset", ())}
    params = [p for p in model.parameters() if p.requires_grad]
    vector = [p for p in params if id(p) not in gains and (p.ndim < 2 or id(p) in offsets)]
    groups = [{"params": [p for p in params if p.ndim >= 2 and id(p) not in tables | offsets]},
              {"params": [p for p in params if id(p) in tables], "embedding": True},
              {"params": vector, "weight_decay": 0.0, "vector": True},
              {"params": [p for p in params if id(p) in gains], "weight_decay": 0.0, "norm_gain": True}]
    if head_lr_scale != 1.0:
        new = {id(p) for m in head for p in m.parameters()}
        groups = [part for group in groups for part in (
            dict(group, params=[p for p in group["params"] if id(p) not in new]),
            dict(group, params=[p for p in group["params"] if id(p) in new], lr_scale=head_lr_scale))]
    return [group for group in groups if group["params"]]


def as_data_info(data: DataInfo | Mapping) -> DataInfo:
    """`data` as a DataInfo: as given, or from its fields (a checkpoint's hparams, a config Hydra converted)."""
    if isinstance(data, DataInfo):
        return data
    fields = OmegaConf.to_container(data) if isinstance(data, DictConfig) else dict(data)
    fields = {key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()}
    if fields.get("tasks") is not None:
        fields["tasks"] = {name: as_data_info(info) for name, info in fields["tasks"].items()}
    return DataInfo(**fields)


def plain(value):
    """A hyperparameter as plain values: configs as containers, and a module inside an option (a sub-task's
    loss) as its class path, so that the checkpoint loads with weights_only."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, nn.Module):
        return f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    return value
