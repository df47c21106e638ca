"""Checkpoints a run can be resumed from: best and last, written atomically, with the random state.

- `BestCheckpoint`: Lightning's ModelCheckpoint on the task's monitor, except that a NaN or infinite
  validation value never becomes the best (Lightning stores it as ±inf and, with no better one yet,
  keeps it as best).
- `LastCheckpoint`: `last.ckpt` every epoch (or every N steps), and at the next batch boundary when the
  run is interrupted (SIGTERM, Ctrl+C), never after a failure such as a non-finite loss. It carries the global random
  states, so a resumed run draws the same shuffles and dropout masks as one that was never stopped.
- `AtomicCheckpointIO`: every checkpoint goes to a temporary file in its own folder and is renamed over
  the old one, so a kill at any moment leaves the previous checkpoint whole.
- `resume_argv`: `python run.py resume=<run folder>` continues that run in its own folder, with its own
  overrides, from its last.ckpt.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import threading
from pathlib import Path

import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)
LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to `<path>.tmp<pid>` beside the target, then an atomic rename onto `path`."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        tmp = f"{path}.tmp{os.getpid()}"
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


class BestCheckpoint(ModelCheckpoint):
    """The best checkpoint on `monitor`, where a non-finite value (a collapsed model's NaN Spearman, a
    diverged loss) is never a candidate."""

    def check_monitor_top_k(self, trainer, current=None) -> bool:
        if current is not None and not torch.isfinite(current).all():
            log.warning("%s = %s at epoch %d step %d is not finite: not a best checkpoint", self.monitor,
                        current.item(), trainer.current_epoch, trainer.global_step)
            return False
        return super().check_monitor_top_k(trainer, current)


class StopRequested(KeyboardInterrupt):
    """The first Ctrl+C of a training run, raised at the next batch boundary (LastCheckpoint)."""


def interruption(exception: BaseException) -> str | None:
    """"SIGTERM" or "SIGINT" when `exception` is how Lightning or Python reports that signal, else None.

    Lightning raises SIGTERMException for SIGTERM; for Ctrl+C it handles the KeyboardInterrupt itself and
    calls sys.exit(1) inside that handler, so the SystemExit it raises carries the KeyboardInterrupt as
    its context."""
    if isinstance(exception, SIGTERMException):
        return "SIGTERM"
    if isinstance(exception, KeyboardInterrupt) or isinstance(exception.__context__, KeyboardInterrupt):
        return "SIGINT"
    return None


def random_states() -> dict:
    """Every global generator a training step draws from, as tensors and plain values (weights_only-safe)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
            "python": random.getstate()}


def set_random_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt` in the run's checkpoints/ folder: the state to resume from.

    Args:
        dirpath: the checkpoints folder (the run's own, so that resuming finds it).
        every_n_epochs: write it at the end of every n-th epoch (default 1).
        every_n_train_steps: write it every n optimizer steps instead (then every_n_epochs is ignored).
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, every_n_train_steps: int | None = None):
        steps = every_n_train_steps or 0
        super().__init__(dirpath=dirpath, filename=Path(LAST).stem, monitor=None, save_top_k=1,
                         every_n_train_steps=steps, every_n_epochs=0 if steps else every_n_epochs,
                         enable_version_counter=False)

    @property
    def state_key(self) -> str:
        return type(self).__name__  # one per run, whatever its interval: resuming with another still matches

    def state_dict(self) -> dict:
        return {**super().state_dict(), "random_states": random_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if "random_states" in state_dict:
            set_random_states(state_dict["random_states"])

    def on_train_start(self, trainer, pl_module) -> None:
        """Ctrl+C stops at the next batch boundary, where the state is whole enough to save (a second Ctrl+C
        stops at once, unsaved). Under DDP each rank would stop at its own batch: Lightning's handling stays."""
        self._stop_requested, self._previous_sigint = False, None
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._request_stop)

    def _request_stop(self, signum, frame) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        log.warning("Ctrl+C: stopping after this step and saving %s (Ctrl+C again: stop at once, unsaved)", LAST)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if getattr(self, "_stop_requested", False):
            raise StopRequested

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if getattr(self, "_previous_sigint", None) is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Interrupted (SIGTERM from a scheduler, Ctrl+C): keep what was trained since the last save. Both are
        raised between batches, where the loops' state is whole. A failure is not saved: it would be resumed."""
        if isinstance(exception, (SIGTERMException, StopRequested)) and not trainer.sanity_checking:
            path = os.path.join(self.dirpath, LAST)
            self.last_model_path = path
            self._save_checkpoint(trainer, path)
            log.warning("%s: saved %s at step %d; `python run.py resume=%s` continues", interruption(exception),
                        path, trainer.global_step, Path(self.dirpath).parent)


def last_checkpoint(run_folder: str | Path) -> Path:
    return Path(run_folder) / "checkpoints" / LAST


def resume_argv(argv: list[str]) -> list[str]:
    """`run.py resume=<run folder> [key=value ...]` as the run's own command line, continued in its folder:
    the overrides it was started with (`.hydra/overrides.yaml`), then the new ones (which win), then
    `hydra.run.dir=<folder>` and `ckpt_path=<folder>/checkpoints/last.ckpt`."""
    arguments = [a for a in argv[1:] if a.startswith("resume=")]
    if not arguments:
        return argv
    if any(flag in argv for flag in ("-m", "--multirun")):
        raise SystemExit("run.py: resume= continues one run; resume each job of a multirun by its folder")
    folder = Path(arguments[-1].split("=", 1)[1]).expanduser().resolve()
    saved = folder / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise SystemExit(f"run.py: resume={folder}: not a run folder (no {saved})")
    if not last_checkpoint(folder).is_file():
        raise SystemExit(f"run.py: resume={folder}: no {last_checkpoint(folder)}; the run stopped before its first "
                         f"checkpoint (every epoch by default): start it again")
    new = [a for a in argv[1:] if not a.startswith(("resume=", "ckpt_path=", "hydra.run.dir="))]
    new_keys = {key_of(a) for a in new}
    original = [a for a in yaml.safe_load(saved.read_text(encoding="utf-8")) or []
                if key_of(a) not in new_keys and not a.startswith(("resume=", "ckpt_path="))]
    return [argv[0], *original, *new, f"resume={folder}", f"hydra.run.dir={folder}",
            f"ckpt_path={last_checkpoint(folder)}"]


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")
