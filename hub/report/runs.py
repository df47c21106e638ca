"""Finding and reading runs: results.json folders, Hydra folders without one, and W&B runs from its public API.

Metric names follow the W&B summary that run.py writes: `test/<m>` (test with the best checkpoint),
`best/<monitor>` (the best validation value, which picked the checkpoint), `val/<m>` (the last validation),
plus the throughput keys and `wall_time_s`.
"""
from __future__ import annotations

import csv
import functools
import glob
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from hub.config import AXES, register_resolvers
from hub.results import RESULTS_FILE

# Overrides that never define an ablation axis: the replicate, where things go, what gets logged.
NOT_AXES = ("seed", "logger", "callbacks", "debug", "paths", "hydra", "mode", "ckpt_path", "project",
            "experiment_name", "hparams_search", "optimized_metric")
DEFAULT_LABEL = "(default)"
STEP_KEY = "trainer/global_step"   # Lightning's step, which WandbLogger logs with every row


@dataclass
class WandbView:
    """What the W&B API holds of one run: final summary, flat config, tags, state, and the API run itself
    (its history is read only for the curve the report draws)."""
    id: str
    summary: dict
    config: dict
    tags: list
    state: str
    source: str
    api_run: object = field(default=None, repr=False)


@dataclass
class Run:
    """One run as the report sees it, whichever source it came from."""
    label: str
    status: str                      # completed | failed (W&B-only runs: finished → completed)
    choices: dict
    seed: object
    overrides: dict                  # axis-candidate overrides, key → value
    metrics: dict                    # test/…, best/<monitor>, val/…, throughput, wall_time_s
    history: list = field(default_factory=list, repr=False)   # rows with "step" and logged values
    error: str | None = None
    folder: Path | None = None
    results: dict = field(default_factory=dict, repr=False)
    wandb: list = field(default_factory=list, repr=False)     # WandbView of this run from the API

    @property
    def completed(self) -> bool:
        return self.status == "completed"


# ---------------------------------------------------------------- results.json and Hydra folders

def override_axes(overrides) -> dict:
    """`key=value` overrides that may be ablation axes: not seeds, paths, loggers or group choices."""
    out = {}
    for text in overrides or []:
        key, sep, value = text.lstrip("+~").partition("=")
        if sep and key not in AXES and not any(key == k or key.startswith(k + ".") for k in NOT_AXES):
            out[key] = value
    return out


def results_metrics(results: dict) -> dict:
    """The numbers of a results.json under the names the W&B summary uses."""
    best = results.get("best") or {}
    out = {**(results.get("final_validation") or {}), **(results.get("test") or {}),
           **(results.get("throughput") or {})}
    if best.get("metric"):
        out[f"best/{best['metric']}"] = best.get("value")
    out.update({k: results[k] for k in ("wall_time_s", "steps") if k in results})
    return _numbers(out)


def _numbers(values: dict) -> dict:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("_")}


def read_csv_history(path: Path) -> list[dict]:
    """csv/metrics.csv (Lightning CSVLogger) as rows of numbers, empty cells left out."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def read_results(path: Path) -> dict:
    """A results.json as a dict; ValueError `file:line:column:` when it is not a JSON object."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 (byte {error.start})") from None
    if not isinstance(results, dict):
        raise ValueError(f"{path}: expected a JSON object, got a {type(results).__name__}")
    return results


def run_from_results(folder: Path) -> Run:
    """A run folder with results.json (completed or failed); a corrupt results.json makes a failed run whose
    error names the file, so one damaged folder does not stop the report."""
    try:
        results = read_results(folder / RESULTS_FILE)
    except ValueError as error:
        return run_from_hydra(folder, str(error))
    return Run(label=str(folder), status=results.get("status", "failed"), choices=results.get("choices") or {},
               seed=results.get("seed"), overrides=override_axes(results.get("overrides")),
               metrics=results_metrics(results), history=read_csv_history(folder / "csv" / "metrics.csv"),
               error=results.get("error"), folder=folder, results=results)


@functools.lru_cache(maxsize=None)
def run_config(folder: Path):
    """The composed config Hydra saved for a run (.hydra/config.yaml), or None."""
    path = folder / ".hydra" / "config.yaml"
    register_resolvers()
    return OmegaConf.load(path) if path.is_file() else None


def _hydra_file(folder: Path, name: str):
    path = folder / ".hydra" / name
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_without_results(folder: Path) -> Run | None:
    """A Hydra run folder (.hydra/) without results.json: killed hard, or still running."""
    config = run_config(folder.resolve())
    if config is not None and config.get("mode") == "generate":
        return None
    return run_from_hydra(folder, "no results.json: the run was killed, or is still running")


def run_from_hydra(folder: Path, error: str) -> Run:
    """A failed run as its .hydra/ files describe it (choices, seed, overrides; empty when there are none)."""
    config = run_config(folder.resolve())
    choices = (((_hydra_file(folder, "hydra.yaml") or {}).get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    return Run(label=str(folder), status="failed", choices={a: choices[a] for a in AXES if choices.get(a)},
               seed=config.get("seed") if config is not None else None,
               overrides=override_axes(_hydra_file(folder, "overrides.yaml")), metrics={},
               history=read_csv_history(folder / "csv" / "metrics.csv"), folder=folder, error=error)


def axis_value(run: Run, axis: str) -> str:
    """A run's choice of a config group, or its value of an overridden key: from its saved config when it
    has one (so runs that kept the default show the default's value), else from its overrides."""
    if axis in AXES:
        return str(run.choices.get(axis, DEFAULT_LABEL))
    config = run_config(run.folder.resolve()) if run.folder else None
    if config is not None:
        value = OmegaConf.select(config, axis, default=DEFAULT_LABEL, throw_on_resolution_failure=False)
        if value is not None:
            return str(value)
    return run.overrides.get(axis, DEFAULT_LABEL)


# ---------------------------------------------------------------- W&B public API

def wandb_api_views(project: str) -> list[WandbView]:
    """Every run of ENTITY/PROJECT through `wandb.Api()` (needs network and a key). The summary is read as the
    plain dict `summary_metrics`: `run.summary` would download logged media to read them."""
    import wandb

    return [WandbView(run.id, dict(run.summary_metrics), dict(run.config), list(run.tags), run.state,
                      f"W&B API {project}", run)
            for run in wandb.Api().runs(project)]


def run_from_wandb(view: WandbView) -> Run:
    """A run known only to W&B: choices from its `group=choice` tags, the seed from its config."""
    tags = dict(t.split("=", 1) for t in view.tags if "=" in t)
    return Run(label=f"wandb:{view.id}", status="completed" if view.state == "finished" else "failed",
               choices={a: tags[a] for a in AXES if a in tags}, seed=view.config.get("seed"), overrides={},
               metrics=_numbers(view.summary), wandb=[view],
               error=None if view.state == "finished" else f"W&B state {view.state}")


def wandb_history(view: WandbView, key: str) -> list[dict]:
    """Every row of `key` (unsampled: `scan_history`), with Lightning's global step as "step"."""
    if view.api_run is None:
        return []
    return [{key: row[key], "step": row.get(STEP_KEY, row.get("_step"))}
            for row in view.api_run.scan_history(keys=[key, STEP_KEY]) if row.get(key) is not None]


def add_wandb_history(runs: list[Run], key: str) -> None:
    """Runs without a local CSV log take the curve of `key` from W&B."""
    for run in runs:
        for view in run.wandb:
            run.history = run.history or wandb_history(view, key)


@dataclass
class Check:
    run: str
    key: str
    results: float
    wandb: float | None
    source: str

    @property
    def status(self) -> str:
        if self.wandb is None:
            return "missing in W&B"
        return "agree" if math.isclose(self.results, self.wandb, rel_tol=1e-9, abs_tol=1e-12) else "MISMATCH"


def cross_checks(runs: list[Run]) -> list[Check]:
    """results.json's test and best metrics against the W&B summary of the same run."""
    checks = []
    for run in runs:
        keys = [k for k in run.metrics if k.startswith(("test/", "best/"))] if run.results else []
        for view in run.wandb:
            checks += [Check(run.label, k, run.metrics[k], _number(view.summary.get(k)), view.source) for k in keys]
    return checks


def _number(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---------------------------------------------------------------- finding runs

def expand(paths) -> list[Path]:
    """PATH arguments (folders, results.json files, globs) as existing folders."""
    folders = []
    for text in paths:
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        if not matches or not all(os.path.exists(m) for m in matches):
            raise FileNotFoundError(f"{text}: no such file or folder")
        folders += [Path(m).parent if Path(m).is_file() else Path(m) for m in matches]
    return folders


def natural(text: str) -> list:
    """A sort key that puts "run-2" before "run-10"."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def find_runs(paths, wandb_project: str | None = None) -> list[Run]:
    """Every run below PATHS (results.json, or .hydra/ without it), then the runs of the W&B project: joined to a
    local run by the W&B id its results.json records, else added as runs known only to W&B."""
    runs = {}
    for root in expand(paths):
        for path in root.rglob(RESULTS_FILE):
            runs.setdefault(path.parent.resolve(), run_from_results(path.parent))
        for hydra_dir in root.rglob(".hydra"):
            folder = hydra_dir.parent.resolve()
            if folder not in runs and not (folder / RESULTS_FILE).exists():
                run = run_without_results(hydra_dir.parent)
                if run:
                    runs[folder] = run
    listed = sorted(runs.values(), key=lambda r: natural(r.label))
    if wandb_project:
        by_id = {(r.results.get("wandb") or {}).get("id"): r for r in listed}
        for view in wandb_api_views(wandb_project):
            if view.id in by_id:
                by_id[view.id].wandb.append(view)
            else:
                listed.append(run_from_wandb(view))
    _shorten_labels(listed)
    return listed


def _shorten_labels(runs: list[Run]) -> None:
    """Folder labels relative to the folder all runs share."""
    folders = [r.folder.resolve() for r in runs if r.folder]
    if not folders:
        return
    common = Path(os.path.commonpath(folders))
    base = common.parent if len(folders) == 1 else common
    for run in runs:
        if run.folder:
            run.label = str(run.folder.resolve().relative_to(base))
