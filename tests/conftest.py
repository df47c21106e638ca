"""Shared fixtures: the data folder, Hydra composition, the CLI, and the expanded e5-small-zh model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from hub.config import PROJECT_ROOT, register_resolvers

register_resolvers()
CONF_DIR = PROJECT_ROOT / "conf"
# A folder beside the checkout holding data/, models/e5-small-zh and tools/expand_pretrained.py.
SHARED = Path(os.environ.get("HUB_SHARED_DIR", PROJECT_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The official data folders: $HUB_DATA_DIR, else the shared folder's data/."""
    path = Path(os.environ.get("HUB_DATA_DIR", SHARED / "data"))
    if not (path / "stsb_zh").is_dir():
        pytest.skip(f"no dataset folder at {path} (set HUB_DATA_DIR)")
    return path


def compose_config(*overrides: str, output_dir: str = "/tmp/zh-nlp-hub-test"):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={output_dir}", *overrides])


def run_cli(tmp_path: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`python run.py ARGS` with its outputs under tmp_path; returns the finished process."""
    full_env = {**os.environ, "HUB_LOG_DIR": str(tmp_path / "outputs"), "HUB_CACHE_DIR": str(tmp_path / "cache"),
                "WANDB_MODE": "disabled", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(PROJECT_ROOT / "run.py"), *args], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"run.py {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def results_of(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "outputs").rglob("results.json"))]


@pytest.fixture(scope="session")
def e5_dir(tmp_path_factory) -> Path:
    """e5-small-zh expanded into an ordinary Hugging Face folder by the tool that ships with it."""
    tool, packed = SHARED / "tools" / "expand_pretrained.py", SHARED / "models" / "e5-small-zh"
    if not tool.is_file() or not packed.is_dir():
        pytest.skip(f"no packed e5-small-zh at {packed}")
    out = tmp_path_factory.mktemp("e5-small-zh")
    subprocess.run([sys.executable, str(tool), str(packed), str(out)], check=True, capture_output=True)
    return out
