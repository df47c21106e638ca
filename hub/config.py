"""Config glue: resolvers, the axis choices of a run, and the check of incompatible combinations."""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
AXES = ("task", "data", "backbone", "loss", "optimizer", "scheduler", "init", "attention", "trainer",
        "experiment")

# What each `task=` works with; a task missing from a table takes any choice of that group.
STS_DATA = ("stsb_sample", "stsb", "atec", "bq", "lcqmc", "pawsx")
CLUE_CLASSIFICATION = ("afqmc", "tnews", "iflytek", "ocnli", "cmnli", "csl", "wsc")
TASK_LOSSES = {
    "bi_encoder": ("cosent", "sbert", "cosine_mse", "infonce", "flatnce"),
    "cross_encoder": ("cosent", "cross_entropy"),
    "classifier": ("cross_entropy",),
    "global_pointer": ("multilabel_ce", "cross_entropy"),   # cross_entropy: span extraction (cmrc2018) only
    "multiple_choice": ("cross_entropy",),
    "masked_lm": ("lm",),
    "dialogue_lm": ("lm",),
}
TASK_DATA = {
    "bi_encoder": STS_DATA,
    "cross_encoder": (*STS_DATA, "afqmc"),
    "classifier": CLUE_CLASSIFICATION,
    "global_pointer": ("cluener", "cmrc2018"),
    "multiple_choice": ("c3", "chid"),
    "masked_lm": ("corpus",),
    "dialogue_lm": ("lccc", "lccc_toy"),
}
SCRATCH_BACKBONES = ("scratch_tiny", "scratch_small", "scratch_base")
TASKS_NEEDING_SCRATCH = ("masked_lm", "dialogue_lm")


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


def auto_precision(accelerator: str = "auto") -> str:
    """bf16-mixed when the run will be on a CUDA GPU that has bf16, else 32-true: the same sweep file runs on a
    GPU machine and on a CPU-only one (bf16 autocast on a CPU is slow and changes results)."""
    import torch

    on_gpu = str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def wandb_run_id(ckpt_path: str | None, output_dir: str) -> str:
    """A W&B run id derived from the run's folder; resuming from `<run>/checkpoints/x.ckpt` gives the id of
    `<run>`, so the resumed training continues the same W&B run."""
    folder = Path(ckpt_path).resolve().parent.parent if ckpt_path else Path(output_dir).resolve()
    return hashlib.sha1(str(folder).encode()).hexdigest()[:16]


def axis_choices() -> dict[str, str]:
    """The chosen file of each config group, e.g. {"loss": "cosent", ...}; empty outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {axis: choices[axis] for axis in AXES if choices.get(axis) is not None}


def check_config(choices: dict[str, str], cfg: DictConfig | None = None) -> None:
    """Fail with the clashing keys and what would work, before any model or data is loaded."""
    task, backbone = choices.get("task"), choices.get("backbone")
    for group, table in (("loss", TASK_LOSSES), ("data", TASK_DATA)):
        allowed = table.get(task)
        if allowed is not None and choices.get(group) not in allowed:
            raise ConfigError(f"{group}={choices.get(group)} does not work with task={task}: "
                              f"task={task} takes {group}={'|'.join(allowed)}")
    scratch = backbone in SCRATCH_BACKBONES
    if task in TASKS_NEEDING_SCRATCH and not scratch:
        raise ConfigError(f"task={task} does not work with backbone={backbone}: it needs a from-scratch "
                          f"backbone={'|'.join(SCRATCH_BACKBONES)}")
    if choices.get("attention", "softmax") != "softmax" and not scratch:
        raise ConfigError(f"attention={choices['attention']} does not work with backbone={backbone}: a pretrained "
                          f"checkpoint fixes its attention; use backbone={'|'.join(SCRATCH_BACKBONES)} "
                          f"or attention=softmax")
    if choices.get("init") == "deepnorm" and (cfg is None or cfg.backbone.get("norm") != "deepnorm"):
        raise ConfigError(f"init=deepnorm needs backbone.norm=deepnorm (got backbone.norm="
                          f"{None if cfg is None else cfg.backbone.get('norm')}): DeepNorm's init gain β is derived "
                          f"for its residual scale α; use another init or add backbone.norm=deepnorm")


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


def accepted_by(node: DictConfig, available: dict) -> dict:
    """Those of `available` that `node`'s target names as parameters and the config leaves unset."""
    target = instantiate({"_target_": "hydra.utils.get_object", "path": node._target_})
    params = inspect.signature(target).parameters
    return {k: v for k, v in available.items() if k in params and k not in node}


def instantiate_with(node: DictConfig, **available):
    """Instantiate `node`, passing those of `available` that its target accepts and the config leaves unset."""
    return instantiate(node, **accepted_by(node, available))
