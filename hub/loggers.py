"""W&B that never prompts, hangs or loses a run: online with credentials and a reachable server, offline
otherwise, and offline as well when the online start fails (unless WANDB_MODE=online forces it). At the end
`close_loggers` hands every logger the run's final metrics (W&B summary, TensorBoard hparams)."""
from __future__ import annotations

import logging
import netrc
import os
from urllib.parse import urlparse

from lit_models.components.backbones import reachable  # the one network probe

log = logging.getLogger(__name__)


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(_wandb_host()) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _wandb_host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"


def _wandb_port() -> int:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    return url.port or (80 if url.scheme == "http" else 443)


def wandb_mode() -> str:
    """WANDB_MODE if set; else online when a key exists and the server answers; else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if not has_wandb_credentials():
        log.info("W&B: no API key (WANDB_API_KEY or ~/.netrc), logging offline; `wandb sync` uploads later")
        return "offline"
    if not reachable(_wandb_host(), _wandb_port()):
        log.warning("W&B: %s not reachable, logging offline; `wandb sync` uploads later", _wandb_host())
        return "offline"
    return "online"


class WandbStartError(RuntimeError):
    """W&B was forced online (WANDB_MODE=online) and could not start."""


def _wandb_logger_class():
    from lightning.pytorch.loggers import WandbLogger

    class HubWandbLogger(WandbLogger):
        """Lightning's WandbLogger whose run falls back to offline when it cannot start online (a rejected key,
        a host that is not W&B): the run goes on and `wandb sync` uploads it later. With WANDB_MODE=online the
        user asked for online only, so it fails instead, saying why."""

        @property
        def experiment(self):
            if self._experiment is None and self._wandb_init.get("mode") == "online":
                try:
                    return super().experiment
                except Exception as error:  # wandb raises UsageError, AuthenticationError, CommError, ...
                    reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
                    if os.environ.get("WANDB_MODE") == "online":
                        raise WandbStartError(f"W&B could not start online ({reason}). WANDB_MODE=online asks for "
                                              f"online only: fix the key or WANDB_BASE_URL, or unset WANDB_MODE to "
                                              f"log offline") from None
                    log.warning("W&B could not start online (%s): logging offline; `wandb sync` uploads later",
                                reason)
                    import wandb

                    wandb.teardown()  # the failed start holds the run id; offline could not take it otherwise
                    self._wandb_init["mode"] = "offline"
                    self._offline = True
            return super().experiment

    return HubWandbLogger


def wandb_logger(save_dir: str, project: str, group: str | None = None, tags=(), name: str | None = None,
                 id: str | None = None, **kwargs):
    """HubWandbLogger with the mode chosen by `wandb_mode()`; the run folder lands in save_dir/wandb. A given
    `id` resumes that W&B run (`resume="allow"`): a resumed training continues its run."""
    mode = wandb_mode()
    os.environ.setdefault("WANDB_SILENT", "true")
    kwargs.setdefault("resume", "allow")
    return _wandb_logger_class()(save_dir=save_dir, project=project, group=group, tags=list(tags), name=name, id=id,
                                 offline=mode == "offline", mode=mode, **kwargs)


def close_loggers(loggers: list, results: dict) -> None:
    """Hand each logger the run's outcome and close it: the W&B summary, the TensorBoard hparams. A logger that
    fails here is recorded in results["wandb" | "tensorboard"]["error"]; it never stops results.json."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            _close_tensorboard(logger, results)
        elif getattr(logger, "_experiment", None) is not None and hasattr(logger, "_wandb_init"):
            _close_wandb(logger, results)   # W&B that never started has nothing to close


def final_metrics(results: dict) -> dict:
    """`best/<monitored metric>` and the test metrics: what a dashboard compares runs by."""
    best = results.get("best") or {}
    return ({f"best/{best['metric']}": best["value"]} if best else {}) | (results.get("test") or {})


def _close_wandb(logger, results: dict) -> None:
    """Put the final metrics into the W&B run summary, note its id in `results`, and finish it."""
    try:
        run = logger.experiment
        run.summary.update(final_metrics(results))
        if results.get("best"):
            run.summary.update({"best/epoch": results["best"]["epoch"], "best/step": results["best"]["step"]})
        run.summary.update({"status": results["status"]})
        results["wandb"] = {"id": run.id, "mode": logger._wandb_init.get("mode"), "dir": run.dir}
        run.finish(exit_code=0 if results["status"] == "completed" else 1)
    except Exception as error:
        results["wandb"] = {"error": f"{type(error).__name__}: {error}"}
        log.warning("W&B: %s", results["wandb"]["error"])


def _close_tensorboard(logger, results: dict) -> None:
    """The axis choices and seed as TensorBoard hparams, with the final metrics as its metrics: the HParams tab
    compares a sweep. Lightning's log_hyperparams writes the hparams session and logs those metrics as scalars
    of the same tags, which is where the tab reads their values."""
    try:
        metrics = {k: v for k, v in final_metrics(results).items() if v is not None}  # None: not finite
        logger.log_hyperparams(results["choices"] | {"seed": results["seed"]}, metrics=metrics,
                               step=results.get("steps"))
        logger.finalize("success" if results["status"] == "completed" else "failed")   # flush and close
        results["tensorboard"] = {"dir": os.path.normpath(logger.log_dir)}
    except Exception as error:
        error = error.__cause__ or error   # Lightning re-raises a failed write as a ValueError about the value
        results["tensorboard"] = {"error": f"{type(error).__name__}: {error}"}
        log.warning("TensorBoard: %s", results["tensorboard"]["error"])
