"""The card's measured bf16 matrix-product rate, the denominator of MFU in benchmarks/speed.sh.

Mean of ten 8192×8192×8192 bf16 products on random data after three warm-ups, timed with CUDA events.

    python benchmarks/matmul_peak.py --out peak.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=8192)
    args = parser.parse_args()
    n = args.size
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / 10
    result = {"tflops": round(2 * n ** 3 / seconds / 1e12, 1), "device": torch.cuda.get_device_name()}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
