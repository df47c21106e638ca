"""compare.py: the offline ablation report over results.json folders and the W&B API."""
from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

import hub.report
from compare import main as compare_main
from hub.config import PROJECT_ROOT
from hub.report import (
    build_report,
    describe,
    fmt,
    holm,
    mean_curve,
    pair_cells,
    ranks,
    table_cells,
    varying_axes,
    welch,
    write_report,
)
from tests.conftest import results_of, run_cli

CHROMIUM = Path("/usr/bin/chromium")
TINY = ["trainer.max_epochs=1", "logger=csv", "trainer.val_check_interval=0.5"]  # 2 validations per run


def compare(*args: str) -> subprocess.CompletedProcess:
    """`python compare.py ARGS`; fails the test when it exits non-zero."""
    proc = subprocess.run([sys.executable, str(PROJECT_ROOT / "compare.py"), *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def table(report, title: str):
    [found] = [t for t in report.tables if t.title == title]
    return found


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A 2 × 2 multirun (loss × seed), a job that fails before training, and a run killed without results.json."""
    root = tmp_path_factory.mktemp("sweep")
    run_cli(root, "-m", "loss=cosent,sbert", "seed=1,2", *TINY)
    failed = run_cli(root, "-m", "loss=sbert", "seed=3", "data.files.train=missing.data", *TINY, check=False)
    assert failed.returncode != 0 and "missing.data" in failed.stderr
    [first_job] = [r["output_dir"] for r in results_of(root) if r["seed"] == 1 and r["choices"]["loss"] == "cosent"]
    shutil.copytree(Path(first_job) / ".hydra", root / "outputs" / "multirun" / "killed" / "0" / ".hydra")
    return root


def test_loss_axis_has_two_seeds_per_choice_with_the_means_of_results_json(sweep):
    runs = results_of(sweep)
    assert len(runs) == 5 and sorted(r["status"] for r in runs) == ["completed"] * 4 + ["failed"]
    out = sweep / "report"
    proc = compare(str(sweep / "outputs" / "multirun" / "*" / "*"), "--out", str(out))

    report = build_report([str(sweep / "outputs" / "multirun")])
    assert report.metric == "test/spearman" and report.curve_key == "val/spearman"
    loss = table(report, "loss")
    markdown = (out / "report.md").read_text()
    for group in loss.groups:
        [choice] = group.values
        values = np.array([r["test"]["test/spearman"] for r in runs
                           if r["status"] == "completed" and r["choices"]["loss"] == choice])
        assert group.stats.n == len(values) == 2
        mean, sd = values.mean(), values.std(ddof=1)
        assert group.stats.mean == pytest.approx(mean, abs=1e-12) and group.stats.sd == pytest.approx(sd, abs=1e-12)
        low, high = stats.t.interval(0.95, 1, loc=mean, scale=stats.sem(values))
        assert group.stats.ci == pytest.approx((low, high), abs=1e-12)
        row = f"| {choice} | 2 | {group.failed} | {fmt(mean)} ± {fmt(sd)} | [{fmt(low)}, {fmt(high)}] |"
        assert row in markdown
        assert re.search(rf"^{choice}\s+2\s+{group.failed}\s+{re.escape(fmt(mean))} ± {re.escape(fmt(sd))}",
                         proc.stdout, re.M)
    assert {g.values: g.failed for g in loss.groups} == {("cosent",): 1, ("sbert",): 1}  # killed, failed
    means = {g.values[0]: g.stats.mean for g in loss.groups}
    assert loss.winner.values == (max(means, key=means.get),)
    by_seed = {c: [r["test"]["test/spearman"] for r in sorted(runs, key=lambda r: r["seed"])
                   if r["status"] == "completed" and r["choices"]["loss"] == c] for c in ("cosent", "sbert")}
    p = stats.ttest_rel(by_seed["cosent"], by_seed["sbert"]).pvalue  # both losses ran seeds 1 and 2
    assert f"paired t-test (2 pairs) p = {p:.3g}" in loss.verdict and f"paired t-test (2 pairs) p = {p:.3g}" in markdown
    assert "seed" not in varying_axes(report.runs)
    # the learning curve of a group: val/spearman by step, averaged over its seeds' metrics.csv
    [cosent] = [g for g in loss.groups if g.values == ("cosent",)]
    by_step = {}
    for r in runs:
        if r["status"] == "completed" and r["choices"]["loss"] == "cosent":
            for row in csv.DictReader(open(Path(r["output_dir"]) / "csv" / "metrics.csv")):
                if row["val/spearman"]:
                    by_step.setdefault(float(row["step"]), []).append(float(row["val/spearman"]))
    steps, means, *_ = mean_curve(cosent.runs, "val/spearman")
    assert len(steps) == 2 and steps == sorted(by_step) and means == pytest.approx([np.mean(by_step[s]) for s in steps])
    [plot] = out.glob("curves-*-loss.png")
    assert (out / "report.html").is_file() and f"]({plot.name})" in markdown and png_size(plot.read_bytes())


def test_failed_and_killed_runs_are_rows_with_their_error(sweep):
    report = build_report([str(sweep / "outputs")])
    failed = {r.label: r for r in report.runs if not r.completed}
    assert len(report.runs) == 6 and len(failed) == 2
    [missing] = [r for r in failed.values() if r.results]
    [killed] = [r for r in failed.values() if not r.results]
    assert "MissingSplitError" in missing.error and missing.choices["loss"] == "sbert" and missing.seed == 3
    assert "no results.json" in killed.error and killed.choices["loss"] == "cosent" and killed.seed == 1
    # the failing job's override is an axis: the completed runs show the default file they read
    axis = table(report, "data.files.train")
    assert {g.values[0]: (g.stats.n, g.failed) for g in axis.groups} == {
        "STS-B.train.data": (4, 1), "missing.data": (0, 1)}
    assert [t.title for t in report.tables][:3] == ["loss", "data.files.train", "loss × data.files.train"]
    out = sweep / "report-failed"
    proc = compare(str(sweep / "outputs"), "--out", str(out))
    markdown = (out / "report.md").read_text()
    for run in failed.values():
        assert f"| {run.label} | failed |" in markdown and f"failed: {run.label}: " in proc.stdout
    assert "MissingSplitError: data=stsb_sample: the train split is not on disk" in markdown


def test_two_axes_give_marginal_tables_and_the_combinations(tmp_path):
    values = {}
    for loss in ("cosent", "sbert"):
        for lr in ("1e-3", "3e-3"):
            for seed in (1, 2, 3):
                value = {"cosent": 0.80, "sbert": 0.70}[loss] + {"1e-3": 0.0, "3e-3": 0.05}[lr] + 0.01 * seed
                values[loss, lr, seed] = value
                folder = tmp_path / f"{loss}-{lr}-{seed}"
                folder.mkdir()
                (folder / "results.json").write_text(json.dumps({
                    "status": "completed", "choices": {"task": "bi_encoder", "loss": loss}, "seed": seed,
                    "overrides": [f"loss={loss}", f"optimizer.lr={lr}", f"seed={seed}", "trainer.max_epochs=3",
                                  "logger=csv"],
                    "best": {"metric": "val/spearman", "value": value + 0.1, "epoch": 0, "step": 1},
                    "test": {"test/spearman": value}}))
    report = build_report([str(tmp_path)])
    assert varying_axes(report.runs) == ["loss", "optimizer.lr"]
    assert [t.title for t in report.tables] == [
        "loss", "optimizer.lr", "loss × optimizer.lr", "loss | optimizer.lr=1e-3", "loss | optimizer.lr=3e-3",
        "optimizer.lr | loss=cosent", "optimizer.lr | loss=sbert"]
    within = table(report, "loss | optimizer.lr=3e-3")
    assert [g.samples for g in within.groups] == [[values["cosent", "3e-3", s] for s in (1, 2, 3)],
                                                  [values["sbert", "3e-3", s] for s in (1, 2, 3)]]
    assert within.winner.values == ("cosent",)
    for title, position in (("loss", 0), ("optimizer.lr", 1)):
        for group in table(report, title).groups:
            expected = [v for key, v in values.items() if key[position] == group.values[0]]
            assert group.stats.n == 6 and group.stats.mean == pytest.approx(np.mean(expected))
    combos = table(report, "loss × optimizer.lr")
    assert len(combos.groups) == 4 and all(g.stats.n == 3 for g in combos.groups)
    assert combos.winner.values == ("cosent", "3e-3")
    assert table(report, "loss").winner.values == ("cosent",) and "beyond noise" in table(report, "loss").verdict
    best = build_report([str(tmp_path)], metric="best/val/spearman")
    assert table(best, "loss").groups[0].stats.mean == pytest.approx(
        np.mean([v + 0.1 for k, v in values.items() if k[0] == "cosent"]))


def test_statistics_equal_scipy_on_hand_made_numbers():
    a, b = [0.81, 0.79, 0.84, 0.80], [0.70, 0.75, 0.69]
    s = describe(a)
    assert s.n == 4 and s.mean == pytest.approx(np.mean(a)) and s.sd == pytest.approx(np.std(a, ddof=1))
    assert s.ci == pytest.approx(stats.t.interval(0.95, 3, loc=np.mean(a), scale=stats.sem(a)))
    assert welch(a, b).p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert describe([0.5]).sd is None and describe([0.5]).ci is None and describe([]).mean is None
    assert welch([0.5], b).p is None and welch([0.5, 0.5], [0.5, 0.5]).p is None
    assert ranks([0.8, 0.7, 0.8], higher_is_better=True) == [1.5, 3, 1.5] and ranks([2.0, 1.0], False) == [2, 1]


def test_three_groups_get_every_pair_tested(tmp_path):
    samples = {"cosent": [0.81, 0.80, 0.82], "cosine_mse": [0.79, 0.78, 0.80], "sbert": [0.70, 0.74, 0.72]}
    for loss, values in samples.items():
        for seed, value in enumerate(values, start=1):
            folder = tmp_path / f"{loss}-{seed}"
            folder.mkdir()
            (folder / "results.json").write_text(json.dumps({
                "status": "completed", "choices": {"loss": loss}, "seed": seed, "overrides": [f"seed={seed}"],
                "test": {"test/spearman": value}}))
    loss = table(build_report([str(tmp_path)]), "loss")
    order = (("cosent", "cosine_mse"), ("cosent", "sbert"), ("cosine_mse", "sbert"))
    assert [(p.better.name, p.worse.name) for p in loss.pairs] == list(order)
    raw = [stats.ttest_rel(samples[better], samples[worse]).pvalue for better, worse in order]
    assert [p.result.p for p in loss.pairs] == pytest.approx(raw, rel=1e-12)
    assert [p.p_holm for p in loss.pairs] == pytest.approx(multipletests(raw, method="holm")[1], rel=1e-12)
    rows = pair_cells(loss)[1]
    for (better, worse), p, adjusted, row in zip(order, raw, multipletests(raw, method="holm")[1], rows):
        assert row[:2] == [f"{better} − {worse}", "paired t"] and row[4:6] == [f"{p:.3g}", f"{adjusted:.3g}"]


def test_verdicts_say_not_enough_runs_and_follow_the_metric_direction(tmp_path):
    for name, loss, seed, value in [("a", "cosent", 1, 6.2), ("b", "sbert", 1, 6.0), ("c", "sbert", 2, 6.1)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({
            "status": "completed", "choices": {"loss": loss}, "seed": seed, "overrides": [f"seed={seed}"],
            "best": {"metric": "val/loss", "value": value, "epoch": 0, "step": 1}, "test": {"test/loss": value}}))
    report = build_report([str(tmp_path)])
    loss = table(report, "loss")
    assert report.metric == "test/loss" and report.direction == "lower is better"
    assert loss.winner.values == ("sbert",) and "not enough runs (n < 2)" in loss.verdict
    header, rows = table_cells(loss)
    assert header[:4] == ["loss", "n", "failed", "mean ± sd"] and rows[0][:4] == ["cosent", "1", "0", "6.2000"]


def test_a_sweep_where_every_run_failed_still_reports_its_runs(tmp_path):
    for seed in (1, 2):
        (tmp_path / str(seed)).mkdir()
        (tmp_path / str(seed) / "results.json").write_text(json.dumps({
            "status": "failed", "choices": {"loss": "sbert"}, "seed": seed, "overrides": [f"seed={seed}"],
            "error": f"RuntimeError: boom {seed}"}))
    proc = compare(str(tmp_path))
    assert "2 runs (0 completed, 2 failed)" in proc.stdout
    assert "failed: 1: RuntimeError: boom 1" in proc.stdout and "failed: 2: RuntimeError: boom 2" in proc.stdout
    assert "| 2 | failed | 2 | — | — | RuntimeError: boom 2 |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("corrupt, error", [
    ('{"status": "completed", "seed": 3,\n "test": {"test/spearman": 0.7',       # cut short: 30 characters on line 2
     ":2:31: not valid JSON (Expecting ',' delimiter)"),
    ("[1, 2]", ": expected a JSON object, got a list"),
])
def test_a_corrupt_results_json_is_a_failed_run_and_the_report_goes_on(tmp_path, capsys, corrupt, error):
    for seed, value in ((1, 0.80), (2, 0.82)):
        (tmp_path / str(seed)).mkdir()
        (tmp_path / str(seed) / "results.json").write_text(json.dumps({
            "status": "completed", "choices": {"loss": "cosent"}, "seed": seed, "overrides": [f"seed={seed}"],
            "test": {"test/spearman": value}}))
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "results.json").write_text(corrupt)
    assert compare_main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    message = f"{tmp_path / '3' / 'results.json'}{error}"
    assert "3 runs (2 completed, 1 failed)" in out and f"failed: 3: {message}" in out
    markdown = (tmp_path / "report.md").read_text()
    assert "| 3 | failed |" in markdown and message in markdown


class FakeApiRun:
    """What the code reads of a `wandb.apis.public.Run`: id, state, tags, config, the summary (summary_metrics)
    and the history (scan_history)."""

    def __init__(self, id, test, tags, state="finished", seed=1):
        self.id, self.state, self.tags, self.config = id, state, tags, {"seed": seed, "loss": tags[0][5:]}
        self.summary_metrics = {"test/spearman": test, "best/val/spearman": 0.7, "_runtime": 3, "media": {"_type": "x"}}
        self.rows = [{"_step": 0, "train/loss": 1.0, "trainer/global_step": 1},
                     {"_step": 1, "val/spearman": 0.6, "trainer/global_step": 5},
                     {"_step": 2, "val/spearman": 0.7 + seed / 100, "trainer/global_step": 10}]

    def scan_history(self, keys=None, page_size=1000, min_step=0, max_step=None):
        return (row for row in self.rows if all(k in row for k in keys or []))


@pytest.fixture
def fake_wandb(monkeypatch):
    """`wandb.Api` replaced by a fake project "team/zh-nlp-hub"; returns its runs, to edit before the report."""
    import wandb

    runs = [FakeApiRun("local1", 0.5, ["loss=cosent"]), FakeApiRun("remote2", 0.4, ["loss=sbert"]),
            FakeApiRun("remote3", 0.0, ["loss=sbert"], state="crashed", seed=2)]

    class FakeApi:
        def runs(self, path):
            assert path == "team/zh-nlp-hub"
            return runs

    monkeypatch.setattr(wandb, "Api", FakeApi)
    return runs


def write_local_run(folder: Path, test: float, wandb_id: str) -> None:
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({
        "status": "completed", "choices": {"loss": "cosent"}, "seed": 1, "overrides": [],
        "best": {"metric": "val/spearman", "value": 0.7, "epoch": 0, "step": 10}, "test": {"test/spearman": test},
        "wandb": {"id": wandb_id, "mode": "online", "dir": "elsewhere"}}))


def test_wandb_api_runs_join_local_runs_by_id(tmp_path, fake_wandb):
    """The online path: runs with a local results.json are cross-checked, the others added with their history."""
    write_local_run(tmp_path / "run", 0.5, "local1")
    (tmp_path / "run" / "wandb" / "run-local1").mkdir(parents=True)
    (tmp_path / "run" / "wandb" / "run-local1" / "run-local1.wandb").write_bytes(b":W&B\x00junk")  # never read
    report = build_report([str(tmp_path)], wandb_project="team/zh-nlp-hub")
    assert [(r.label, r.status, r.seed) for r in report.runs] == [
        ("run", "completed", 1), ("wandb:remote2", "completed", 1), ("wandb:remote3", "failed", 2)]
    source = "W&B API team/zh-nlp-hub"
    assert [(c.key, c.status, c.source) for c in report.checks] == [("test/spearman", "agree", source),
                                                                    ("best/val/spearman", "agree", source)]
    assert report.runs[1].metrics == {"test/spearman": 0.4, "best/val/spearman": 0.7}
    assert {g.values: (g.stats.n, g.failed) for g in table(report, "loss").groups} == {
        ("cosent",): (1, 0), ("sbert",): (1, 1)}
    # the curve of runs known only to W&B: every val/spearman row of scan_history, at Lightning's step
    assert mean_curve(report.runs[1:3], "val/spearman") == ([5, 10], [0.6, 0.715], [0.6, 0.71], [0.6, 0.72])
    assert report.runs[0].history == [{"val/spearman": 0.6, "step": 5}, {"val/spearman": 0.71, "step": 10}]  # no CSV
    assert not any(hasattr(hub.report, name) for name in ("read_wandb_log", "wandb_records"))


def test_a_wandb_summary_that_differs_from_results_json_is_flagged(tmp_path, fake_wandb, capsys):
    write_local_run(tmp_path / "tampered", 0.51, "local1")
    assert compare_main([str(tmp_path), "--wandb-project", "team/zh-nlp-hub"]) == 0
    out = capsys.readouterr().out
    assert "W&B cross-check: 1 of 2 values agree; 1 do not" in out
    assert "W&B MISMATCH: tampered test/spearman: results.json 0.51 vs W&B API team/zh-nlp-hub 0.5" in out
    [flagged] = [line for line in (tmp_path / "report.md").read_text().splitlines() if "MISMATCH" in line]
    assert flagged == "| tampered | test/spearman | 0.51 | 0.5 | W&B API team/zh-nlp-hub | MISMATCH |"


# ---------------------------------------------------------------- blocks: data set and task are never axes

BLOCK_VALUES = {  # cosent wins on stsb, loses on bq; seeds 1-3 each
    ("stsb", "cosent"): [0.80, 0.82, 0.79], ("stsb", "sbert"): [0.70, 0.71, 0.70],
    ("bq", "cosent"): [0.60, 0.62, 0.61], ("bq", "sbert"): [0.65, 0.66, 0.67],
}


def write_run(folder: Path, choices: dict, seed: int, value: float, curve=(), overrides=()) -> None:
    """A completed run's results.json and, when `curve` is given, its csv/metrics.csv of val/spearman by step."""
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "status": "completed", "choices": {"task": "bi_encoder", **choices}, "seed": seed,
        "overrides": [f"{k}={v}" for k, v in choices.items()] + [*overrides, f"seed={seed}"],
        "best": {"metric": "val/spearman", "value": value + 0.01, "epoch": 1, "step": 20},
        "test": {"test/spearman": value}}))
    if curve:
        (folder / "csv").mkdir()
        rows = "".join(f"{v},{step}\n" for step, v in curve)
        (folder / "csv" / "metrics.csv").write_text("val/spearman,step\n" + rows)


@pytest.fixture
def blocks(tmp_path) -> Path:
    """2 data sets × 2 losses × 3 seeds, with known test metrics and 2-point validation curves."""
    for (data, loss), values in BLOCK_VALUES.items():
        for seed, value in enumerate(values, start=1):
            write_run(tmp_path / f"{data}-{loss}-{seed}", {"data": data, "loss": loss}, seed, value,
                      curve=[(10, value - 0.1 + seed / 100), (20, value)])
    return tmp_path


def test_no_comparison_mixes_data_sets(blocks, capsys):
    report = build_report([str(blocks)])
    assert report.blocks == ["data=bq", "data=stsb"] and varying_axes(report.runs) == ["loss"]
    assert [t.title for t in report.tables] == ["loss | data=bq", "loss | data=stsb"]
    for t, data in zip(report.tables, ("bq", "stsb")):
        assert t.axes == ("loss",) and t.block == (("data", data),)
        assert {r.choices["data"] for g in t.groups for r in g.runs} == {data}
        assert all(p.better.runs[0].choices["data"] == p.worse.runs[0].choices["data"] for p in t.pairs)
    assert compare_main([str(blocks)]) == 0
    for text in ((blocks / "report.md").read_text(), (blocks / "report.html").read_text(), capsys.readouterr().out):
        assert "winner: stsb" not in text and "winner: bq" not in text and "stsb − bq" not in text
        assert not re.search(r"^(## |\[)data\b", text, re.M)  # no section or table whose axis is data
    assert [t.winner.name for t in report.tables] == ["sbert", "cosent"]


def test_p_values_are_paired_t_tests_by_seed_with_holm_and_the_difference_interval(blocks):
    report = build_report([str(blocks)])
    for t, data in zip(report.tables, ("bq", "stsb")):
        [pair] = t.pairs
        better, worse = BLOCK_VALUES[data, pair.better.name], BLOCK_VALUES[data, pair.worse.name]
        p = stats.ttest_rel(better, worse).pvalue
        assert pair.result.test == "paired t" and pair.result.n == "3 pairs" and pair.result.p == pytest.approx(p)
        assert pair.p_holm == pytest.approx(multipletests([p], method="holm")[1][0]) and pair.beyond_noise
        assert pair.result.wilcoxon == pytest.approx(stats.wilcoxon(better, worse).pvalue)
        d = [x - y for x, y in zip(better, worse)]           # by hand: mean ± t(0.975, 2)·sd/√3
        mean = sum(d) / 3
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
        half = 4.302652729911275 * sd / math.sqrt(3)
        assert pair.result.diff == pytest.approx(mean) and pair.result.ci == pytest.approx((mean - half, mean + half))
        assert f"paired t-test (3 pairs) p = {p:.3g}, Holm p = {p:.3g}, beyond noise" in t.verdict
    stsb = report.tables[1].pairs[0].result
    assert stsb.diff == pytest.approx(0.10) and stsb.ci == pytest.approx((0.10 - 0.024841, 0.10 + 0.024841), abs=1e-6)


def test_across_blocks_only_ranks_and_wins_ties_losses(blocks):
    report = build_report([str(blocks)])
    [summary] = report.summaries
    assert summary.axis == "loss" and summary.blocks == ["data=bq", "data=stsb"]
    standings = {s.choice: s for s in summary.standings}
    assert standings["cosent"].ranks == {"data=bq": 2, "data=stsb": 1}
    assert standings["sbert"].ranks == {"data=bq": 1, "data=stsb": 2}
    assert standings["cosent"].records == {"data=bq": [0, 0, 1], "data=stsb": [1, 0, 0]}
    assert standings["sbert"].records == {"data=bq": [1, 0, 0], "data=stsb": [0, 0, 1]}
    assert all(s.mean_rank == 1.5 and s.totals == [1, 0, 1] for s in summary.standings)
    assert compare_main([str(blocks)]) == 0
    markdown = (blocks / "report.md").read_text()
    assert "| cosent | 2 | 1.50 | 1 | 0 | 1 | data=bq: 2 (0-0-1); data=stsb: 1 (1-0-0) |" in markdown
    assert markdown.index("## Across blocks: loss") < markdown.index("## loss | data=bq")


def test_a_tie_within_noise_counts_as_a_tie_in_the_rank_summary(tmp_path):
    values = {("stsb", "cosent"): [0.80, 0.83, 0.79], ("stsb", "sbert"): [0.81, 0.80, 0.80],
              ("bq", "cosent"): [0.70, 0.71, 0.72], ("bq", "sbert"): [0.60, 0.61, 0.61]}
    for (data, loss), samples in values.items():
        for seed, value in enumerate(samples, start=1):
            write_run(tmp_path / f"{data}-{loss}-{seed}", {"data": data, "loss": loss}, seed, value)
    [summary] = build_report([str(tmp_path)]).summaries
    cosent, sbert = summary.standings
    assert cosent.choice == "cosent" and cosent.ranks == {"data=bq": 1, "data=stsb": 1}
    assert cosent.records == {"data=bq": [1, 0, 0], "data=stsb": [0, 1, 0]} and sbert.totals == [0, 1, 1]
    assert cosent.mean_rank == 1 and sbert.mean_rank == 2


def test_learning_curves_are_the_mean_over_seeds_with_a_min_max_band_per_block(blocks):
    report = build_report([str(blocks)])
    written = write_report(report, blocks / "out")
    assert [p.name for p in written["plots"]] == ["curves-0-loss_data_bq.png", "curves-1-loss_data_stsb.png"]
    [cosent] = [g for g in report.tables[1].groups if g.values == ("cosent",)]
    curve = mean_curve(cosent.runs, "val/spearman")
    first = [v - 0.1 + seed / 100 for seed, v in enumerate(BLOCK_VALUES["stsb", "cosent"], start=1)]
    assert curve.steps == [10, 20]
    assert curve.mean == pytest.approx([np.mean(first), np.mean(BLOCK_VALUES["stsb", "cosent"])])
    assert curve.low == pytest.approx([min(first), 0.79]) and curve.high == pytest.approx([max(first), 0.82])
    html_text = written["html"].read_text()
    assert html_text.count("src='data:image/png;base64,") == 2 and "band min–max" in html_text


def test_an_unpaired_comparison_uses_welch(tmp_path):
    """Different seeds (4-6 against 1-3), or seeds that only partly overlap, are not pairs: Welch's t-test."""
    a, b = [0.80, 0.82, 0.79], [0.70, 0.73, 0.69]
    for seed, value in enumerate(a, start=1):
        write_run(tmp_path / f"cosent-{seed}", {"data": "stsb", "loss": "cosent"}, seed, value)
    for seed, value in enumerate(b, start=4):
        write_run(tmp_path / f"sbert-{seed}", {"data": "stsb", "loss": "sbert"}, seed, value)
    [t] = build_report([str(tmp_path)]).tables
    [pair] = t.pairs
    assert pair.result.test == "Welch t" and pair.result.n == "3 + 3 runs" and pair.result.wilcoxon is None
    assert pair.result.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 3      # Welch–Satterthwaite by hand
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    diff = np.mean(a) - np.mean(b)
    assert pair.result.ci == pytest.approx((diff - half, diff + half)) and "Welch's t-test (3 + 3 runs)" in t.verdict
    shutil.rmtree(tmp_path / "sbert-6")
    write_run(tmp_path / "sbert-1", {"data": "stsb", "loss": "sbert"}, 1, 0.68)   # seeds 1, 4, 5 against 1, 2, 3
    [t] = build_report([str(tmp_path)]).tables
    assert t.pairs[0].result.test == "Welch t"


def test_axes_that_move_together_still_pair_by_seed(tmp_path):
    """trainer=ddp always with trainer.devices=2: the trainer table pools over nothing, so seeds pair."""
    a, b = [0.8183, 0.8060, 0.8135], [0.8140, 0.8097, 0.8114]
    for trainer, devices, values in (("ddp", 2, a), ("gpu", 1, b)):
        for seed, value in enumerate(values, start=1):
            write_run(tmp_path / f"{trainer}-{seed}", {"trainer": trainer}, seed, value,
                      overrides=[f"trainer.devices={devices}"])
    report = build_report([str(tmp_path)])
    assert varying_axes(report.runs) == ["trainer", "trainer.devices"]
    [pair] = table(report, "trainer").pairs
    assert pair.result.test == "paired t" and pair.result.p == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_holm_equals_statsmodels():
    rng = np.random.default_rng(0)
    for pvalues in ([0.01, 0.04, 0.03, 0.005], [0.2, 0.2, 0.01, 0.5, 0.04], [0.9], list(rng.uniform(0, 0.2, 12))):
        assert holm(pvalues) == pytest.approx(list(multipletests(pvalues, method="holm")[1]), rel=1e-12)
    assert holm([0.01, None, 0.04]) == pytest.approx([0.02, None, 0.04]) and holm([]) == []


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--no-first-run", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed (apt-get install -y chromium)")
def test_html_report_renders_in_headless_chromium_with_table_and_plot(sweep, tmp_path):
    import matplotlib.image

    out = sweep / "report-html"
    compare(str(sweep / "outputs" / "multirun"), "--out", str(out))
    page = (out / "report.html").as_uri()
    dom = chromium("--dump-dom", page, profile=tmp_path / "profile").stdout
    report = build_report([str(sweep / "outputs" / "multirun")])
    for group in table(report, "loss").groups:
        mean_sd = f"{fmt(group.stats.mean)} ± {fmt(group.stats.sd)}"
        assert f"<td>{group.values[0]}</td><td>2</td><td>{group.failed}</td><td>{mean_sd}</td>" in dom
    images = re.findall(r"<img [^>]*src=\"data:image/png;base64,([^\"]+)\"", dom)
    plots = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", (out / "report.md").read_text())
    assert len(images) == len(plots) >= 1 and len(set(plots)) == len(plots)  # one per table with curves
    width, height = png_size(base64.b64decode(images[0]))
    assert width >= 300 and height >= 200
    assert not re.search(r"(src|href)=\"(?!data:)", dom)  # nothing external

    shot = tmp_path / "shot.png"
    chromium("--window-size=1000,1400", f"--screenshot={shot}", page, profile=tmp_path / "profile")
    pixels = matplotlib.image.imread(io.BytesIO(shot.read_bytes()), format="png")
    assert png_size(shot.read_bytes()) == (1000, 1400) and pixels[..., :3].std() > 0.05
