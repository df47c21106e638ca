"""task=multitask: one encoder trained on several data sets at once (kexue.fm/archives/8870).

Each sub-task (`task.tasks.<name>`) has its data (`data.tasks.<name>`, an existing data choice), its kind and
its loss. The kinds are the objectives of the single-task classes, composed from their functions:

    pairs           task=bi_encoder's: both sentences through the shared encoder, pooled (mean), the pair loss
                    on (u, v, labels) (default cosent); evaluated by Spearman of cos(u, v)
    classification  task=classifier's: a head dropout → Linear on the pooled vector (cls), the loss on the logits
                    (cross_entropy); evaluated by accuracy and macro F1

Every batch is one task's (datamodules/multitask.py interleaves them); its loss L_i goes through the
`weighting=` scheme (lit_models/components/weighting.py), which makes the step's loss. Validation and test log
`<stage>/<task>/<metric>` and `<stage>/mean`, the mean over the tasks of their first metric (Spearman,
accuracy), which selects the best checkpoint.
"""
from __future__ import annotations

import copy
from typing import ClassVar, Mapping

import torch
from torch import nn

from lit_models.base import Step, TaskModule, as_data_info
from lit_models.bi_encoder import BiEncoder, cosine, pair_metrics
from lit_models.classifier import Classifier, classification_head, classification_metrics, classify
from lit_models.components.distributed import loss_batch
from lit_models.components.pooling import check_pooling, encode
from lit_models.components.weighting import StaticWeighting, class_entropy, uniform_cross_entropy
from text.info import DataInfo


class PairObjective(nn.Module):
    """kind=pairs: the bi-encoder's objective on the shared encoder (lit_models/bi_encoder.py)."""

    DATA_KINDS, LOSS_INPUTS = BiEncoder.DATA_KINDS, BiEncoder.LOSS_INPUTS
    METRIC = "spearman"

    def __init__(self, *, loss: nn.Module, data: DataInfo, backbone, pooling: str = "mean"):
        super().__init__()
        check_pooling(pooling, backbone)
        if hasattr(loss, "configure"):
            loss.configure(backbone.hidden_size)
        self.loss, self.pooling = loss, pooling

    def metrics(self) -> dict:
        return pair_metrics()

    def step(self, backbone, batch, stage: str) -> Step:
        u, v = encode(backbone, batch["input_ids"], batch["attention_mask"], self.pooling).chunk(2)
        labels = batch["labels"]
        if stage != "train":
            return Step(None, {"spearman": (cosine(u, v), labels)}, len(labels))
        return Step(self.loss(*loss_batch(self.loss, u, v, labels)), size=len(labels))

    def theoretical_loss(self) -> None:
        """None: a ranking loss's initial value depends on the batch (the weighting measures it)."""
        return None

    def prior_loss(self, labels: torch.Tensor) -> None:
        """None: a constant prediction ranks nothing, so the prior state is the initial one (measured)."""
        return None


class ClassificationObjective(nn.Module):
    """kind=classification: the classifier's head and metrics on the shared encoder (lit_models/classifier.py)."""

    DATA_KINDS, LOSS_INPUTS = Classifier.DATA_KINDS, Classifier.LOSS_INPUTS
    METRIC = "accuracy"

    def __init__(self, *, loss: nn.Module, data: DataInfo, backbone, pooling: str = "cls", dropout: float = 0.1):
        super().__init__()
        check_pooling(pooling, backbone)
        self.head = classification_head(backbone.hidden_size, data, dropout, task="multitask")
        self.loss, self.pooling, self.num_labels = loss, pooling, data.num_labels

    def metrics(self) -> dict:
        return classification_metrics(self.num_labels)

    def step(self, backbone, batch, stage: str) -> Step:
        logits, labels = classify(backbone, self.head, batch, self.pooling), batch["labels"]
        predicted = logits.argmax(-1)
        return Step(self.loss(logits, labels), {"accuracy": (predicted, labels), "macro_f1": (predicted, labels)},
                    len(labels))

    def theoretical_loss(self) -> float:
        return uniform_cross_entropy(self.num_labels)

    def prior_loss(self, labels: torch.Tensor) -> float:
        return class_entropy(labels, self.num_labels)


class MultiTask(TaskModule):
    """Several sub-tasks on one backbone; `loss` (the run's loss=) serves every sub-task that sets none.

    The task's `head` is the ModuleDict of the sub-task objectives (their heads drawn by `init`, scaled by
    head_lr_scale), its `loss` the weighting scheme.

    Args:
        tasks: sub-task name -> {kind: pairs | classification, loss: a loss= node (optional), and the kind's
            options: pooling (pairs: mean, classification: cls), dropout (classification)}.
        weighting: the `weighting=` scheme (lit_models/components/weighting.py).
    """

    OBJECTIVES: ClassVar[dict[str, type]] = {"pairs": PairObjective, "classification": ClassificationObjective}
    LOSS_INPUTS = tuple(dict.fromkeys(i for o in OBJECTIVES.values() for i in o.LOSS_INPUTS))
    DATA_KINDS = ("tasks",)
    EVAL_LOSS = False
    MODULE_ARGS = ("weighting",)

    def __init__(self, *, tasks: Mapping[str, Mapping], weighting: nn.Module, **common):
        parts = as_data_info(common["data"]).require("tasks", "multitask")
        if set(tasks) != set(parts):
            raise ValueError(f"task.tasks ({sorted(tasks)}) and data.tasks ({sorted(parts)}) must name the same tasks")
        default_loss = common.pop("loss")
        self._objectives = {name: self.objective(name, dict(tasks[name]), default_loss, parts[name], common["backbone"])
                            for name in parts}   # in the data's order
        weighting.setup(list(parts))
        super().__init__(loss=weighting, **common)

    def objective(self, name: str, spec: dict, default_loss: nn.Module, data: DataInfo, backbone) -> nn.Module:
        kind = spec.pop("kind", None)
        if kind not in self.OBJECTIVES:
            raise ValueError(f"task.tasks.{name}.kind must be one of {'|'.join(self.OBJECTIVES)}, got {kind!r}")
        loss = spec.pop("loss", None) or copy.deepcopy(default_loss)   # own weights per task (SBERT's classifier)
        try:
            return self.OBJECTIVES[kind](loss=loss, data=data, backbone=backbone, **spec)
        except TypeError as error:
            raise ValueError(f"task.tasks.{name} (kind={kind}): {error}") from None

    def build_head(self) -> nn.Module:
        objectives, self._objectives = self._objectives, None
        return nn.ModuleDict(objectives)

    @property
    def weighting(self) -> nn.Module:
        return self.loss

    def make_metrics(self, stage: str) -> dict:
        return {f"{name}/{metric}": value for name, objective in self.head.items()
                for metric, value in objective.metrics().items()}

    def step(self, batch, stage: str) -> Step:
        name = batch["task"]
        out = self.head[name].step(self.backbone, batch, stage)
        if stage != "train":
            return Step(None, {f"{name}/{metric}": inputs for metric, inputs in out.metric_inputs.items()}, out.size)
        self.log(f"train/{name}/loss", out.loss.detach(), batch_size=out.size)
        return Step(self.weighting({name: out.loss}, self.shared_parameters()), size=out.size)

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def on_metrics(self, stage: str, values: dict[str, torch.Tensor]) -> None:
        firsts = [values[f"{name}/{objective.METRIC}"].float() for name, objective in self.head.items()
                  if f"{name}/{objective.METRIC}" in values]
        values["mean"] = torch.stack(firsts).mean()

    # --- the references of a static weighting, before the first step --------------------------------------

    def on_train_start(self):
        super().on_train_start()
        if isinstance(self.weighting, StaticWeighting) and not bool(self.weighting.fitted):
            datamodule = self.trainer.datamodule
            self.weighting.fit({name: self.weighting.reference(
                self.head[name], measure=lambda name=name: self.initial_loss(name),
                labels=lambda name=name: datamodule.train_labels(name)) for name in datamodule.trained})

    def initial_loss(self, name: str) -> torch.Tensor:
        """The mean loss of task `name` over its first `weighting.batches` training batches, under the current
        weights, without gradients or dropout (the random state is left as it was)."""
        batches = self.trainer.datamodule.first_batches(name, self.weighting.batches)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad(), self.trainer.precision_plugin.forward_context():
                losses = [self.head[name].step(self.backbone, self.transfer_batch_to_device(b, self.device, 0),
                                               "train").loss.float() for b in batches]
        finally:
            self.train(was_training)
        return torch.stack(losses).mean()

    def save_evaluation_state(self, folder) -> dict:
        """results.json's `multitask`: the trained tasks, the split each test metric was computed on (valid for a
        CLUE set, whose test labels are not public) and what the weighting fitted."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        out = {"weighting": self.weighting.summary()}
        if datamodule is not None and hasattr(datamodule, "test_splits"):
            out |= {"trained": list(datamodule.trained), "test_splits": datamodule.test_splits}
        return {"multitask": out}
