"""Print one row per results.json: the axis choices that vary, best/final validation, test, speed.

    python benchmarks/table.py DIR [DIR ...] [--gpu-csv FILE]

Every results.json below the folders, oldest first. --gpu-csv: nvidia-smi utilization samples
(`--query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500`), summarized below the table.
"""
import json
import math
import sys
from pathlib import Path


def rows(folders):
    for folder in folders:
        for path in sorted(Path(folder).rglob("results.json"), key=lambda p: p.stat().st_mtime):
            yield json.loads(path.read_text())


def number(value, scale=1.0):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * scale:.4g}"


def main(folders):
    results = list(rows(folders))
    if not results:
        sys.exit(f"no results.json under {folders}")
    axes = sorted({k for r in results for k in r["choices"]})
    varying = [a for a in axes if len({r["choices"].get(a) for r in results}) > 1] or ["data"]
    overrides = lambda r: " ".join(o for o in r.get("overrides", []) if "=" in o and o.split("=")[0].count(".") > 0)
    header = [*varying, "status", "best", "final val", "test", "steps", "tokens/s", "wall s", "overrides"]
    print(" | ".join(header))
    for r in results:
        best, speed = r.get("best") or {}, r.get("throughput") or {}
        scale = 100 if "spearman" in str(best.get("metric")) else 1
        final = next(iter((r.get("final_validation") or {}).values()), None)
        test = next(iter((r.get("test") or {}).values()), None)
        print(" | ".join([*(str(r["choices"].get(a)) for a in varying), r["status"],
                          f"{best.get('metric', '-')}={number(best.get('value'), scale)}",
                          number(final, scale), number(test, scale), str(r.get("steps", "-")),
                          number(speed.get("tokens_per_s")), number(r.get("wall_time_s")), overrides(r)]))


def gpu_utilization(path):
    samples = [float(line.split(",")[0]) for line in open(path) if line.split(",")[0].strip().isdigit()]
    busy = [s for s in samples if s > 0]
    print(f"GPU utilization: mean {sum(samples) / max(1, len(samples)):.0f}% over {len(samples)} samples "
          f"(0.5 s apart), {sum(busy) / max(1, len(busy)):.0f}% over the samples > 0")


if __name__ == "__main__":
    args = sys.argv[1:]
    gpu_csv = args.pop(args.index("--gpu-csv") + 1) if "--gpu-csv" in args else None
    args = [a for a in args if a != "--gpu-csv"]
    main(args or ["outputs"])
    if gpu_csv:
        gpu_utilization(gpu_csv)
