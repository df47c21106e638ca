"""The report as report.md, a self-contained report.html, a terminal summary, and one curve PNG per table."""
from __future__ import annotations

import base64
import html
import io
import re
import statistics
from pathlib import Path
from typing import NamedTuple

from hub.report.blocks import Report, Table, block_axes, varying_axes
from hub.report.runs import axis_value
from hub.report.stats import ALPHA, fmt, fmt_diff, fmt_p

SCALE_NOTE = ("Values are raw, as logged: correlations and accuracies lie in [−1, 1] "
              "(the README's tables show them ×100).")
TESTS_NOTE = ("Each table compares runs of one block only. Every pair of its groups gets a paired t-test over "
              "the seeds both ran (one run per seed and choice; a table that pools over other axes pairs on "
              "those values too), else Welch's t-test; p-values are Holm-adjusted over the table's pairs, "
              f"beyond noise means Holm p < {ALPHA}; differences are better − worse with a 95% t interval "
              "(paired: of the per-seed differences; Welch: Welch–Satterthwaite); the Wilcoxon signed-rank p "
              "(paired only, unadjusted) is a check.")
RANKS_NOTE = ("Across blocks only ranks: within each block the choices are ranked by mean (1 = best, ties share "
              "the average rank), and a choice's mean rank is over the blocks it ran in; wins/ties/losses count "
              f"the pairs of each block's table, a win or loss being beyond noise (Holm p < {ALPHA}), anything "
              "else, untested pairs too, a tie.")
BAND = "mean over seeds, band min–max"


# ---------------------------------------------------------------- cells shared by every format

def table_cells(table: Table) -> tuple[list, list]:
    """Header and rows of a group table."""
    header = [*table.axes, "n", "failed", "mean ± sd", "95% CI", ""]
    rows = []
    for g in table.groups:
        s = g.stats
        spread = f"{fmt(s.mean)} ± {fmt(s.sd)}" if s.sd is not None else fmt(s.mean)
        ci = f"[{fmt(s.ci[0])}, {fmt(s.ci[1])}]" if s.ci else "—"
        rows.append([*g.values, str(s.n), str(g.failed), spread, ci, "winner" if g is table.winner else ""])
    return header, rows


def pair_cells(table: Table) -> tuple[list, list]:
    """Every pair of a table: its test, the difference with its interval, p, Holm p, Wilcoxon p."""
    header = ["pair", "test", "n", "difference [95% CI]", "p", "Holm p", "Wilcoxon p", ""]
    rows = [[f"{p.better.name} − {p.worse.name}", p.result.test, p.result.n, fmt_diff(p.result), fmt_p(p.result.p),
             fmt_p(p.p_holm), fmt_p(p.result.wilcoxon), "beyond noise" if p.beyond_noise else p.result.note]
            for p in table.pairs]
    return header, rows


def summary_cells(summary) -> tuple[list, list]:
    """One row per choice: blocks, mean rank, total wins/ties/losses, and rank and record in each block."""
    header = [summary.axis, "blocks", "mean rank", "wins", "ties", "losses", "rank (wins-ties-losses) per block"]
    rows = []
    for s in summary.standings:
        per_block = "; ".join(f"{b}: {s.ranks[b]:g} ({'-'.join(map(str, s.records[b]))})"
                              for b in summary.blocks if b in s.ranks)
        rows.append([s.choice, str(len(s.ranks)), f"{s.mean_rank:.2f}", *map(str, s.totals), per_block])
    return header, rows


def run_cells(report: Report) -> tuple[list, list]:
    """Header and rows of the table of every run, failed ones with their error."""
    axes = [*block_axes(report.runs), *varying_axes(report.runs)]
    header = ["run", "status", *axes, "seed", report.metric, "W&B", "error"]
    rows = [[r.label, r.status, *(axis_value(r, a) for a in axes), str(r.seed), fmt(r.metrics.get(report.metric)),
             ", ".join(v.id for v in r.wandb) or "—", (r.error or "").splitlines()[0][:200] if r.error else ""]
            for r in report.runs]
    return header, rows


def check_cells(report: Report) -> tuple[list, list]:
    header = ["run", "metric", "results.json", "W&B summary", "source", "check"]
    return header, [[c.run, c.key, repr(c.results), repr(c.wandb), c.source, c.status] for c in report.checks]


def intro_lines(report: Report) -> list[str]:
    completed = sum(r.completed for r in report.runs)
    metric = f"metric {report.metric} ({report.direction})" if completed else "no metric"
    blocks = (f"{len(report.blocks)} blocks ({'; '.join(report.blocks)}), compared separately"
              if report.blocks else "one block")
    lines = [f"{len(report.runs)} runs ({completed} completed, {len(report.runs) - completed} failed); {metric}; "
             f"{blocks}; mean ± sd over completed runs, 95% CI of the mean (Student t).", TESTS_NOTE, SCALE_NOTE]
    if report.checks:
        bad = [c for c in report.checks if c.status != "agree"]
        lines.append(f"W&B cross-check: {len(report.checks) - len(bad)} of {len(report.checks)} values agree"
                     + (f"; {len(bad)} do not (see below)." if bad else "."))
    return lines


def sections(report: Report) -> list[tuple[str, list, str]]:
    """(title, [(header, rows), …], sentence) in report order: ranks across blocks, then each block's tables."""
    out = [(f"Across blocks: {s.axis}", [summary_cells(s)], RANKS_NOTE) for s in report.summaries]
    return out + [(t.title, [table_cells(t), pair_cells(t)] if t.pairs else [table_cells(t)], t.verdict)
                  for t in report.tables]


# ---------------------------------------------------------------- formats

def markdown(report: Report) -> str:
    """report.md: the intro, the rank summaries, one section per table with its pairs, verdict and curve, the
    runs, the W&B check."""
    def md_table(header, rows):
        cells = [header, ["---"] * len(header), *rows]
        return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells)

    plots = {t.title: t.plot for t in report.tables if t.plot}
    parts = ["# Ablation report", "", *intro_lines(report), ""]
    for title, grids, sentence in sections(report):
        parts += [f"## {title}", ""] + [line for grid in grids for line in (md_table(*grid), "")] + [sentence, ""]
        if title in plots:
            parts += [f"![{report.curve_key} ({BAND}) by {title}]({plots[title]})", ""]
    parts += ["## Runs", "", md_table(*run_cells(report)), ""]
    if report.checks:
        parts += ["## W&B cross-check", "", md_table(*check_cells(report)), ""]
    return "\n".join(parts)


def html_report(report: Report, images: dict) -> str:
    """report.html: the same sections, the curves inlined as base64 PNG; no external assets."""
    def html_table(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    plots = {t.title: t.plot for t in report.tables if t.plot}
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Ablation report</title><style>"
             "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #999;padding:4px 8px;text-align:left}</style></head><body>",
             "<h1>Ablation report</h1>", *(f"<p>{html.escape(line)}</p>" for line in intro_lines(report))]
    for title, grids, sentence in sections(report):
        parts += [f"<h2>{html.escape(title)}</h2>", *(html_table(*grid) for grid in grids),
                  f"<p>{html.escape(sentence)}</p>"]
        if title in plots:
            data = base64.b64encode(images[plots[title]]).decode("ascii")
            parts.append(f"<img alt='{html.escape(f'{report.curve_key} ({BAND}) by {title}')}' "
                         f"src='data:image/png;base64,{data}'>")
    parts += ["<h2>Runs</h2>", html_table(*run_cells(report))]
    if report.checks:
        parts += ["<h2>W&amp;B cross-check</h2>", html_table(*check_cells(report))]
    return "\n".join(parts + ["</body></html>"])


def text_summary(report: Report) -> str:
    """A plain-text version for the terminal: the rank summaries, each table with its pairs and verdict,
    the failed runs."""
    def aligned(header, rows):
        widths = [max(len(c) for c in column) for column in zip(header, *rows)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows])

    parts = intro_lines(report)
    for title, grids, sentence in sections(report):
        parts += ["", f"[{title}]", *(aligned(*grid) for grid in grids), sentence]
    failed = [r for r in report.runs if not r.completed]
    parts += [""] + [f"failed: {r.label}: {(r.error or '').splitlines()[0] if r.error else ''}" for r in failed]
    parts += [f"W&B MISMATCH: {c.run} {c.key}: results.json {c.results!r} vs {c.source} {c.wandb!r}"
              for c in report.checks if c.status == "MISMATCH"]
    return "\n".join(parts).rstrip()


# ---------------------------------------------------------------- learning curves

class Curve(NamedTuple):
    steps: list
    mean: list
    low: list      # min over the runs at that step
    high: list     # max


def mean_curve(runs: list, key: str) -> Curve:
    """`key` against step: mean, min and max over the runs (seeds) that logged it at that step."""
    by_step = {}
    for run in runs:
        for row in run.history:
            if row.get(key) is not None and row.get("step") is not None:
                by_step.setdefault(row["step"], []).append(row[key])
    steps = sorted(by_step)
    return Curve(steps, [statistics.fmean(by_step[s]) for s in steps], [min(by_step[s]) for s in steps],
                 [max(by_step[s]) for s in steps])


def plot_curves(table: Table, key: str) -> bytes | None:
    """A PNG of each group's curve of `key`, the mean over its seeds with a min–max band; None when no run
    logged `key`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    curves = [(g.name, mean_curve(g.runs, key)) for g in table.groups]
    curves = [(name, c) for name, c in curves if c.steps]
    if not curves:
        return None
    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.subplots()
    for name, curve in curves:
        [line] = ax.plot(curve.steps, curve.mean, marker="o", label=name)
        ax.fill_between(curve.steps, curve.low, curve.high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="step", ylabel=f"{key}\n({BAND})", title=table.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_report(report: Report, out: str | Path) -> dict:
    """Write the curve PNGs, report.md and report.html into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    for index, table in enumerate(report.tables):
        png = plot_curves(table, report.curve_key) if report.curve_key else None
        if png:
            table.plot = f"curves-{index}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', table.title)}.png"
            images[table.plot] = png
            (out / table.plot).write_bytes(png)
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    (out / "report.html").write_text(html_report(report, images), encoding="utf-8")
    return {"md": out / "report.md", "html": out / "report.html", "plots": [out / p for p in images]}
