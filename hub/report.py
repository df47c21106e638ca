"""The offline ablation report: runs from results.json folders and W&B, grouped by the axes that vary.

Metric names follow the W&B summary that run.py writes: `test/<m>` (test with the best checkpoint),
`best/<monitor>` (the best validation value, which picked the checkpoint), `val/<m>` (the last validation),
plus the throughput keys and `wall_time_s`.
"""
from __future__ import annotations

import base64
import csv
import functools
import glob
import html
import io
import json
import math
import os
import re
import statistics
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from hub.config import AXES, register_resolvers
from hub.results import RESULTS_FILE

# Overrides that never define an ablation axis: the replicate, where things go, what gets logged.
NOT_AXES = ("seed", "logger", "callbacks", "debug", "paths", "hydra", "mode", "ckpt_path", "project",
            "experiment_name", "hparams_search", "optimized_metric")
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error", "time", "wait")
DEFAULT_LABEL = "(default)"
NO_METRIC = "(no completed run)"
SCALE_NOTE = ("Values are raw, as logged: correlations and accuracies lie in [−1, 1] "
              "(the README's tables show them ×100).")


# ---------------------------------------------------------------- W&B: transaction log and API

LOG_BLOCK, LOG_HEADER = 32768, 7  # LevelDB log framing of run-<id>.wandb: 32 KiB blocks, 7-byte headers
FULL, FIRST, LAST = 1, 2, 4     # chunk types; MIDDLE (3) chunks extend the pending record


@dataclass
class WandbView:
    """What W&B holds of one run: final summary, flat config, tags, history rows, state, and where from."""
    id: str
    summary: dict
    config: dict
    tags: list
    history: list
    state: str
    source: str


def wandb_records(path: str | Path):
    """Yield the protobuf Records of a W&B transaction log (`run-<id>.wandb`, online or offline).

    The file is a LevelDB log (header `:W&B` + magic + version, then 32 KiB blocks of
    crc32 | length | type | data chunks); a chunk whose checksum fails ends the read, as a run killed
    mid-write leaves a torn tail.
    """
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, pending = LOG_HEADER, b""
    while pos + LOG_HEADER <= len(data):
        room = LOG_BLOCK - pos % LOG_BLOCK
        if room < LOG_HEADER:
            pos += room
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + LOG_HEADER])
        chunk = data[pos + LOG_HEADER:pos + LOG_HEADER + length]
        if kind == 0 or len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) != crc:
            return
        pos += LOG_HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _item_key(item) -> str:
    return item.key or ".".join(item.nested_key)


def read_wandb_log(path: str | Path) -> WandbView:
    """Replay a transaction log into the summary, config, tags and history W&B would show for the run."""
    summary, config, tags, history, run_id, state = {}, {}, [], [], Path(path).stem.removeprefix("run-"), "running"
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id, tags = record.run.run_id or run_id, list(record.run.tags)
            config.update({_item_key(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({_item_key(i): json.loads(i.value_json) for i in record.config.update})
            for item in record.config.remove:
                config.pop(_item_key(item), None)
        elif kind == "summary":
            summary.update({_item_key(i): json.loads(i.value_json) for i in record.summary.update})
            for item in record.summary.remove:
                summary.pop(_item_key(item), None)
        elif kind == "history":
            history.append({_item_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "exit":
            state = "finished" if record.exit.exit_code == 0 else "failed"
    return WandbView(run_id, summary, config, tags, history, state, f"W&B log {Path(path).name}")


def wandb_api_views(project: str) -> list[WandbView]:
    """Every run of ENTITY/PROJECT from the W&B API (needs network and a key)."""
    import wandb

    return [WandbView(run.id, dict(run.summary_metrics), dict(run.config), list(run.tags),
                      run.history(pandas=False), run.state, f"W&B API {project}")
            for run in wandb.Api().runs(project)]


# ---------------------------------------------------------------- runs

@dataclass
class Run:
    """One run as the report sees it, whichever source it came from."""
    label: str
    status: str                      # completed | failed (W&B-only runs: finished → completed)
    choices: dict
    seed: object
    overrides: dict                  # axis-candidate overrides, key → value
    metrics: dict                    # test/…, best/<monitor>, val/…, throughput, wall_time_s
    history: list = field(default_factory=list, repr=False)   # rows with "step" and logged values
    error: str | None = None
    folder: Path | None = None
    results: dict = field(default_factory=dict, repr=False)
    wandb: list = field(default_factory=list, repr=False)     # WandbView of this run (offline log, API)

    @property
    def completed(self) -> bool:
        return self.status == "completed"


def override_axes(overrides) -> dict:
    """`key=value` overrides that may be ablation axes: not seeds, paths, loggers or group choices."""
    out = {}
    for text in overrides or []:
        key, sep, value = text.lstrip("+~").partition("=")
        if sep and key not in AXES and not any(key == k or key.startswith(k + ".") for k in NOT_AXES):
            out[key] = value
    return out


def results_metrics(results: dict) -> dict:
    """The numbers of a results.json under the names the W&B summary uses."""
    best = results.get("best") or {}
    out = {**(results.get("final_validation") or {}), **(results.get("test") or {}),
           **(results.get("throughput") or {})}
    if best.get("metric"):
        out[f"best/{best['metric']}"] = best.get("value")
    out.update({k: results[k] for k in ("wall_time_s", "steps") if k in results})
    return _numbers(out)


def _numbers(values: dict) -> dict:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("_")}


def read_csv_history(path: Path) -> list[dict]:
    """csv/metrics.csv (Lightning CSVLogger) as rows of numbers, empty cells left out."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def wandb_history(view: WandbView) -> list[dict]:
    """W&B history rows with Lightning's global step as "step"."""
    return [{**row, "step": row.get("trainer/global_step", row.get("_step"))} for row in view.history]


def read_results(path: Path) -> dict:
    """A results.json as a dict; ValueError `file:line:column:` when it is not a JSON object."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 (byte {error.start})") from None
    if not isinstance(results, dict):
        raise ValueError(f"{path}: expected a JSON object, got a {type(results).__name__}")
    return results


def run_from_results(folder: Path) -> Run:
    """A run folder with results.json (completed or failed); a corrupt results.json makes a failed run whose
    error names the file, so one damaged folder does not stop the report."""
    try:
        results = read_results(folder / RESULTS_FILE)
    except ValueError as error:
        return run_from_hydra(folder, str(error))
    return Run(label=str(folder), status=results.get("status", "failed"), choices=results.get("choices") or {},
               seed=results.get("seed"), overrides=override_axes(results.get("overrides")),
               metrics=results_metrics(results), history=read_csv_history(folder / "csv" / "metrics.csv"),
               error=results.get("error"), folder=folder, results=results)


@functools.lru_cache(maxsize=None)
def run_config(folder: Path):
    """The composed config Hydra saved for a run (.hydra/config.yaml), or None."""
    path = folder / ".hydra" / "config.yaml"
    register_resolvers()
    return OmegaConf.load(path) if path.is_file() else None


def _hydra_file(folder: Path, name: str):
    path = folder / ".hydra" / name
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_without_results(folder: Path) -> Run | None:
    """A Hydra run folder (.hydra/) without results.json: killed hard, or still running."""
    config = run_config(folder.resolve())
    if config is not None and config.get("mode") == "generate":
        return None
    return run_from_hydra(folder, "no results.json: the run was killed, or is still running")


def run_from_hydra(folder: Path, error: str) -> Run:
    """A failed run as its .hydra/ files describe it (choices, seed, overrides; empty when there are none)."""
    config = run_config(folder.resolve())
    choices = (((_hydra_file(folder, "hydra.yaml") or {}).get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    return Run(label=str(folder), status="failed", choices={a: choices[a] for a in AXES if choices.get(a)},
               seed=config.get("seed") if config is not None else None,
               overrides=override_axes(_hydra_file(folder, "overrides.yaml")), metrics={},
               history=read_csv_history(folder / "csv" / "metrics.csv"), folder=folder, error=error)


def run_from_wandb(view: WandbView) -> Run:
    """A run known only to W&B: choices from its `group=choice` tags, the seed from its config."""
    tags = dict(t.split("=", 1) for t in view.tags if "=" in t)
    return Run(label=f"wandb:{view.id}", status="completed" if view.state == "finished" else "failed",
               choices={a: tags[a] for a in AXES if a in tags}, seed=view.config.get("seed"), overrides={},
               metrics=_numbers(view.summary), history=wandb_history(view), wandb=[view],
               error=None if view.state == "finished" else f"W&B state {view.state}")


def expand(paths) -> list[Path]:
    """PATH arguments (folders, results.json files, globs) as existing folders."""
    folders = []
    for text in paths:
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        if not matches or not all(os.path.exists(m) for m in matches):
            raise FileNotFoundError(f"{text}: no such file or folder")
        folders += [Path(m).parent if Path(m).is_file() else Path(m) for m in matches]
    return folders


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def find_runs(paths, wandb_project: str | None = None) -> list[Run]:
    """Every run below PATHS (results.json, or .hydra/ without it), their W&B logs, and W&B API runs."""
    runs, logs = {}, []
    for root in expand(paths):
        for path in root.rglob(RESULTS_FILE):
            runs.setdefault(path.parent.resolve(), run_from_results(path.parent))
        for hydra_dir in root.rglob(".hydra"):
            folder = hydra_dir.parent.resolve()
            if folder not in runs and not (folder / RESULTS_FILE).exists():
                run = run_without_results(hydra_dir.parent)
                if run:
                    runs[folder] = run
        logs += root.rglob("run-*.wandb")
    orphans = []
    for log in sorted(set(p.resolve() for p in logs)):
        owner = runs.get(log.parents[2]) if len(log.parents) > 2 else None  # <run>/wandb/<…run-…>/run-<id>.wandb
        view = read_wandb_log(log)
        if owner is None:
            orphans.append(run_from_wandb(view))
        elif view.id == (owner.results.get("wandb") or {}).get("id") or not owner.results.get("wandb"):
            owner.wandb = [view]  # logs sort by start time: a resumed run keeps its newest log
            owner.history = owner.history or wandb_history(view)
    listed = sorted(runs.values(), key=lambda r: _natural(r.label)) + orphans
    if wandb_project:
        by_id = {(r.results.get("wandb") or {}).get("id"): r for r in listed}
        for view in wandb_api_views(wandb_project):
            if view.id in by_id:
                by_id[view.id].wandb.append(view)
            else:
                listed.append(run_from_wandb(view))
    _shorten_labels(listed)
    return listed


def _shorten_labels(runs: list[Run]) -> None:
    """Folder labels relative to the folder all runs share."""
    folders = [r.folder.resolve() for r in runs if r.folder]
    if not folders:
        return
    common = Path(os.path.commonpath(folders))
    base = common.parent if len(folders) == 1 else common
    for run in runs:
        if run.folder:
            run.label = str(run.folder.resolve().relative_to(base))


# ---------------------------------------------------------------- metric and axes

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


def axis_value(run: Run, axis: str) -> str:
    """A run's choice of a config group, or its value of an overridden key: from its saved config when it
    has one (so runs that kept the default show the default's value), else from its overrides."""
    if axis in AXES:
        return str(run.choices.get(axis, DEFAULT_LABEL))
    config = run_config(run.folder.resolve()) if run.folder else None
    if config is not None:
        value = OmegaConf.select(config, axis, default=DEFAULT_LABEL, throw_on_resolution_failure=False)
        if value is not None:
            return str(value)
    return run.overrides.get(axis, DEFAULT_LABEL)


def varying_axes(runs: list[Run]) -> list[str]:
    """Choice groups and overrides with more than one value among the runs (seeds never count)."""
    override_keys = sorted({k for r in runs for k in r.overrides})
    return [a for a in [*AXES, *override_keys] if len({axis_value(r, a) for r in runs}) > 1]


# ---------------------------------------------------------------- statistics

@dataclass
class Stats:
    n: int
    mean: float | None
    sd: float | None
    ci: tuple | None   # 95% Student t interval of the mean


def describe(values: list[float]) -> Stats:
    """n, mean, sample sd (n − 1) and the 95% Student t confidence interval of the mean."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return Stats(0, None, None, None)
    mean = statistics.fmean(values)
    if n == 1:
        return Stats(1, mean, None, None)
    sd = statistics.stdev(values)
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return Stats(n, mean, sd, (mean - half, mean + half))


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p of Welch's t-test; None with fewer than 2 values a side or no variance at all."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or statistics.pvariance(a) + statistics.pvariance(b) == 0:
        return None
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    return None if math.isnan(p) else float(p)


# ---------------------------------------------------------------- tables

@dataclass
class Group:
    values: tuple
    runs: list
    samples: list      # the metric of each completed run

    @property
    def stats(self) -> Stats:
        return describe(self.samples)

    @property
    def failed(self) -> int:
        return sum(not r.completed for r in self.runs)


@dataclass
class Table:
    title: str
    axes: tuple
    groups: list
    winner: Group | None
    verdict: str
    plot: str | None = None       # PNG file name in the output folder


def group_table(runs: list[Run], axes: tuple, metric: str) -> Table:
    """Runs grouped by their values on `axes` (marginalizing over the rest), best group and its margin."""
    by_values = {}
    for run in runs:
        by_values.setdefault(tuple(axis_value(run, a) for a in axes), []).append(run)
    groups = [Group(values, members, [r.metrics[metric] for r in members
                                      if r.completed and r.metrics.get(metric) is not None])
              for values, members in sorted(by_values.items(), key=lambda kv: [_natural(v) for v in kv[0]])]
    sign = 1 if higher_is_better(metric) else -1
    ranked = sorted((g for g in groups if g.samples), key=lambda g: -sign * statistics.fmean(g.samples))
    title = " × ".join(axes) if axes else "all runs"
    return Table(title, axes, groups, ranked[0] if ranked else None, verdict(ranked))


def verdict(ranked: list[Group]) -> str:
    """Is the best group ahead of the runner-up by more than noise (Welch's t-test, p < 0.05)?"""
    if not ranked:
        return "no completed run to rank"
    best = f"{_name(ranked[0])} (mean {fmt(ranked[0].stats.mean)})"
    if len(ranked) == 1:
        return f"winner: {best}; no other group to compare"
    second = ranked[1]
    if min(len(ranked[0].samples), len(second.samples)) < 2:
        return f"winner: {best}; vs runner-up {_name(second)}: not enough runs (n < 2) for a test"
    p = welch_p(ranked[0].samples, second.samples)
    if p is None:
        return f"winner: {best}; vs runner-up {_name(second)}: no variance in either group, no test"
    beyond = "beyond noise (p < 0.05)" if p < 0.05 else "within noise (p ≥ 0.05)"
    main = f"winner: {best}; vs runner-up {_name(second)}: Welch's t-test p = {p:.3g}, {beyond}"
    return main + (f". Every pair: {pairwise(ranked)}" if len(ranked) > 2 else "")


def pairwise(ranked: list[Group]) -> str:
    """Welch's p of every better-ranked group against every worse one, e.g. "cosent > sbert p = 0.03"."""
    parts = []
    for i, better in enumerate(ranked):
        for worse in ranked[i + 1:]:
            p = welch_p(better.samples, worse.samples) if min(len(better.samples), len(worse.samples)) > 1 else None
            mark = "n/a" if p is None else f"{p:.3g}" + (" *" if p < 0.05 else "")
            parts.append(f"{_name(better)} > {_name(worse)} p = {mark}")
    return "; ".join(parts) + " (* beyond noise, p < 0.05)"


def _name(group: Group) -> str:
    return ", ".join(group.values) if group.values else "all runs"


def build_tables(runs: list[Run], metric: str) -> list[Table]:
    """One table per varying axis, plus the full combinations when several axes vary, plus each axis
    compared within every setting of the others ("loss | data=bq"): a marginal mean mixes datasets,
    the question is usually which loss wins on each."""
    axes = varying_axes(runs)
    tables = [group_table(runs, (a,), metric) for a in axes] or [group_table(runs, (), metric)]
    if len(axes) > 1:
        tables.append(group_table(runs, tuple(axes), metric))
        tables += conditional_tables(runs, axes, metric)
    return tables


def conditional_tables(runs: list[Run], axes: list[str], metric: str) -> list[Table]:
    tables = []
    for axis in axes:
        others = [a for a in axes if a != axis]
        settings = {}
        for run in runs:
            settings.setdefault(tuple(axis_value(run, a) for a in others), []).append(run)
        for setting in sorted(settings, key=lambda values: [_natural(v) for v in values]):
            table = group_table(settings[setting], (axis,), metric)
            table.title = f"{axis} | " + ", ".join(f"{a}={v}" for a, v in zip(others, setting))
            tables.append(table)
    return tables


# ---------------------------------------------------------------- W&B cross-check

@dataclass
class Check:
    run: str
    key: str
    results: float
    wandb: float | None
    source: str

    @property
    def status(self) -> str:
        if self.wandb is None:
            return "missing in W&B"
        return "agree" if math.isclose(self.results, self.wandb, rel_tol=1e-9, abs_tol=1e-12) else "MISMATCH"


def cross_checks(runs: list[Run]) -> list[Check]:
    """results.json's test and best metrics against the W&B summary of the same run."""
    checks = []
    for run in runs:
        keys = [k for k in run.metrics if k.startswith(("test/", "best/"))] if run.results else []
        for view in run.wandb:
            checks += [Check(run.label, k, run.metrics[k], _number(view.summary.get(k)), view.source) for k in keys]
    return checks


def _number(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---------------------------------------------------------------- learning curves

def mean_curve(runs: list[Run], key: str) -> tuple[list, list]:
    """`key` against step, averaged over the runs (seeds) that logged it at that step."""
    by_step = {}
    for run in runs:
        for row in run.history:
            if row.get(key) is not None and row.get("step") is not None:
                by_step.setdefault(row["step"], []).append(row[key])
    steps = sorted(by_step)
    return steps, [statistics.fmean(by_step[s]) for s in steps]


def plot_curves(table: Table, key: str) -> bytes | None:
    """A PNG of the mean validation curve of each group of `table`, or None when no run logged `key`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    curves = [(_name(g), *mean_curve(g.runs, key)) for g in table.groups]
    curves = [c for c in curves if c[1]]
    if not curves:
        return None
    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.subplots()
    for name, steps, values in curves:
        ax.plot(steps, values, marker="o", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="step", ylabel=f"{key} (mean over runs)", title=table.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# ---------------------------------------------------------------- the report

@dataclass
class Report:
    metric: str
    runs: list
    tables: list
    checks: list
    curve_key: str | None

    @property
    def direction(self) -> str:
        return "higher is better" if higher_is_better(self.metric) else "lower is better"


def build_report(paths, metric: str | None = None, wandb_project: str | None = None) -> Report:
    """Collect the runs, pick the metric, group by the varying axes and cross-check W&B."""
    runs = find_runs(paths, wandb_project)
    if not runs:
        raise FileNotFoundError(f"no results.json, Hydra run folder or W&B run under {list(paths)}")
    known = sorted({k for r in runs if r.completed for k in r.metrics})
    metric = metric or default_metric(runs) or NO_METRIC
    if known and metric not in known:
        raise ValueError(f"no completed run has the metric {metric}; pass --metric, one of {', '.join(known)}")
    return Report(metric, runs, build_tables(runs, metric), cross_checks(runs), validation_key(metric, runs))


def fmt(value) -> str:
    """A metric value for the tables: 4 decimals, thousands separated above 100, — when absent."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"


def table_cells(table: Table) -> tuple[list, list]:
    """Header and rows of a group table, as strings, shared by every output format."""
    header = [*table.axes, "n", "failed", "mean ± sd", "95% CI", ""]
    rows = []
    for g in table.groups:
        s = g.stats
        spread = f"{fmt(s.mean)} ± {fmt(s.sd)}" if s.sd is not None else fmt(s.mean)
        ci = f"[{fmt(s.ci[0])}, {fmt(s.ci[1])}]" if s.ci else "—"
        rows.append([*g.values, str(s.n), str(g.failed), spread, ci, "winner" if g is table.winner else ""])
    return header, rows


def run_cells(report: Report) -> tuple[list, list]:
    """Header and rows of the table of every run, failed ones with their error."""
    axes = varying_axes(report.runs)
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
    lines = [f"{len(report.runs)} runs ({completed} completed, {len(report.runs) - completed} failed); "
             f"{metric}; mean ± sd over completed runs, 95% CI of the mean (Student t).", SCALE_NOTE]
    if report.checks:
        bad = [c for c in report.checks if c.status != "agree"]
        lines.append(f"W&B cross-check: {len(report.checks) - len(bad)} of {len(report.checks)} values agree"
                     + (f"; {len(bad)} do not (see below)." if bad else "."))
    return lines


def markdown(report: Report) -> str:
    """report.md: the intro, one section per table with its verdict and curve, the runs, the W&B check."""
    def md_table(header, rows):
        cells = [header, ["---"] * len(header), *rows]
        return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells)

    parts = ["# Ablation report", "", *intro_lines(report), ""]
    for table in report.tables:
        parts += [f"## {table.title}", "", md_table(*table_cells(table)), "", table.verdict, ""]
        if table.plot:
            parts += [f"![{report.curve_key} by {table.title}]({table.plot})", ""]
    parts += ["## Runs", "", md_table(*run_cells(report)), ""]
    if report.checks:
        parts += ["## W&B cross-check", "", md_table(*check_cells(report)), ""]
    return "\n".join(parts)


def html_report(report: Report, images: dict) -> str:
    """report.html: the same tables, the curves inlined as base64 PNG; no external assets."""
    def html_table(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Ablation report</title><style>"
             "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #999;padding:4px 8px;text-align:left}</style></head><body>",
             "<h1>Ablation report</h1>", *(f"<p>{html.escape(line)}</p>" for line in intro_lines(report))]
    for table in report.tables:
        parts += [f"<h2>{html.escape(table.title)}</h2>", html_table(*table_cells(table)),
                  f"<p>{html.escape(table.verdict)}</p>"]
        if table.plot:
            data = base64.b64encode(images[table.plot]).decode("ascii")
            parts.append(f"<img alt='{html.escape(f'{report.curve_key} by {table.title}')}' "
                         f"src='data:image/png;base64,{data}'>")
    parts += ["<h2>Runs</h2>", html_table(*run_cells(report))]
    if report.checks:
        parts += ["<h2>W&amp;B cross-check</h2>", html_table(*check_cells(report))]
    return "\n".join(parts + ["</body></html>"])


def text_summary(report: Report) -> str:
    """A short plain-text version for the terminal: each table, its verdict, the failed runs."""
    def aligned(header, rows):
        widths = [max(len(c) for c in column) for column in zip(header, *rows)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows])

    parts = intro_lines(report)
    for table in report.tables:
        parts += ["", f"[{table.title}]", aligned(*table_cells(table)), table.verdict]
    failed = [r for r in report.runs if not r.completed]
    parts += [""] + [f"failed: {r.label}: {(r.error or '').splitlines()[0] if r.error else ''}" for r in failed]
    parts += [f"W&B MISMATCH: {c.run} {c.key}: results.json {c.results!r} vs {c.source} {c.wandb!r}"
              for c in report.checks if c.status == "MISMATCH"]
    return "\n".join(parts).rstrip()


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
