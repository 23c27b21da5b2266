"""ijr-report's page and tables as a researcher reads them: correlation intervals and the caution mark for few
runs, integer hyperparameters as integers, a table of contents, a report of one run scoped to it, and the final
values of a COMPLETED run with a damaged metrics.jsonl taken from its summary.json."""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from synthetic_sweep import make_sweep, write_run  # noqa: E402

from ijr_cli.report import build, collect, tables


def test_vectorised_tau_b_and_spearman_equal_scipy_with_ties():
    from scipy import stats

    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, size=(200, 7)).astype(float)  # many ties, as bootstrap resamples have
    y = x + rng.integers(0, 3, size=(200, 7))
    y[0] = 5.0  # a constant row
    tau, rho = tables.kendall_tau_b_rows(x, y), tables.spearman_rows(x, y)
    for i in range(200):
        if np.ptp(x[i]) == 0 or np.ptp(y[i]) == 0:
            assert math.isnan(tau[i]) and math.isnan(rho[i])
            continue
        assert tau[i] == pytest.approx(stats.kendalltau(x[i], y[i]).statistic, abs=1e-12)
        assert rho[i] == pytest.approx(stats.spearmanr(x[i], y[i]).statistic, abs=1e-12)


def test_correlation_intervals_bootstrap_below_ten_runs_fieller_above_and_a_caution_mark():
    from scipy import stats

    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    low, high = tables.correlation_interval(x[:6], y[:6], "τ")
    tau6 = stats.kendalltau(x[:6], y[:6]).statistic
    assert -1 <= low <= tau6 <= high <= 1 and high - low > 0.3  # six runs: a wide interval
    assert tables.correlation_interval(x[:6], y[:6], "τ") == (low, high)  # seeded: the same every report
    tau = stats.kendalltau(x, y).statistic
    half = 1.959963984540054 * math.sqrt(0.437 / 36)
    expected = (math.tanh(math.atanh(tau) - half), math.tanh(math.atanh(tau) + half))
    assert tables.correlation_interval(x, y, "τ") == pytest.approx(expected, abs=1e-12)
    runs = pd.DataFrame(
        {
            "family": ["a"] * 6 + ["b"] * 34,
            "sharpness": x,
            "gen_gap_loss": y,
            "gen_gap_acc": y / 10,
        }
    )
    corr = tables.correlations(runs).set_index(["family", "measure"])
    assert corr.loc[("a", "sharpness"), "caution"].startswith("⚠ n < 10")
    assert corr.loc[("b", "sharpness"), "caution"] == "" and corr.loc[("all", "sharpness"), "caution"] == ""
    text = corr.loc[("a", "sharpness"), "τ 95% CI (acc gap)"]
    assert re.fullmatch(r"\[[+-]\d\.\d\d, [+-]\d\.\d\d\]", text)


def test_integer_hyperparameters_print_as_integers(tmp_path):
    sweep = tmp_path / "s"
    for bs in (32, 128):
        write_run(
            sweep / f"bs={bs}",
            {"optimizer.batch_size": float(bs), "trainer.max_steps": 200.0, "seed": 0},
            [0, 5],
            metrics=("test_acc",),
        )
    write_run(sweep / "bs=64", {"optimizer.batch_size": 64.0, "trainer.max_steps": 400.0, "seed": 0}, [0, 5])
    data = collect.collect([sweep], query_slurm=False)
    sections, _ = build.write_tables(data, build.ReportOptions(paths=[sweep]), _mkdir(tmp_path / "t"))
    shown = sections[0].tables[0][2]
    assert shown["optimizer.batch_size"].tolist() == ["32", "64", "128"]
    assert shown["trainer.max_steps"].tolist() == ["200", "400", "200"]


def _mkdir(path):
    path.mkdir()
    return path


def test_page_has_a_table_of_contents_linking_every_section(tmp_path):
    sweep = tmp_path / "lr"
    make_sweep(sweep, [0.05, 0.1], [32], [0, 1], steps=12, every=3)
    build.build(build.ReportOptions(paths=[sweep], figures=False, query_slurm=False))
    page = (sweep / "report" / "index.html").read_text()
    nav = re.search(r"<nav class='toc'>(.*?)</nav>", page, re.S).group(1)
    links = re.findall(r"href='#(s\d+)'", nav)
    assert len(links) >= 4 and all(f"id='{a}'" in page for a in links)
    assert "lr: Final metrics" in nav and "How this report was generated" in nav
    assert "<div class='scroll'><table>" in page  # tables scroll inside their own box


def test_a_report_of_one_run_is_scoped_to_that_run(tmp_path):
    sweep = tmp_path / "outputs"
    make_sweep(sweep, [0.05, 0.1], [32], [0, 1], steps=12, every=3)
    run = sorted(p for p in sweep.iterdir() if p.is_dir())[0]
    out = tmp_path / "rep"
    build.build(build.ReportOptions(paths=[run], out=out, figures=False, query_slurm=False))
    summary = json.loads((out / "report.json").read_text())
    assert summary["runs"] == 1 and summary["sweeps"] == {
        "outputs": {"COMPLETED": 1, "RUNNING": 0, "FAILED": 0, "DIVERGED": 0, "MISSING": 0}
    }
    page = (out / "index.html").read_text()
    assert f"<h1>ijr report: outputs/{run.name}</h1>" in page and "1 sweep(s), 1 job(s)" in page
    build.build(build.ReportOptions(paths=[sweep, run], out=out, figures=False, query_slurm=False))
    assert json.loads((out / "report.json").read_text())["runs"] == 4  # the whole sweep wins


def test_a_completed_run_with_a_damaged_history_takes_its_finals_from_summary_json(tmp_path):
    sweep = tmp_path / "s"
    make_sweep(sweep, [0.05, 0.1], [32], [0], steps=30, every=3)
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    summary = json.loads((runs[0] / "summary.json").read_text())
    lines = (runs[0] / "metrics.jsonl").read_text().splitlines()
    (runs[0] / "metrics.jsonl").write_text("\n".join(lines[:3] + ["{garbage"] + lines[3:5]) + "\n")  # the end lost
    (runs[1] / "metrics.jsonl").write_bytes(b"\x00\xff" * 100)  # unreadable as a whole
    data = collect.collect([sweep], query_slurm=False)
    got = data.runs.set_index("run")
    for run in runs:
        mine = json.loads((run / "summary.json").read_text())
        assert got.loc[run.name, "sharpness"] == mine["sharpness"]
        assert got.loc[run.name, "test_acc"] == mine["test_acc"]
        assert got.loc[run.name, "last_step"] == mine["steps"]
    assert summary["sharpness"] != json.loads(lines[4])["sharpness"]  # (the history alone would be wrong)
    said = [w for w in data.warnings if "final values are taken from its summary.json" in w]
    assert len(said) == 2 and str(runs[0] / "metrics.jsonl") in said[0]


def test_run_pages_one_per_run_linked_from_the_runs_table(tmp_path):
    from urllib.parse import unquote

    from ijr_cli.report import run_pages

    sweep = tmp_path / "lr"
    make_sweep(sweep, [0.05, 0.1], [32], [0, 1], steps=30, every=3)
    build.build(build.ReportOptions(paths=[sweep], figures=False, run_pages=True, query_slurm=False))
    out = sweep / "report"
    index = (out / "index.html").read_text()
    links = re.findall(r"<td class='text' data-v='[^']*'><a href='([^']+)'>", index)
    assert len(links) == 4 and all((out / unquote(link)).is_file() for link in links)
    page = (out / unquote(links[0])).read_text()
    payload = json.loads(re.search(r"id='ijr-run-data'>(.*?)</script>", page, re.S).group(1))
    sharp = next(c for c in payload["charts"] if c["title"] == "sharpness")
    assert [s["name"] for s in sharp["series"]] == ["sharpness", "threshold"]
    steps = np.frombuffer(base64.b64decode(sharp["series"][0]["x"]["i32"]), "<i4")
    values = np.frombuffer(base64.b64decode(sharp["series"][0]["y"]["f32"]), "<f4")
    logged = [
        json.loads(line)
        for line in (sweep / unquote(links[0]).split("/")[-1][:-5] / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps.tolist() == [r["step"] for r in logged]
    np.testing.assert_allclose(values, [r["sharpness"] for r in logged], rtol=1e-6)
    assert "<a href='../../index.html'>" in page
    diff = re.search(r"differs from its sweep</h2>(.*?)</table>", page, re.S).group(1)
    assert re.findall(r"<td class='text'>([a-z_.]+)</td>", diff) == ["optimizer.lr", "seed"]
    data = json.loads(re.search(r"id='ijr-explorer-data'>(.*?)</script>", index, re.S).group(1))
    assert [a["name"] for a in data["parallel"]["axes"]][0] == "optimizer.lr"
    assert len(data["overlay"][0]["series"]) == 4
    assert run_pages.embed_json("x", {"a": "</script><b>"}).count("</script>") == 1  # only its own end
    assert run_pages.rounded(np.array([1.23456789, -0.000123456789, 0.0, np.inf])) == [1.23457, -0.000123457, 0.0, None]


def test_compare_overlays_two_sweeps_with_paired_differences(tmp_path, monkeypatch):
    from ijr_cli.core.errors import UserError
    from ijr_cli.report import figures

    a, b = tmp_path / "a" / "multirun", tmp_path / "b" / "multirun"  # same names: a packed run and its twin
    make_sweep(a, [0.05, 0.1], [32], [0, 1], steps=30, every=3)
    make_sweep(b, [0.05, 0.1], [32], [0, 1], steps=30, every=3)
    shifted = next(p for p in b.iterdir() if p.is_dir() and "lr=0.1,seed=1" in p.name)
    rows = [json.loads(line) for line in (shifted / "metrics.jsonl").read_text().splitlines()]
    rows[-1]["test_acc"] += 0.125
    (shifted / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = {}
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, *a: seen.setdefault(a[1], fig) and save(fig, *a))
    out = tmp_path / "rep"
    build.build(build.ReportOptions(paths=[a, b], out=out, compare=True, query_slurm=False, figure_jobs=1))
    summary = json.loads((out / "report.json").read_text())
    assert set(summary["sweeps"]) == {"a/multirun", "b/multirun"}  # two sections, never merged
    side = pd.read_csv(out / "tables" / "comparison.csv")
    assert side["sweep"].tolist() == ["a/multirun", "a/multirun", "b/multirun", "b/multirun"]
    paired = pd.read_csv(out / "tables" / "comparison_paired.csv").set_index("metric")
    assert paired.loc["test_acc", "pairs"] == 4 and paired.loc["test_acc", "max abs Δ"] == pytest.approx(0.125)
    assert paired.loc["test_acc", "mean Δ"] == pytest.approx(0.125 / 4) and paired.loc["sharpness", "max abs Δ"] == 0
    legend = [t.get_text() for t in seen["comparison_trajectories"].legends[0].get_texts()]
    assert legend == [f"{s}, optimizer.lr={lr}" for s in ("a/multirun", "b/multirun") for lr in ("0.05", "0.1")]
    page = (out / "index.html").read_text()
    assert "Comparison: a/multirun vs b/multirun" in page and "2 sweep(s), 8 job(s)" in page
    with pytest.raises(UserError, match=r"--compare needs at least two sweeps; found 1 \(multirun\)"):
        build.build(build.ReportOptions(paths=[a], compare=True, figures=False, query_slurm=False))
