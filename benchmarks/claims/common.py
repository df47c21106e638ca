"""What the claim benchmarks share: the device, a timer that waits for the GPU, and the table printer."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], None], repeats: int = 10, warmup: int = 3) -> tuple[float, float | None]:
    """(median seconds of `step`, peak memory in GiB over the timed calls; None off CUDA)."""
    for _ in range(warmup):
        step()
    sync()
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if DEVICE.type == "cuda" else None
    return statistics.median(seconds), peak


def timed_or_oom(step: Callable[[], None], **timing) -> tuple[float | None, float | None]:
    """`timed(step)`, or (None, None) when the device runs out of memory (a setting too large for the card)."""
    try:
        return timed(step, **timing)
    except torch.OutOfMemoryError:
        return None, None
    finally:
        if DEVICE.type == "cuda":
            torch.cuda.empty_cache()


def device_name() -> str:
    return torch.cuda.get_device_name() if DEVICE.type == "cuda" else "CPU"


def write_table(header: list[str], rows: list[list], out: str | None, title: str) -> None:
    """Print a Markdown table (and write it to `out`)."""
    lines = [f"# {title}", "", f"device: {device_name()}, torch {torch.__version__}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("—" if v is None else str(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
