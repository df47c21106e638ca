"""Train and evaluate one configuration; every axis is a config group: `python run.py loss=sbert data=bq`.

seed → check the combination → DataModule, backbone, task, Trainer → fit → test with the best
checkpoint → results.json (also when the run fails) → close the loggers.
"""
from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hub.config import register_resolvers

register_resolvers()
log = logging.getLogger("run")


def needed_splits(cfg: DictConfig, datamodule) -> list[str]:
    test = cfg.test and datamodule.test_labelled
    return (["train", "valid"] if cfg.train else []) + (["test"] if test else [])


def predict(trainer, model, datamodule, folder: str, ckpt_path: str | None) -> list[str]:
    """Predict every split of `datamodule.prediction_splits` that is on disk and let the DataModule write
    its files (for CLUE: the leaderboard's submission files). Under DDP each rank predicts a share; rank 0
    gathers them (the DataModule drops the duplicates a distributed sampler pads with)."""
    import torch.distributed as dist

    written = []
    for split in (s for s in datamodule.prediction_splits if datamodule.has_split(s)):
        batches = trainer.predict(model, dataloaders=datamodule.loader(split), ckpt_path=ckpt_path)
        examples = [example for batch in batches for example in batch]
        if dist.is_available() and dist.is_initialized():
            shares = [None] * dist.get_world_size()
            dist.all_gather_object(shares, examples)
            examples = [example for share in shares for example in share]
        if trainer.is_global_zero:
            written += [str(p) for p in datamodule.write_predictions(split, examples, Path(folder) / "predictions")]
    return written


def build(cfg: DictConfig, choices: dict[str, str] | None = None):
    """The DataModule (tokenizer set, needed splits checked) and the task module of a composed config, after
    the check of the combination (hub.config.check_config)."""
    from hydra.utils import instantiate

    from hub.config import ConfigError, check_config

    classes = check_config(cfg, choices)
    datamodule = instantiate(cfg.data, pad_to_multiple_of=cfg.speed.pad_to_multiple_of,
                             bucket_by_length=cfg.speed.bucket_by_length)
    if cfg.predict and not datamodule.writes_predictions:
        raise ConfigError(f"predict=true does not work with data={datamodule.name}: it writes no prediction files")
    datamodule.require(needed_splits(cfg, datamodule))
    backbone = build_backbone(cfg, classes.backbone)
    datamodule.set_tokenizer(backbone.tokenizer, backbone.text_prefix, pair_encoding=classes.task.PAIR_ENCODING)
    model = instantiate(cfg.task, backbone=backbone, loss=instantiate(cfg.loss), optimizer=instantiate(cfg.optimizer),
                        scheduler=instantiate(cfg.scheduler), init=instantiate(cfg.init), data=datamodule.info,
                        cuda_graphs=cfg.speed.cuda_graphs, compile=cfg.speed.get("compile", False),   # runs saved before the key resume
                        _convert_="object")   # DataInfo stays a dataclass, nested options plain dicts
    return datamodule, model


def build_backbone(cfg: DictConfig, backbone_class: type):
    from hydra.utils import instantiate

    if backbone_class.TAKES_ATTENTION:
        return instantiate(cfg.backbone, attention=instantiate(cfg.attention))
    return instantiate(cfg.backbone)


def train(cfg: DictConfig, results: dict) -> None:
    import lightning as L
    from hydra.utils import instantiate

    for name in ("lightning", "lightning.pytorch"):  # Hydra's handlers (console + run.log) print these once
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True

    from hub.config import flatten
    from hub.results import best_checkpoint, metrics_of

    L.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(cfg, results["choices"])
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = {name: instantiate(c) for name, c in (cfg.get("callbacks") or {}).items()}
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=list(callbacks.values()))
    results["loggers"], results["global_zero"], results["trainer"] = loggers, trainer.is_global_zero, trainer
    results["parameters"] = sum(p.numel() for p in model.parameters())
    for logger in loggers:
        logger.log_hyperparams(flatten(cfg))
    if cfg.train:
        ckpt_path = resume_from(cfg, results)
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        results["steps"] = trainer.global_step
        results["speed"] = model.speed_summary() | {k: cfg.speed[k] for k in ("pad_to_multiple_of", "bucket_by_length")}
        results["final_validation"] = metrics_of([{k: v for k, v in trainer.callback_metrics.items()
                                                   if k.startswith("val/")}])
    best = best_checkpoint(trainer)
    ckpt = best["path"] if best else None
    if cfg.train and ckpt is None:
        log.warning("no validation value was finite: testing the final weights, not a best checkpoint")
    if not cfg.train and cfg.get("ckpt_path"):   # evaluate a trained checkpoint (e.g. whitened) without training
        ckpt = tested_checkpoint(cfg.ckpt_path)
        results["tested_checkpoint"] = ckpt
    if cfg.test and datamodule.test_labelled:
        results["test"] = metrics_of(trainer.test(model, datamodule=datamodule, ckpt_path=ckpt))
    elif cfg.test:
        log.info("the test split of data=%s has no labels: not scored (predict=true writes its predictions)",
                 datamodule.name)
    if cfg.predict:
        results["predictions"] = predict(trainer, model, datamodule, cfg.paths.output_dir, ckpt)
    if trainer.is_global_zero:
        results.update(model.save_evaluation_state(cfg.paths.output_dir))
    if "throughput" in callbacks:
        results["throughput"] = callbacks["throughput"].summary()


def resume_from(cfg: DictConfig, results: dict) -> str | None:
    """The checkpoint to continue from: `ckpt_path`, or else this run folder's own last.ckpt (a job that a
    cluster requeued into the same folder). Recorded in results.json as `resumed`."""
    import torch

    from hub.checkpoints import last_checkpoint

    path = cfg.get("ckpt_path")
    if path is None and last_checkpoint(cfg.paths.output_dir).is_file():
        path = str(last_checkpoint(cfg.paths.output_dir))
        log.info("this run folder has %s: resuming from it", path)
    if path is None:
        return None
    if not Path(path).is_file():
        from hub.config import ConfigError

        raise ConfigError(f"ckpt_path={path}: no such file")
    meta = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    results["resumed"] = {"checkpoint": str(path), "step": meta["global_step"], "epoch": meta["epoch"]}
    return str(path)


def tested_checkpoint(path: str) -> str:
    if not Path(path).is_file():
        from hub.config import ConfigError

        raise ConfigError(f"ckpt_path={path}: no such file (train=false tests the weights of this checkpoint)")
    return str(path)


def generate(cfg: DictConfig) -> str:
    """Load `ckpt_path` of a task that can `respond` (task=dialogue_lm) and reply to `prompt`."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from hub.config import ConfigError, axis_choices, check_config

    classes = check_config(cfg, axis_choices())
    task = classes.task
    if not hasattr(task, "respond"):
        raise ConfigError(f"mode=generate does not work with task={axis_choices().get('task')}: use task=dialogue_lm")
    if not cfg.ckpt_path or cfg.prompt is None:
        raise ConfigError("mode=generate needs ckpt_path=<a checkpoint of that task> and prompt=<turn or [turns]>")
    model = task.load_from_checkpoint(
        cfg.ckpt_path, map_location="cpu", weights_only=True, backbone=build_backbone(cfg, classes.backbone),
        optimizer=instantiate(cfg.optimizer), loss=instantiate(cfg.loss), scheduler=instantiate(cfg.scheduler),
        init=instantiate(cfg.init)).eval()
    history = [cfg.prompt] if isinstance(cfg.prompt, str) else [str(turn) for turn in cfg.prompt]
    reply = model.respond(history, generator=torch.Generator().manual_seed(cfg.seed),
                          **OmegaConf.to_container(cfg.task.decoding))
    print(reply)
    return reply


def finish(results: dict, started: float) -> None:
    """results.json, the loggers' final metrics and the summary lines (console and run.log), whatever happened."""
    from hub.loggers import close_loggers
    from hub.results import best_checkpoint, summary_lines, write_results

    loggers, trainer = results.pop("loggers", []), results.pop("trainer", None)
    if not results.pop("global_zero", True):  # DDP: every rank runs this script; rank 0 reports
        return
    results["best"] = best_checkpoint(trainer)
    results["wall_time_s"] = round(time.time() - started, 2)
    close_loggers(loggers, results)
    write_results(results["output_dir"], results)
    for line in summary_lines(results):
        (log.error if line.lstrip().startswith("error:") else log.info)(line)


EXIT_CODES = {"SIGTERM": 143, "SIGINT": 130}   # 128 + the signal's number, as a shell reports it


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    if cfg.mode not in ("train", "generate"):
        raise ValueError(f"mode must be train or generate, got {cfg.mode!r}")
    if cfg.mode == "generate":
        generate(cfg)
        return None
    from hydra.core.hydra_config import HydraConfig

    from hub.config import axis_choices, config_hash
    from hub.ddp import export_job_dir, isolated_job
    from hub.results import code_version

    export_job_dir(cfg.paths.output_dir)

    started = time.time()
    results = {"status": "failed", "choices": axis_choices(), "seed": cfg.seed, "config_hash": config_hash(cfg),
               "code_version": code_version(), "overrides": list(HydraConfig.get().overrides.task),
               "output_dir": cfg.paths.output_dir}
    try:
        with isolated_job():
            train(cfg, results)
        results["status"] = "completed"
    except BaseException as error:
        from hub.checkpoints import interruption

        signal_name = interruption(error)
        results["status"] = "interrupted" if signal_name else "failed"
        results["error"] = f"interrupted by {signal_name}" if signal_name else f"{type(error).__name__}: {error}"
        results["traceback"] = traceback.format_exc()
        if signal_name:
            raise SystemExit(EXIT_CODES[signal_name]) from None
        raise
    finally:
        finish(results, started)
    return objective(results, cfg.get("optimized_metric"))


def objective(results: dict, metric: str | None) -> float | None:
    """The value a sweeper optimizes: `best/<metric>` (the best validation), a test or final validation
    metric by name, or by default the best validation value."""
    best = results.get("best") or {}
    if metric is None or metric == f"best/{best.get('metric')}":
        return best.get("value")
    for part in ("test", "final_validation"):
        if metric in (results.get(part) or {}):
            return results[part][metric]
    raise KeyError(f"optimized_metric={metric} is not among the run's metrics: best/{best.get('metric')}, "
                   f"{sorted((results.get('test') or {}) | (results.get('final_validation') or {}))}")


if __name__ == "__main__":
    import sys

    from hub.checkpoints import resume_argv
    from hub.ddp import single_job_argv

    sys.argv = resume_argv(single_job_argv(sys.argv))
    main()
