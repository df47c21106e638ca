"""Compare runs offline: each varied axis within each block (data set × task): mean ± sd over seeds, 95% CI,
every pair of choices tested (paired t-test by seed, else Welch; Holm-adjusted) with the difference and its
95% CI; across blocks only ranks and wins/ties/losses; learning curves (mean over seeds, min–max band), the
failed runs, and, with --wandb-project, a check of what the W&B API holds.

    python compare.py outputs/multirun/2026-11-25/15-00-00-000000 [more folders or globs]
    python compare.py 'outputs/runs/*/*' --metric best/val/spearman --out reports/cosent
    python compare.py --wandb-project ENTITY/zh-nlp-hub        # runs from the W&B API (online)

Writes report.md, report.html (self-contained) and the curve PNGs into --out (default: the first
PATH's folder) and prints the tables.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hub.report import build_report, expand, text_summary, write_report


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="run folders, multirun folders or globs")
    parser.add_argument("--metric", help="test/<m>, best/<monitor> or val/<m> (default: the task's test metric, "
                                         "else the best validation value)")
    parser.add_argument("--out", help="folder for report.md, report.html and the PNGs (default: the first PATH)")
    parser.add_argument("--wandb-project", help="ENTITY/PROJECT: add the runs of the W&B API and check their "
                                                "summaries against results.json (needs network)")
    args = parser.parse_args(argv)
    if not args.paths and not args.wandb_project:
        parser.error("give run folders or --wandb-project")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = build_report(args.paths, args.metric, args.wandb_project)
    except (FileNotFoundError, ValueError) as error:
        print(f"compare.py: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else (expand(args.paths)[0] if args.paths else Path.cwd())
    written = write_report(report, out)
    print(text_summary(report))
    print(f"\nreport: {written['md']}\n        {written['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
