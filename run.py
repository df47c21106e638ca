"""Train and evaluate one configuration; every axis is a config group: `python run.py loss=sbert data=bq`.

seed → check the combination → DataModule, backbone, task, Trainer → fit → test with the best
checkpoint → results.json (also when the run fails) → close the loggers.
"""
from __future__ import annotations

import logging
import time

import hydra
from omegaconf import DictConfig

from hub.config import register_resolvers

register_resolvers()
log = logging.getLogger("run")


def needed_splits(cfg: DictConfig) -> list[str]:
    return (["train", "valid"] if cfg.train else []) + (["test"] if cfg.test else [])


def train(cfg: DictConfig, results: dict) -> None:
    import lightning as L
    from hydra.utils import instantiate

    for name in ("lightning", "lightning.pytorch"):  # Hydra's handlers (console + run.log) print these once
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True

    from hub.config import check_config, flatten, instantiate_with
    from hub.results import best_checkpoint, metrics_of

    check_config(results["choices"], cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.require(needed_splits(cfg))
    backbone = instantiate_with(cfg.backbone, attention=cfg.get("attention"))
    datamodule.set_tokenizer(backbone.tokenizer, backbone.text_prefix)
    model = instantiate(cfg.task, backbone=backbone, loss=instantiate_with(cfg.loss, hidden_size=backbone.hidden_size),
                        optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler),
                        init=instantiate(cfg.init))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = {name: instantiate(c) for name, c in (cfg.get("callbacks") or {}).items()}
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=list(callbacks.values()))
    results["loggers"], results["global_zero"] = loggers, trainer.is_global_zero
    for logger in loggers:
        logger.log_hyperparams(flatten(cfg))
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        results["best"] = best_checkpoint(trainer)
        results["steps"] = trainer.global_step
        results["final_validation"] = metrics_of([{k: v for k, v in trainer.callback_metrics.items()
                                                   if k.startswith("val/")}])
    if cfg.test:
        ckpt = "best" if results.get("best") else None
        results["test"] = metrics_of(trainer.test(model, datamodule=datamodule, ckpt_path=ckpt))
    if "throughput" in callbacks:
        results["throughput"] = callbacks["throughput"].summary()


def generate(cfg: DictConfig) -> str:
    """Load `ckpt_path` of a task that can `respond` (task=dialogue_lm) and reply to `prompt`."""
    import torch
    from hydra.utils import get_class, instantiate
    from omegaconf import OmegaConf

    from hub.config import ConfigError, axis_choices, check_config, instantiate_with

    check_config(axis_choices(), cfg)
    task = get_class(cfg.task._target_)
    if not hasattr(task, "respond"):
        raise ConfigError(f"mode=generate does not work with task={axis_choices().get('task')}: use task=dialogue_lm")
    if not cfg.ckpt_path or cfg.prompt is None:
        raise ConfigError("mode=generate needs ckpt_path=<a checkpoint of that task> and prompt=<turn or [turns]>")
    backbone = instantiate_with(cfg.backbone, attention=cfg.get("attention"))
    model = task.load_from_checkpoint(
        cfg.ckpt_path, map_location="cpu", backbone=backbone, optimizer=instantiate(cfg.optimizer),
        loss=instantiate_with(cfg.loss, hidden_size=backbone.hidden_size), scheduler=instantiate(cfg.scheduler),
        init=instantiate(cfg.init)).eval()
    history = [cfg.prompt] if isinstance(cfg.prompt, str) else [str(turn) for turn in cfg.prompt]
    reply = model.respond(history, generator=torch.Generator().manual_seed(cfg.seed),
                          **OmegaConf.to_container(cfg.task.decoding))
    print(reply)
    return reply


def finish(results: dict, started: float) -> None:
    from hub.results import summary_lines, write_results

    loggers = results.pop("loggers", [])
    if not results.pop("global_zero", True):  # DDP: every rank runs this script; rank 0 reports
        return
    results["wall_time_s"] = round(time.time() - started, 2)
    for logger in loggers:
        run = getattr(logger, "experiment", None)
        if hasattr(run, "summary"):  # W&B: best/test metrics in the run summary, the run id in results.json
            best = results.get("best") or {}
            run.summary.update({f"best/{best['metric']}": best["value"], "best/epoch": best["epoch"],
                                "best/step": best["step"]} if best else {})
            run.summary.update(results.get("test") or {})
            results["wandb"] = {"id": run.id, "mode": logger._wandb_init.get("mode"), "dir": run.dir}
            run.finish()
    write_results(results["output_dir"], results)
    for line in summary_lines(results):
        print(line)


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
        results["error"] = f"{type(error).__name__}: {error}"
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

    from hub.ddp import single_job_argv

    sys.argv = single_job_argv(sys.argv)
    main()
