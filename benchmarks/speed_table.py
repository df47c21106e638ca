"""The table of one section of benchmarks/speed.sh: one row per folder, hub runs (results.json) and the
other trainers (result.json) alike, with the process wall time that speed.sh recorded. For hub rows, run_s is results.json's wall_time_s (from
the composed config to results.json: imports of torch and Lightning, data, model, fit, test); process_s minus
run_s is Python's start-up, Hydra's composition and the process's exit."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def row(folder: Path) -> dict:
    seconds, rc = (folder / "process.txt").read_text().split() if (folder / "process.txt").exists() else ("?", "?")
    out = {"row": folder.name, "exit": rc, "process_s": seconds}
    if (folder / "results.json").exists():
        r = json.loads((folder / "results.json").read_text())
        speed, throughput = r.get("speed") or {}, r.get("throughput") or {}
        test = r.get("test") or r.get("final_validation") or {}
        out |= {"examples_per_s": throughput.get("examples_per_s"), "tokens_per_s": throughput.get("tokens_per_s"),
                "train_s": throughput.get("train_time_s"), "data_wait_s": throughput.get("data_wait_s"),
                "run_s": r.get("wall_time_s"),
                "metric": ", ".join(f"{k} {100 * v:.2f}" if abs(v) <= 1 else f"{k} {v:.3f}" for k, v in test.items()),
                "path": speed.get("path", "?") + (f" ({speed['graphs']} graphs)" if speed.get("graphs") else "")
                        + (", compiled" if speed.get("compiled") else ""),
                "status": r.get("status")}
    elif (folder / "result.json").exists():
        r = json.loads((folder / "result.json").read_text())
        metric = {k: v for k, v in r.items() if k.endswith(("spearman", "accuracy", "loss")) and v is not None}
        out |= {"examples_per_s": r.get("examples_per_s"), "tokens_per_s": r.get("tokens_per_s"),
                "train_s": r.get("train_time_s"),
                "metric": ", ".join(f"{k} {100 * v:.2f}" if abs(v) <= 1 else f"{k} {v:.3f}" for k, v in metric.items()),
                **{k: v for k, v in r.items() if k in ("tflops", "mfu")}}
    return out


def add_mfu(rows: list[dict], section: Path) -> None:
    """MFU of each hub row, 6 · parameters · tokens/s over the peak that matmul_peak measured in the section."""
    peak = next((r["tflops"] for r in rows if r.get("tflops")), None)
    for r in rows:
        folder = section / r["row"]
        if peak and (folder / "results.json").exists() and r.get("tokens_per_s"):
            parameters = json.loads((folder / "results.json").read_text()).get("parameters")
            if parameters:
                r["mfu"] = f"{100 * 6 * parameters * r['tokens_per_s'] / (peak * 1e12):.1f} %"


def main(section: Path) -> None:
    rows = [row(f) for f in sorted(p for p in section.iterdir() if p.is_dir())]
    add_mfu(rows, section)
    columns = ["row", "examples_per_s", "tokens_per_s", "train_s", "data_wait_s", "run_s", "process_s", "metric", "path",
               "tflops", "mfu", "exit"]
    columns = [c for c in columns if any(r.get(c) not in (None, "") for r in rows)]
    lines = [f"## {section.name}", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    print("\n".join(lines))
    (section / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
