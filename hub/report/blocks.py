"""What is compared with what. Data set and task are blocks, never axes: a score on stsb and one on bq measure
different things, so every ablation axis is compared inside each block only, and across blocks the report
gives ranks, not pooled means."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from hub.config import AXES
from hub.report.runs import (
    Run,
    add_wandb_history,
    axis_value,
    cross_checks,
    find_runs,
    natural,
)
from hub.report.stats import (
    ALPHA,
    PAIRED,
    Comparison,
    Stats,
    compare,
    describe,
    fmt,
    fmt_diff,
    fmt_p,
    holm,
    ranks,
)

BLOCKS = ("task", "data")
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error", "time", "wait")
NO_METRIC = "(no completed run)"


# ---------------------------------------------------------------- metric

def default_metric(runs: list[Run]) -> str | None:
    """The task's test metric when the runs have it, else the best validation value, else None."""
    keys = [k for r in runs if r.completed for k in r.metrics]
    monitors = [k for k in keys if k.startswith("best/") and k not in ("best/epoch", "best/step")]
    for monitor in monitors:
        test = "test/" + monitor.split("/")[-1]
        if test in keys:
            return test
    candidates = monitors or [k for k in keys if k.startswith("test/")]
    return candidates[0] if candidates else None


def higher_is_better(metric: str) -> bool:
    return not any(word in metric.lower() for word in LOWER_IS_BETTER)


def validation_key(metric: str, runs: list[Run]) -> str | None:
    """The validation metric whose curve goes with `metric`: test/x and best/val/x → val/x."""
    name = metric.removeprefix("best/")
    if name.startswith("val/"):
        return name
    if name.startswith("test/"):
        return "val/" + name.removeprefix("test/")
    monitors = [k.removeprefix("best/") for r in runs for k in r.metrics if k.startswith("best/val/")]
    return monitors[0] if monitors else None


# ---------------------------------------------------------------- blocks and axes

def block_axes(runs: list[Run]) -> list[str]:
    """The block groups (task, data) with more than one value: the ones a block's label names."""
    return [a for a in BLOCKS if len({axis_value(r, a) for r in runs}) > 1]


def split_blocks(runs: list[Run]) -> list[tuple[tuple, list]]:
    """Runs by block, e.g. ((("data", "bq"),), [...]); one unlabelled block when task and data never vary."""
    shown, blocks = block_axes(runs), {}
    for run in runs:
        blocks.setdefault(tuple((a, axis_value(run, a)) for a in shown), []).append(run)
    return sorted(blocks.items(), key=lambda kv: [natural(v) for _, v in kv[0]])


def block_label(block: tuple) -> str:
    return ", ".join(f"{a}={v}" for a, v in block)


def varying_axes(runs: list[Run]) -> list[str]:
    """Ablation axes: choice groups and overrides with more than one value inside some block. Blocks and seeds
    never count."""
    candidates = [a for a in AXES if a not in BLOCKS] + sorted({k for r in runs for k in r.overrides})
    blocks = [members for _, members in split_blocks(runs)]
    return [a for a in candidates if any(len({axis_value(r, a) for r in members}) > 1 for members in blocks)]


# ---------------------------------------------------------------- tables

@dataclass
class Group:
    values: tuple
    runs: list
    units: list        # (pairing key, metric) of each completed run; key None when the seed is unknown

    @property
    def samples(self) -> list[float]:
        return [value for _, value in self.units]

    @property
    def stats(self) -> Stats:
        return describe(self.samples)

    @property
    def failed(self) -> int:
        return sum(not r.completed for r in self.runs)

    @property
    def name(self) -> str:
        return ", ".join(self.values) if self.values else "all runs"


@dataclass
class Pair:
    """Two groups of one table, the better-ranked first, with the table-wide Holm-adjusted p."""
    better: Group
    worse: Group
    result: Comparison
    p_holm: float | None

    @property
    def beyond_noise(self) -> bool:
        return self.p_holm is not None and self.p_holm < ALPHA


@dataclass
class Table:
    title: str
    block: tuple          # (("data", "bq"),): the block all its runs share; () for one unlabelled block
    axes: tuple
    kind: str             # axis | combinations | within (an axis at one setting of the others) | all
    groups: list
    ranked: list          # the groups with a value, best mean first
    pairs: list = field(default_factory=list)
    plot: str | None = None    # PNG file name in the output folder

    @property
    def winner(self) -> Group | None:
        return self.ranked[0] if self.ranked else None

    @property
    def verdict(self) -> str:
        """The best group and its difference from the runner-up: test, p, Holm-adjusted p, interval."""
        if not self.ranked:
            return "no completed run to rank"
        best = f"winner: {self.winner.name} (mean {fmt(self.winner.stats.mean)})"
        if len(self.ranked) == 1:
            return f"{best}; no other group to compare"
        pair = self.pairs[0]
        result, vs = pair.result, f"vs runner-up {pair.worse.name}"
        if result.p is None:
            return f"{best}; {vs}: {result.note}"
        test = "paired t-test" if result.test == PAIRED else "Welch's t-test"
        noise = f"beyond noise (Holm p < {ALPHA})" if pair.beyond_noise else f"within noise (Holm p ≥ {ALPHA})"
        return (f"{best}; {vs}: {test} ({result.n}) p = {fmt_p(result.p)}, Holm p = {fmt_p(pair.p_holm)}, {noise}; "
                f"difference {fmt_diff(result)}")


def pair_key(run: Run, pooled: tuple):
    """What pairs a run with a run of another choice: its seed, and its values of the axes the table pools over
    (those that vary inside a group: an axis that moves with the table's own, as trainer.devices with
    trainer=ddp, is no pooling and no obstacle to pairing)."""
    return None if run.seed is None else (run.seed, *(axis_value(run, a) for a in pooled))


def group_table(runs: list[Run], axes: tuple, metric: str, block: tuple = (), kind: str = "axis",
                where: tuple = (), pooled: tuple = ()) -> Table:
    """Runs grouped by their values on `axes`, ranked by mean, every pair tested and Holm-adjusted together."""
    by_values = {}
    for run in runs:
        by_values.setdefault(tuple(axis_value(run, a) for a in axes), []).append(run)
    pooled = tuple(a for a in pooled if any(len({axis_value(r, a) for r in rs}) > 1 for rs in by_values.values()))
    groups = [Group(values, members, [(pair_key(r, pooled), r.metrics[metric]) for r in members
                                      if r.completed and r.metrics.get(metric) is not None])
              for values, members in sorted(by_values.items(), key=lambda kv: [natural(v) for v in kv[0]])]
    sign = 1 if higher_is_better(metric) else -1
    ranked = sorted((g for g in groups if g.units), key=lambda g: -sign * statistics.fmean(g.samples))
    tested = [(b, w, compare(b.units, w.units)) for i, b in enumerate(ranked) for w in ranked[i + 1:]]
    adjusted = holm([result.p for *_, result in tested])
    conditions = [block_label(block)] * bool(block) + [f"{a}={v}" for a, v in where]
    title = (" × ".join(axes) or "all runs") + (" | " + ", ".join(conditions) if conditions else "")
    return Table(title, block, tuple(axes), kind, groups, ranked,
                 [Pair(b, w, result, p) for (b, w, result), p in zip(tested, adjusted)])


def block_tables(block: tuple, runs: list[Run], metric: str) -> list[Table]:
    """One block's tables: each axis (paired across the block's other axes too), the combinations when several
    axes vary, and each axis within every setting of the others ("loss | optimizer.lr=1e-3")."""
    axes = varying_axes(runs)
    if not axes:
        return [group_table(runs, (), metric, block, "all")]
    tables = [group_table(runs, (a,), metric, block, pooled=tuple(o for o in axes if o != a)) for a in axes]
    if len(axes) > 1:
        tables.append(group_table(runs, tuple(axes), metric, block, "combinations"))
        for axis in axes:
            others, settings = [a for a in axes if a != axis], {}
            for run in runs:
                settings.setdefault(tuple(axis_value(run, a) for a in others), []).append(run)
            for setting in sorted(settings, key=lambda values: [natural(v) for v in values]):
                where = tuple(zip(others, setting))
                tables.append(group_table(settings[setting], (axis,), metric, block, "within", where))
    return tables


def build_tables(runs: list[Run], metric: str) -> list[Table]:
    return [t for block, members in split_blocks(runs) for t in block_tables(block, members, metric)]


# ---------------------------------------------------------------- across blocks: ranks only

@dataclass
class Standing:
    """One choice of an axis across blocks: its rank (1 = best) and [wins, ties, losses] in each block."""
    choice: str
    ranks: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)

    @property
    def mean_rank(self) -> float:
        return statistics.fmean(self.ranks.values())

    @property
    def totals(self) -> list[int]:
        return [sum(r[i] for r in self.records.values()) for i in range(3)]


@dataclass
class Summary:
    axis: str
    blocks: list
    standings: list       # best mean rank first


def record(table: Table, group: Group) -> list[int]:
    """[wins, ties, losses] of `group` against the other groups of its table: a win or loss is a pair beyond
    noise (Holm-adjusted p < ALPHA), anything else (untested pairs too) a tie."""
    out = [0, 0, 0]
    for pair in table.pairs:
        if group is pair.better or group is pair.worse:
            out[1 if not pair.beyond_noise else 0 if group is pair.better else 2] += 1
    return out


def rank_summaries(tables: list[Table], metric: str) -> list[Summary]:
    """For each axis ranked in two or more blocks: each choice's rank by mean within every block (ties share
    the average rank), its mean rank over the blocks it ran in, and its wins, ties and losses there."""
    per_axis = {}
    for table in tables:
        if table.kind == "axis" and table.block and len(table.ranked) > 1:
            per_axis.setdefault(table.axes[0], []).append(table)
    summaries = []
    for axis, axis_tables in per_axis.items():
        if len(axis_tables) < 2:
            continue
        standings = {}
        for table in axis_tables:
            label = block_label(table.block)
            for group, rank in zip(table.ranked, ranks([g.stats.mean for g in table.ranked], higher_is_better(metric))):
                standing = standings.setdefault(group.values[0], Standing(group.values[0]))
                standing.ranks[label], standing.records[label] = rank, record(table, group)
        order = sorted(standings.values(), key=lambda s: (s.mean_rank, natural(s.choice)))
        summaries.append(Summary(axis, [block_label(t.block) for t in axis_tables], order))
    return summaries


# ---------------------------------------------------------------- the report

@dataclass
class Report:
    metric: str
    runs: list
    tables: list
    summaries: list
    checks: list
    curve_key: str | None

    @property
    def direction(self) -> str:
        return "higher is better" if higher_is_better(self.metric) else "lower is better"

    @property
    def blocks(self) -> list[str]:
        return [block_label(block) for block, _ in split_blocks(self.runs) if block]


def build_report(paths, metric: str | None = None, wandb_project: str | None = None) -> Report:
    """Collect the runs, pick the metric, compare the axes within each block, rank across blocks, and
    cross-check what the W&B API holds."""
    runs = find_runs(paths, wandb_project)
    if not runs:
        raise FileNotFoundError(f"no results.json, Hydra run folder or W&B run under {list(paths)}")
    known = sorted({k for r in runs if r.completed for k in r.metrics})
    metric = metric or default_metric(runs) or NO_METRIC
    if known and metric not in known:
        raise ValueError(f"no completed run has the metric {metric}; pass --metric, one of {', '.join(known)}")
    curve_key = validation_key(metric, runs)
    if curve_key:
        add_wandb_history(runs, curve_key)
    tables = build_tables(runs, metric)
    return Report(metric, runs, tables, rank_summaries(tables, metric), cross_checks(runs), curve_key)

