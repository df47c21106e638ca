"""results.json: what a run chose, what it scored and what it cost, in one machine-readable file."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from pathlib import Path

import torch

from hub.config import PROJECT_ROOT

RESULTS_FILE = "results.json"


def code_version() -> str:
    """`git describe` of the project (with -dirty for uncommitted changes) when the project is its own git
    repository; otherwise (no git, or a copy inside another repository, whose commit would say nothing about
    this code) "unknown+<digest of the source files>"."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        if Path(top).resolve() == PROJECT_ROOT.resolve():
            return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=PROJECT_ROOT, capture_output=True,
                                  text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"unknown+{source_digest()}"


SOURCE_FOLDERS = ("conf", "datamodules", "hub", "lit_models")


def source_digest(root: Path = PROJECT_ROOT) -> str:
    """sha256 over the project's code and config files (run.py, compare.py, the packages, conf/), by path."""
    files = [root / "run.py", root / "compare.py"] + sorted(
        p for folder in SOURCE_FOLDERS for p in (root / folder).rglob("*") if p.suffix in (".py", ".yaml"))
    digest = hashlib.sha256()
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _number(value):
    if value is None:
        return None
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    return value if math.isfinite(value) else None


def best_checkpoint(trainer) -> dict | None:
    """The best checkpoint's path, monitored value, epoch and step (None when none was written, or when the
    run failed before it had a trainer)."""
    from hub.checkpoints import LastCheckpoint

    if trainer is None:
        return None
    callback = next((c for c in trainer.checkpoint_callbacks if not isinstance(c, LastCheckpoint)), None)
    if callback is None or not callback.best_model_path or not os.path.isfile(callback.best_model_path):
        return None
    meta = torch.load(callback.best_model_path, map_location="cpu", mmap=True, weights_only=True)
    return {"path": callback.best_model_path, "metric": callback.monitor,
            "value": _number(callback.best_model_score), "epoch": meta["epoch"], "step": meta["global_step"]}


def metrics_of(results: list[dict] | None) -> dict:
    merged = {}
    for part in results or []:
        merged.update({k: _number(v) for k, v in part.items()})
    return merged


def write_results(output_dir: str | Path, results: dict) -> Path:
    path = Path(output_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def summary_lines(results: dict) -> list[str]:
    """A few human lines: the choices, best validation, test and speed (correlations shown ×100)."""
    def show(name, value):
        if value is None:
            return f"{name}=n/a"
        return f"{name}={value * 100:.2f}" if "spearman" in name else f"{name}={value:.4g}"

    choices = " ".join(f"{k}={v}" for k, v in results["choices"].items())
    lines = [f"run {results['status']}: {choices} seed={results['seed']}"]
    best = results.get("best")
    if best:
        lines.append(f"  best {show(best['metric'], best['value'])} at epoch {best['epoch']} step {best['step']}")
    if results.get("test"):
        lines.append("  test " + " ".join(show(k, v) for k, v in results["test"].items()))
    speed = results.get("throughput") or {}
    if speed.get("train_examples"):
        lines.append(f"  train {speed['examples_per_s']} examples/s, {speed['tokens_per_s']} tokens/s, "
                     f"wall {results['wall_time_s']:.1f}s")
    if results.get("error"):
        lines.append(f"  error: {results['error']}")
    lines.append(f"  results: {results['output_dir']}/{RESULTS_FILE}")
    return lines
