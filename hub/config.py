"""Config glue: resolvers, the axis choices of a run, and the check of incompatible combinations."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
AXES = ("task", "data", "backbone", "loss", "optimizer", "scheduler", "init", "attention", "trainer", "speed",
        "weighting", "experiment")


class ConfigError(ValueError):
    """An incompatible combination of config choices; raised before anything is built."""


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("mul"):  # lr: ${mul:${backbone.finetune_lr},0.1}
        OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))
    if not OmegaConf.has_resolver("wandb_run_id"):
        OmegaConf.register_new_resolver("wandb_run_id", wandb_run_id)
    if not OmegaConf.has_resolver("axis_tags"):
        OmegaConf.register_new_resolver("axis_tags", lambda: [f"{k}={v}" for k, v in axis_choices().items()])
    if not OmegaConf.has_resolver("auto_precision"):  # trainer/default.yaml: precision: ${auto_precision:}
        OmegaConf.register_new_resolver("auto_precision", auto_precision)
    if not OmegaConf.has_resolver("on_cuda"):  # speed/default.yaml: pad_to_multiple_of: ${on_cuda:16,...}
        OmegaConf.register_new_resolver("on_cuda", on_cuda)


def auto_precision(accelerator: str = "auto") -> str:
    """bf16-mixed when the run will be on a CUDA GPU that has bf16, else 32-true: the same sweep file runs on a
    GPU machine and on a CPU-only one (bf16 autocast on a CPU is slow and changes results)."""
    import torch

    on_gpu = str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def on_cuda(value, accelerator: str = "auto"):
    """`value` when the run will be on a CUDA GPU, else None: a setting that only pays there (padding batches
    to recurring shapes for CUDA graphs costs a CPU run compute and gains it nothing)."""
    import torch

    return value if str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available() else None


def wandb_run_id(ckpt_path: str | None, output_dir: str, train: bool = True) -> str:
    """A W&B run id derived from the run's folder; resuming from `<run>/checkpoints/x.ckpt` gives the id of
    `<run>`, so the resumed training continues the same W&B run. Testing a checkpoint (train=false) is a run
    of its own."""
    folder = Path(ckpt_path).resolve().parent.parent if ckpt_path and train else Path(output_dir).resolve()
    return hashlib.sha1(str(folder).encode()).hexdigest()[:16]


def axis_choices() -> dict[str, str]:
    """The chosen file of each config group, e.g. {"loss": "cosent", ...}; empty outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {axis: choices[axis] for axis in AXES if choices.get(axis) is not None}


@dataclass(frozen=True)
class Classes:
    """The classes a config's `_target_`s name, resolved without building anything."""

    task: type
    data: type
    backbone: type
    loss: type


def target_class(node) -> type:
    return get_object(node._target_)


def resolve(cfg: DictConfig) -> Classes:
    return Classes(*(target_class(cfg[group]) for group in ("task", "data", "backbone", "loss")))


def check_config(cfg: DictConfig, choices: dict[str, str] | None = None) -> Classes:
    """Fail with the clashing keys and what would work, before any model or data is loaded. The rules are the
    classes' own declarations: a task's LOSS_INPUTS, DATA_KINDS and SCRATCH_ONLY, a loss's `inputs`, a
    DataModule's `kinds`, a backbone's TAKES_ATTENTION."""
    choices = {**{group: name_of(cfg, group) for group in ("task", "data", "backbone", "loss")}, **(choices or {})}
    classes = resolve(cfg)
    task, backbone = choices["task"], choices["backbone"]
    if not set(classes.loss.inputs) & set(classes.task.LOSS_INPUTS):
        valid = choices_where("loss", lambda node: set(target_class(node).inputs) & set(classes.task.LOSS_INPUTS))
        raise ConfigError(f"loss={choices['loss']} does not work with task={task}: task={task} takes "
                          f"loss={'|'.join(valid)}")
    if not set(classes.data.kinds_for(cfg.data)) & set(classes.task.DATA_KINDS):
        valid = choices_where("data", lambda node: set(target_class(node).kinds_for(node))
                              & set(classes.task.DATA_KINDS))
        raise ConfigError(f"data={choices['data']} does not work with task={task}: task={task} takes "
                          f"data={'|'.join(valid)}")
    if hasattr(classes.task, "OBJECTIVES"):
        check_subtasks(cfg, classes.task.OBJECTIVES)
    scratch = choices_where("backbone", lambda node: target_class(node).TAKES_ATTENTION)
    if classes.task.SCRATCH_ONLY and not classes.backbone.TAKES_ATTENTION:
        raise ConfigError(f"task={task} does not work with backbone={backbone}: it needs a from-scratch "
                          f"backbone={'|'.join(scratch)}")
    if choices.get("attention", "softmax") != "softmax" and not classes.backbone.TAKES_ATTENTION:
        raise ConfigError(f"attention={choices['attention']} does not work with backbone={backbone}: a pretrained "
                          f"checkpoint fixes its attention; use backbone={'|'.join(scratch)} or attention=softmax")
    if cfg.data.get("packing") and not target_class(cfg.attention).supports_packing:
        valid = choices_where("attention", lambda node: target_class(node).supports_packing)
        raise ConfigError(f"data.packing=true does not work with attention={choices.get('attention')}: its sums run "
                          f"over the whole row, so packed sentences would see each other; use "
                          f"attention={'|'.join(valid)} or data.packing=false")
    check_eval_length(cfg)
    if cfg.init._target_.endswith(".deepnorm") and cfg.backbone.get("norm") != "deepnorm":
        raise ConfigError(f"init=deepnorm needs backbone.norm=deepnorm (got backbone.norm="
                          f"{cfg.backbone.get('norm')}): DeepNorm's init gain β is derived "
                          f"for its residual scale α; use another init or add backbone.norm=deepnorm")
    return classes


def check_eval_length(cfg: DictConfig) -> None:
    """data.eval_max_length beyond a position table (learned, sinusoidal) would fail at the first validation."""
    length, position = cfg.data.get("eval_max_length"), cfg.backbone.get("position")
    if length and position in ("learned", "sinusoidal") and length > cfg.backbone.max_position:
        raise ConfigError(f"data.eval_max_length={length} does not work with backbone.position={position} and "
                          f"backbone.max_position={cfg.backbone.max_position}: the table has no positions beyond "
                          f"{cfg.backbone.max_position}; use backbone.position=rope (or none), or raise max_position")


def check_subtasks(cfg: DictConfig, objectives: dict[str, type]) -> None:
    """task=multitask: every sub-task has data, a known kind, data whose kinds its objective reads and a loss
    whose inputs it gives (the objective's DATA_KINDS and LOSS_INPUTS, as for a task)."""
    tasks, data = cfg.task.get("tasks") or {}, cfg.data.get("tasks") or {}
    add_data = "add `/data@data.tasks.{0}: <choice>` to the defaults (command line: `+data@data.tasks.{0}=<choice>`)"
    if not tasks:
        raise ConfigError("task=multitask has no sub-tasks: set task.tasks.<name>.kind and " + add_data.format("<name>")
                          + "; see conf/experiment/multitask_sts_afqmc.yaml")
    for name in tasks:
        if name not in data:
            raise ConfigError(f"task.tasks.{name} has no data: " + add_data.format(name))
    for name in data:
        if name not in tasks:
            raise ConfigError(f"data.tasks.{name} has no objective: set task.tasks.{name}.kind="
                              f"{'|'.join(objectives)}")
    if len(tasks) > 1 and str(cfg.trainer.get("strategy")) == "ddp":
        raise ConfigError("task=multitask does not work with trainer.strategy=ddp: a step trains one task, so the "
                          "other tasks' heads get no gradient, which DDP refuses; use "
                          "trainer.strategy=ddp_find_unused_parameters_true")
    unknown = set(cfg.data.get("eval_only") or ()) - set(data)
    if unknown:
        raise ConfigError(f"data.eval_only={sorted(unknown)} names no sub-task of data.tasks ({', '.join(data)})")
    for name, spec in tasks.items():
        kind = spec.get("kind")
        if kind not in objectives:
            raise ConfigError(f"task.tasks.{name}.kind={kind} is not a kind: use {'|'.join(objectives)}")
        objective, node = objectives[kind], data[name]
        data_kinds = set(target_class(node).kinds_for(node))
        if not data_kinds & set(objective.DATA_KINDS):
            valid = choices_where("data", lambda n: set(target_class(n).kinds_for(n)) & set(objective.DATA_KINDS))
            fitting = [k for k, o in objectives.items() if data_kinds & set(o.DATA_KINDS)]
            raise ConfigError(f"task.tasks.{name}: data={node.get('name', name)} does not work with kind={kind}: "
                              f"kind={kind} takes data={'|'.join(valid)}"
                              + (f"; data={node.get('name', name)} fits kind={'|'.join(fitting)}" if fitting else ""))
        loss = spec.get("loss") or cfg.loss
        if not set(target_class(loss).inputs) & set(objective.LOSS_INPUTS):
            valid = choices_where("loss", lambda n: set(target_class(n).inputs) & set(objective.LOSS_INPUTS))
            chosen = choice_of("loss", loss)
            own = (f"task.tasks.{name}.loss={chosen}" if spec.get("loss")
                   else f"loss={chosen} (the run's: task.tasks.{name} sets no loss of its own)")
            raise ConfigError(f"task.tasks.{name}: {own} does not work with kind={kind}: "
                              f"kind={kind} takes loss={'|'.join(valid)}; set it with `/loss@task.tasks.{name}.loss: "
                              f"<choice>` in the defaults (command line: `+loss@task.tasks.{name}.loss=<choice>`)")


def choice_of(group: str, node) -> str:
    """The choice of `group` whose file gives `node`'s `_target_`."""
    return next(iter(choices_where(group, lambda other: other._target_ == node._target_)), node._target_)


def name_of(cfg: DictConfig, group: str) -> str:
    """The choice of `group` for messages outside a Hydra run: the node's `name` (data), else the choice whose
    file gives the same `_target_`."""
    if "name" in cfg[group]:
        return str(cfg[group].name)
    return next(iter(choices_where(group, lambda node: node._target_ == cfg[group]._target_)), group)


def choice_node(group: str, name: str) -> DictConfig:
    """conf/<group>/<name>.yaml with its defaults list merged in (enough to read `_target_` and plain keys)."""
    node = OmegaConf.load(CONF_DIR / group / f"{name}.yaml")
    defaults = node.pop("defaults", []) or []
    merged = OmegaConf.create()
    for entry in defaults + ([] if "_self_" in defaults else ["_self_"]):
        if entry == "_self_":
            merged = OmegaConf.merge(merged, node)
        elif isinstance(entry, str):
            path = entry.split("@")[0]
            other_group, other = (path[1:].rsplit("/", 1) if path.startswith("/") else (group, path))
            merged = OmegaConf.merge(merged, choice_node(other_group, other))
    return merged


def choices_where(group: str, accepts) -> list[str]:
    """The choices of `group` (conf/<group>/*.yaml, sorted) whose node `accepts`."""
    names = []
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        node = choice_node(group, path.stem)
        if "_target_" in node and accepts(node):
            names.append(path.stem)
    return names


def config_hash(cfg: DictConfig) -> str:
    """A digest of the resolved config without the paths: equal for two runs of the same experiment."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("paths", None)
    return hashlib.sha256(OmegaConf.to_yaml(resolved, sort_keys=True).encode()).hexdigest()[:12]


def flatten(cfg: DictConfig) -> dict:
    """Flat `a.b.c: value` keys of the resolved config, as W&B shows and filters them."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node
    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out
