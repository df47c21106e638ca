"""Hydra multirun under DDP: make Lightning's extra ranks run their parent's job, not the whole sweep.

Lightning starts ranks ≥ 1 by re-running the script with the parent's command line plus
`hydra.run.dir=... hydra.job.name=train_ddp_process_<rank> hydra.output_subdir=null`. For a multirun
(`-m key=a,b`) that command line is the whole sweep: every extra rank would run every job, joining the
parent's process group with another job's config and writing new sweep folders. The parent exports its
job folder (JOB_DIR_ENV); an extra rank runs that job's own overrides (its `.hydra/overrides.yaml`) there.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import yaml

JOB_DIR_ENV = "HUB_JOB_DIR"
MULTIRUN_FLAGS = ("-m", "--multirun")


def export_job_dir(output_dir: str) -> None:
    """Called by the job (rank 0) before Lightning starts the other ranks, which inherit the environment."""
    os.environ[JOB_DIR_ENV] = str(output_dir)


def single_job_argv(argv: list[str], environ=os.environ) -> list[str]:
    """`argv` unchanged, except on a DDP rank ≥ 1 started from a multirun job: that job's overrides and folder."""
    if int(environ.get("LOCAL_RANK", "0")) == 0 or not any(flag in argv for flag in MULTIRUN_FLAGS):
        return argv
    job_dir = Path(environ[JOB_DIR_ENV])
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    lightning_args = [a for a in argv if a.split("=", 1)[0] in ("hydra.job.name", "hydra.output_subdir")]
    return [argv[0], *overrides, f"hydra.run.dir={job_dir}", *lightning_args]


@contextlib.contextmanager
def isolated_job():
    """Run one job of a multirun so that the next starts clean: Lightning's DDP leaves LOCAL_RANK, WORLD_SIZE,
    MASTER_PORT, ... in os.environ and an initialized process group, and with LOCAL_RANK set the next job
    would take its processes as launched from outside and wait for ranks that have exited."""
    before = dict(os.environ)
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key in set(os.environ) - set(before):
            del os.environ[key]
        os.environ.update(before)
