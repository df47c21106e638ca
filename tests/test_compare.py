"""compare.py: the offline ablation report over results.json folders and W&B offline runs."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from compare import main as compare_main
from hub.config import PROJECT_ROOT
from hub.report import (build_report, describe, find_runs, fmt, mean_curve, read_wandb_log, table_cells,
                        varying_axes, welch_p)
from tests.conftest import results_of, run_cli

CHROMIUM = Path("/usr/bin/chromium")
TINY = ["trainer.max_epochs=1", "logger=csv", "trainer.val_check_interval=0.5"]  # 2 validations per run
OFFLINE_WANDB_ENV = {"WANDB_API_KEY": None, "NETRC": "/nonexistent", "WANDB_SILENT": "true"}


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
    p = stats.ttest_ind(*[[r["test"]["test/spearman"] for r in runs if r["status"] == "completed"
                           and r["choices"]["loss"] == c] for c in ("cosent", "sbert")], equal_var=False).pvalue
    assert f"Welch's t-test p = {p:.3g}" in loss.verdict and f"Welch's t-test p = {p:.3g}" in markdown
    assert "seed" not in varying_axes(report.runs)
    # the learning curve of a group: val/spearman by step, averaged over its seeds' metrics.csv
    [cosent] = [g for g in loss.groups if g.values == ("cosent",)]
    by_step = {}
    for r in runs:
        if r["status"] == "completed" and r["choices"]["loss"] == "cosent":
            for row in csv.DictReader(open(Path(r["output_dir"]) / "csv" / "metrics.csv")):
                if row["val/spearman"]:
                    by_step.setdefault(float(row["step"]), []).append(float(row["val/spearman"]))
    steps, means = mean_curve(cosent.runs, "val/spearman")
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
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert describe([0.5]).sd is None and describe([0.5]).ci is None and describe([]).mean is None
    assert welch_p([0.5], b) is None and welch_p([0.5, 0.5], [0.5, 0.5]) is None


def test_three_groups_get_every_pair_tested(tmp_path):
    samples = {"cosent": [0.81, 0.80, 0.82], "cosine_mse": [0.79, 0.78, 0.80], "sbert": [0.70, 0.74, 0.72]}
    for loss, values in samples.items():
        for seed, value in enumerate(values, start=1):
            folder = tmp_path / f"{loss}-{seed}"
            folder.mkdir()
            (folder / "results.json").write_text(json.dumps({
                "status": "completed", "choices": {"loss": loss}, "seed": seed, "overrides": [f"seed={seed}"],
                "test": {"test/spearman": value}}))
    verdict = table(build_report([str(tmp_path)]), "loss").verdict
    for better, worse in (("cosent", "cosine_mse"), ("cosent", "sbert"), ("cosine_mse", "sbert")):
        p = stats.ttest_ind(samples[better], samples[worse], equal_var=False).pvalue
        assert f"{better} > {worse} p = {p:.3g}" in verdict


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


def test_wandb_offline_run_is_read_from_its_folder_and_agrees_with_results_json(tmp_path):
    run_cli(tmp_path, "trainer.max_epochs=1", "trainer.val_check_interval=0.5",
            env={**OFFLINE_WANDB_ENV, "WANDB_MODE": None, "HOME": str(tmp_path)})
    [results] = results_of(tmp_path)
    assert results["wandb"]["mode"] == "offline"
    folder = Path(results["output_dir"])
    [log] = folder.glob("wandb/offline-run-*/run-*.wandb")
    view = read_wandb_log(log)
    assert view.id == results["wandb"]["id"] and view.state == "finished" and "loss=cosent" in view.tags
    assert view.summary["test/spearman"] == results["test"]["test/spearman"]
    assert view.summary["best/val/spearman"] == results["best"]["value"] and view.config["seed"] == 1
    logged = [row["val/spearman"] for row in view.history if "val/spearman" in row]
    assert len(logged) == 2 and logged[-1] == results["final_validation"]["val/spearman"]

    proc = compare(str(folder))  # the report lands in the run folder
    markdown = (folder / "report.md").read_text()
    assert "W&B cross-check: 2 of 2 values agree." in proc.stdout
    for key, value in (("test/spearman", results["test"]["test/spearman"]), ("best/val/spearman", results["best"]["value"])):
        assert f"| {key} | {value!r} | {value!r} | W&B log {log.name} | agree |" in markdown

    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered, ignore=shutil.ignore_patterns("checkpoints", "report*"))
    edited = json.loads((tampered / "results.json").read_text())
    edited["test"]["test/spearman"] += 0.01
    (tampered / "results.json").write_text(json.dumps(edited))
    proc = compare(str(tampered))
    assert "1 of 2 values agree; 1 do not" in proc.stdout and "W&B MISMATCH" in proc.stdout
    [flagged] = [line for line in (tampered / "report.md").read_text().splitlines() if "MISMATCH" in line]
    assert flagged.startswith("| tampered | test/spearman |")


def test_wandb_log_reader_handles_records_across_blocks_and_runs_known_only_to_wandb(tmp_path):
    script = """
import wandb
run = wandb.init(project="p", dir=r"{dir}", config={{"seed": 7, "blob": "x" * 100000}}, tags=["loss=sbert", "init=xavier"])
for step in range(3000):
    run.log({{"val/spearman": step / 3000, "trainer/global_step": step}})
run.summary["test/spearman"] = 0.25
run.finish()
""".format(dir=tmp_path)
    env = {k: v for k, v in {**os.environ, **OFFLINE_WANDB_ENV, "WANDB_MODE": "offline",
                             "HOME": str(tmp_path)}.items() if v is not None}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=120)
    [log] = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    assert log.stat().st_size > 4 * 32768
    view = read_wandb_log(log)
    assert view.config["blob"] == "x" * 100000 and len(view.history) == 3000
    assert [row["val/spearman"] for row in view.history] == [step / 3000 for step in range(3000)]
    [run] = find_runs([str(tmp_path)])
    assert run.label == f"wandb:{view.id}" and run.completed and run.seed == 7
    assert run.choices == {"loss": "sbert", "init": "xavier"} and run.metrics["test/spearman"] == 0.25


def test_wandb_api_runs_join_local_runs_by_id(tmp_path, monkeypatch):
    """The online path, with wandb.Api replaced: runs with a local results.json are cross-checked, others added."""
    import wandb

    class FakeRun:
        def __init__(self, id, test, tags, state="finished"):
            self.id, self.state, self.tags, self.config = id, state, tags, {"seed": 1}
            self.summary_metrics = {"test/spearman": test, "best/val/spearman": 0.7, "_runtime": 3}

        def history(self, pandas=True):
            return [{"trainer/global_step": 5, "val/spearman": 0.6}, {"trainer/global_step": 10, "val/spearman": 0.7}]

    class FakeApi:
        def runs(self, path):
            assert path == "team/zh-nlp-hub"
            return [FakeRun("local1", 0.5, ["loss=cosent"]), FakeRun("remote2", 0.4, ["loss=sbert"]),
                    FakeRun("remote3", 0.0, ["loss=sbert"], state="crashed")]

    monkeypatch.setattr(wandb, "Api", FakeApi)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps({
        "status": "completed", "choices": {"loss": "cosent"}, "seed": 1, "overrides": [],
        "best": {"metric": "val/spearman", "value": 0.7, "epoch": 0, "step": 10}, "test": {"test/spearman": 0.5},
        "wandb": {"id": "local1", "mode": "online", "dir": "elsewhere"}}))
    report = build_report([str(tmp_path)], wandb_project="team/zh-nlp-hub")
    assert [(r.label, r.status) for r in report.runs] == [("run", "completed"), ("wandb:remote2", "completed"),
                                                          ("wandb:remote3", "failed")]
    assert [(c.key, c.status) for c in report.checks] == [("test/spearman", "agree"), ("best/val/spearman", "agree")]
    assert {g.values: (g.stats.n, g.failed) for g in table(report, "loss").groups} == {
        ("cosent",): (1, 0), ("sbert",): (1, 1)}
    assert mean_curve(report.runs[1:2], "val/spearman") == ([5, 10], [0.6, 0.7])


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
