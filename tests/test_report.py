"""ijr-report: the tables against hand-computed values, the history reader against json.loads, the robustness
cases of issue 6, the figures' mathematics, and the whole command on runs that ijr-train wrote."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, run_cli
from helpers import cli
from synthetic_sweep import make_sweep, write_run  # noqa: E402

from ijr_cli.core.config import family  # noqa: E402
from ijr_cli.report import collect, figures, tables, theory  # noqa: E402


def report(*args, timeout=300):
    return cli("ijr-report", args, timeout=timeout)


def ejr_run(root: Path, name: str, lr: float, jacobian: str, seed: int, acc: float, **extra):
    over = {
        "optimizer.lr": lr,
        "regularizer": jacobian,
        "regularizer.jacobian": jacobian,
        "seed": seed,
        "regularizer.lambda_reg": 0.01 if jacobian == "ejr" else 0.0,
        **extra,
    }
    steps = [0, 10]
    write_run(
        root / name,
        over,
        steps,
        metrics=("train_acc", "test_acc"),
        values={"train_acc": [0.1, 1.0], "test_acc": [0.1, acc]},
    )


# ------------------------------------------------------------------------------------------ tables
def test_table1_matches_paper000_rows(tmp_path):
    """Paper 000 Table 1, SimpleCNN batch 128: lr 0.003 66.71 → 75.40 (+8.69, ERR 26.10); lr 0.1 70.33 → 74.29
    (+3.96, ERR 13.35). Two baseline seeds average to 66.71 (66.21, 67.21: std 0.71)."""
    sweep = tmp_path / "t1"
    ejr_run(sweep, "a", 0.003, "none", 0, 0.6621)
    ejr_run(sweep, "b", 0.003, "none", 1, 0.6721)
    ejr_run(sweep, "c", 0.003, "ejr", 0, 0.7540)
    ejr_run(sweep, "d", 0.1, "none", 0, 0.7033)
    ejr_run(sweep, "e", 0.1, "ejr", 0, 0.7429)
    data = collect.collect([sweep], query_slurm=False)
    t1 = tables.table1(data.runs, data.swept["t1"])
    assert list(t1["lr"]) == ["0.003", "0.1"]
    first, second = t1.iloc[0], t1.iloc[1]
    assert first["baseline (%)"] == "66.71 ± 0.71 (n=2)"
    assert first["+EJR (%)"] == "75.40 (n=1)"
    assert (first["ΔAcc (%p)"], first["ERR (%)"]) == ("+8.69", "+26.10")
    assert (second["ΔAcc (%p)"], second["ERR (%)"]) == ("+3.96", "+13.35")
    assert first["regularisation"] == "ejr λ_reg = 0.01"
    d, e = tables.delta_acc_err(0.9610, 0.9707)  # WRN-28-10 ejr_sam row: +0.97, ERR 24.87
    assert (round(d, 2), round(e, 2)) == (0.97, 24.87)


def test_aggregate_mean_std_count_show_missing_seeds(tmp_path):
    sweep = tmp_path / "agg"
    for seed, acc in enumerate([0.5, 0.6, 0.7]):
        ejr_run(sweep, f"a{seed}", 0.1, "none", seed, acc)
    for seed, acc in enumerate([0.8, 0.9]):  # one seed missing
        ejr_run(sweep, f"b{seed}", 0.3, "none", seed, acc)
    data = collect.collect([sweep], query_slurm=False)
    keys = tables.group_keys(data.runs, data.swept["agg"])
    assert keys == ["optimizer.lr"]
    agg = tables.aggregate(data.runs, keys, ["test_acc", "gen_gap_acc"])
    assert list(agg["optimizer.lr"]) == [0.1, 0.3]
    assert agg["test_acc_mean"].tolist() == pytest.approx([0.6, 0.85])
    assert agg["test_acc_std"].tolist() == pytest.approx([0.1, np.std([0.8, 0.9], ddof=1)])
    assert agg["test_acc_n"].tolist() == [3, 2]
    # the gap per run (train 1.0 − test), then aggregated
    assert agg["gen_gap_acc_mean"].tolist() == pytest.approx([0.4, 0.15])
    shown = tables.display_aggregate(agg, keys, ["test_acc"])
    assert shown["n"].tolist() == [3, 2]  # the count once per row (the missing seed is visible)
    assert shown["test_acc (%)"].tolist() == ["60.00 ± 10.00", "85.00 ± 7.07"]
    md = tables.to_markdown(shown)
    assert "| 0.3            | 2   | 85.00 ± 7.07" in md
    tex = tables.to_latex(shown, caption="c")
    assert "\\toprule" in tex and "60.00 ± 10.00" in tex and "test\\_acc (\\%)" in tex
    partial = agg.assign(gen_gap_acc_n=[2, 2])  # a metric one run of the first group did not log
    shown = tables.display_aggregate(partial, keys, ["test_acc", "gen_gap_acc"])
    assert shown["gen_gap_acc (%)"].tolist()[0].endswith("(n=2)") and "(n=" not in shown["gen_gap_acc (%)"][1]


def test_correlations_against_scipy_and_by_family(tmp_path):
    from scipy import stats

    rng = np.random.default_rng(0)
    rows = []
    for fam in ("mixup", "sam"):
        for i in range(6):
            gap = rng.uniform(0.1, 1)
            rows.append(
                {
                    "family": fam,
                    "gen_gap_loss": -gap if i == 0 else gap,
                    "gen_gap_acc": gap / 2,
                    "sharpness": rng.uniform(1, 10),
                    "input_jac_max": 3 * gap + (1 if fam == "sam" else 0),
                }
            )
    runs = pd.DataFrame(rows)
    corr = tables.correlations(runs)
    pooled = corr[(corr.family == "all") & (corr.measure == "sharpness")].iloc[0]
    loss_gap = runs["gen_gap_loss"].abs()  # paper 002: |test loss − train loss|
    assert pooled["τ (loss gap)"] == pytest.approx(stats.kendalltau(runs["sharpness"], loss_gap).statistic)
    assert pooled["ρ (loss gap)"] == pytest.approx(stats.spearmanr(runs["sharpness"], loss_gap).statistic)
    assert pooled["n (loss gap)"] == 12
    for fam in ("mixup", "sam"):  # within a family the Jacobian is a monotone function of the gap
        row = corr[(corr.family == fam) & (corr.measure == "input_jac_max")].iloc[0]
        assert row["τ (loss gap)"] == pytest.approx(1.0) and row["ρ (acc gap)"] == pytest.approx(1.0)
    assert set(corr.family) == {"all", "mixup", "sam"}
    few = tables.correlations(runs.iloc[:2])
    assert few["τ (loss gap)"].isna().all()  # fewer than 3 runs: no correlation


def test_family_names_the_regularisers_in_force():
    base = {
        "optimizer.name": "sgd",
        "optimizer.weight_decay": 5e-4,
        "regularizer.label_smoothing": 0.0,
        "regularizer.mixup_alpha": 0.0,
        "regularizer.augment": False,
        "regularizer.jacobian": "none",
    }
    assert family(base) == "weight_decay"
    assert family({**base, "optimizer.weight_decay": 0.0}) == "none"
    assert family({**base, "regularizer.mixup_alpha": 0.4}) == "mixup"
    assert family({**base, "optimizer.name": "sam", "regularizer.augment": True}) == "augment+sam"


# ------------------------------------------------------------------------------------------ history and run facts
def test_final_values_best_accuracy_and_eos_onset(tmp_path):
    """EoS onset = first logged step with sharpness ≥ 0.9 × threshold, the threshold carried forward (a schedule
    changes it only at evaluation rows here)."""
    steps = [0, 10, 20, 30, 40]
    values = {
        "sharpness": [1.0, 5.0, 17.0, 19.0, None],
        "threshold": [20.0, None, 20.0, None, 20.0],
        "test_acc": [0.1, 0.7, 0.6, 0.65, 0.62],
        "train_acc": [0.1, 0.8, 0.9, 0.95, 0.97],
        "jac_op_norm": [1.0, None, 2.0, None, None],
    }
    write_run(tmp_path / "s" / "r", {"seed": 0}, steps, metrics=tuple(values), values=values, status="RUNNING")
    data = collect.collect([tmp_path / "s"], query_slurm=False)
    run = data.runs.iloc[0]
    assert run["eos_onset_step"] == 30  # 17 < 0.9·20 at step 20; 19 ≥ 18 at step 30 (threshold carried forward)
    assert run["jac_op_norm"] == 2.0  # last logged value, not the last row's null
    assert run["sharpness"] == 19.0 and run["test_acc"] == 0.62 and run["last_step"] == 40
    assert run["best_test_acc"] == 0.7  # no summary.json (RUNNING): from the history
    assert run["gen_gap_acc"] == pytest.approx(0.97 - 0.62)


def test_eos_onset_carries_the_threshold_within_a_run_only(tmp_path):
    """Two runs: the second logs no threshold before step 20, so the first run's threshold (2) must not reach it
    (its sharpness 5 at step 10 would then count); with its own threshold 100 it never reaches 90."""
    steps = [0, 10, 20]
    write_run(
        tmp_path / "s" / "a",
        {"seed": 0},
        steps,
        metrics=("sharpness", "threshold"),
        values={"sharpness": [1.0, 1.9, 2.0], "threshold": [2.0, 2.0, 2.0]},
    )
    write_run(
        tmp_path / "s" / "b",
        {"seed": 1},
        steps,
        metrics=("sharpness", "threshold"),
        values={"sharpness": [1.0, 5.0, 50.0], "threshold": [None, None, 100.0]},
    )
    runs = collect.collect([tmp_path / "s"], query_slurm=False).runs.set_index("run")
    assert runs.loc["a", "eos_onset_step"] == 10  # 1.9 >= 0.9 * 2
    assert math.isnan(runs.loc["b", "eos_onset_step"])


def test_reader_equals_json_loads_including_rare_keys_and_nulls(tmp_path):
    """A key that appears only in middle rows, a null, an integer, a list and a string: the fast path's
    completeness check sends the file to full inference, and every value equals json.loads'."""
    rows = [
        {"step": 0, "a": 1.5, "s": "x", "k": [1.0, 2.0]},
        {"step": 1, "a": 2, "rare": 7.25},
        {"step": 2, "a": None, "b": 3.0},
        {"step": 3, "a": 4.0, "b": 1.0},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    frame, warning = collect.read_metrics(path)
    assert warning is None
    got = frame.to_pandas().set_index("step")
    assert set(got.columns) == {"a", "rare", "b"}  # text and list columns are not metrics
    assert got.loc[1, "rare"] == 7.25 and math.isnan(got.loc[0, "rare"])
    assert got["a"].tolist()[:2] == [1.5, 2.0] and math.isnan(got.loc[2, "a"])


def test_reader_skips_torn_and_corrupt_lines_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "a": 1.0}\nnot json\n{"step": 2, "a": 3.0}\n{"step": 3, "a": 4.')
    frame, warning = collect.read_metrics(path)
    assert frame.to_pandas()["a"].tolist() == [1.0, 3.0]
    assert str(path) in warning and "2 unreadable line(s)" in warning


CHUNK_FILES = {  # name -> rows, each a case of read_chunk's checks
    "good1": [{"step": 0, "a": 1.0, "b": 2.0}, {"step": 1, "a": 1.5, "b": None}],
    "good2": [{"step": 0, "a": 3.0, "c": 4.0}, {"step": 5, "a": 3.5, "c": 4.5}],
    "rare": [{"step": 0, "a": 1.0}, {"step": 1, "a": 2.0, "z": 9.0}, {"step": 2, "a": 3.0}],
    "text_a": [{"step": 0, "a": "x"}, {"step": 1, "a": "y"}],
    "nostep": [{"a": 1.0}],
    # a rare key beside nulls: the nulls must not cover for the lost value
    "rare_nulls": [
        {"step": 0, "a": None, "b": 1.0},
        {"step": 1, "a": 2.0, "y": 5.0, "b": None},
        {"step": 2, "a": None, "b": 3.0},
    ],
    # ':' and `": null` inside strings (only the slow path may read these), a list value
    "colon_text": [
        {"step": 0, "a": 1.0, "sharpness_path": 'cuda:0 ": null'},
        {"step": 1, "a": 2.0, "k": [1.0]},
        {"step": 2, "a": 3.0, "sharpness_path": "x"},
    ],
}


def write_chunk_files(directory, texts):
    items = []
    for k, (name, text) in enumerate(texts.items()):
        path = directory / f"{name}.jsonl"
        path.write_text(text)
        items.append((k, path))
    return items


def assert_chunk_equals_per_file(items):
    frame, warnings = collect.read_chunk(items)
    got = frame.to_pandas()
    for index, path in items:
        single, _ = collect.read_metrics(path)
        mine = got[got.run == index].drop(columns="run").dropna(axis=1, how="all").reset_index(drop=True)
        if single is None:
            assert mine.empty
            continue
        expected = single.to_pandas()
        expected = expected.dropna(axis=1, how="all")
        pd.testing.assert_frame_equal(mine[expected.columns], expected, check_dtype=False)
    return got, warnings


def test_chunked_reader_equals_the_per_file_reader(tmp_path):
    """read_chunk (one polars call for many files) gives each file's values exactly as read_metrics does, and
    sends the files its checks reject (a rare middle key, also beside nulls, a torn line, a key of another type,
    no step, ':' in a string) to it."""
    texts = {name: "".join(json.dumps(r) + "\n" for r in rows) for name, rows in CHUNK_FILES.items()}
    texts["torn"] = '{"step": 0, "a": 1.0}\n{"step": 1, "a": 2.0}\n{"step": 2, "a": 3.'
    texts["compact"] = '{"step":0,"a":null,"b":1.0}\n{"step":1,"a":2.0,"w":7.0}\n{"step":2,"a":1.0,"b":null}\n'
    items = write_chunk_files(tmp_path, texts)
    got, warnings = assert_chunk_equals_per_file(items)
    names = list(texts)
    value = {name: got[got.run == names.index(name)] for name in names}
    assert value["rare"]["z"].dropna().tolist() == [9.0]
    assert value["rare_nulls"]["y"].dropna().tolist() == [5.0]
    assert value["compact"]["w"].dropna().tolist() == [7.0]
    assert value["colon_text"]["a"].tolist() == [1.0, 2.0, 3.0]
    assert [names[i] for i, _ in warnings] == ["nostep", "torn"]


def test_chunked_reader_with_a_blank_line(tmp_path):
    """A blank line makes a file's rows differ from its lines: the chunk is read file by file, still exactly."""
    texts = {name: "".join(json.dumps(r) + "\n" for r in rows) for name, rows in CHUNK_FILES.items()}
    texts["good1"] = texts["good1"].replace("\n", "\n\n", 1)
    got, _ = assert_chunk_equals_per_file(write_chunk_files(tmp_path, texts))
    assert got[got.run == 0]["a"].tolist() == [1.0, 1.5]


def test_history_parquet_is_the_long_form_of_every_logged_value(tmp_path):
    import pyarrow.parquet as pq

    sweep = tmp_path / "h"
    make_sweep(sweep, [0.1, 0.2], [32], [0], steps=7, metrics=("test_acc", "sharpness", "threshold"))
    data = collect.collect([sweep], query_slurm=False)
    n = collect.write_history(data.wide, dict(zip(data.runs.index, data.runs["run_id"])), tmp_path / "h.parquet")
    long = pq.read_table(tmp_path / "h.parquet").to_pandas()
    assert n == len(long)
    for run_dir in sorted(sweep.glob("*/metrics.jsonl")):
        run_id = f"h/{run_dir.parent.name}"
        for row in map(json.loads, run_dir.read_text().splitlines()):
            for key, value in row.items():
                if key == "step":
                    continue
                hit = long[(long.run == run_id) & (long.step == row["step"]) & (long.metric == key)]
                assert hit["value"].tolist() == [value]
    assert len(long) == 2 * 7 * 6  # 2 runs x 7 steps x (lr, batch_loss, 3 metrics, elapsed_s)


# ------------------------------------------------------------------------------------------ figures' mathematics
def test_trajectory_stats_mean_sd_per_value_and_sparse_metrics_keep_their_points():
    """Lines are the mean over the runs sharing a value, bands their sd (ddof 1), per step; a metric logged every
    10th row (as sharpness is) keeps its points however the dense rows are thinned."""
    rows = []
    for run, (_lr, scale) in enumerate([("0.1", 1.0), ("0.1", 3.0), ("0.2", 10.0)]):
        for step in range(0, 100):
            rows.append(
                {
                    "run": run,
                    "step": step,
                    "train_ce": scale * step,
                    "sharpness": scale * step if step % 10 == 5 else np.nan,
                }
            )
    history = pd.DataFrame(rows)
    values = pd.Series(["0.1", "0.1", "0.2"], index=[0, 1, 2])
    stats = figures.trajectory_stats(history, values, ["train_ce", "sharpness"], max_points=7)
    dense, sparse = stats["train_ce"], stats["sharpness"]
    assert len(dense.xs("0.1", level=0)) <= 8  # thinned: about MAX_POINTS steps (and the last)
    kept = sorted(sparse.xs("0.2", level=0).index)  # thinned among its own 10 rows, not the dense ones
    assert 6 <= len(kept) <= 8 and kept[0] == 5 and kept[-1] == 95 and all(k % 10 == 5 for k in kept)
    for step, row in sparse.xs("0.1", level=0).iterrows():
        assert row["mean"] == pytest.approx(2.0 * step) and row["std"] == pytest.approx(
            np.std([step, 3.0 * step], ddof=1)
        )
    assert sparse.xs("0.2", level=0)["std"].isna().all()  # one run: no band


def test_impurity_eigenvalues_agree_with_torch_and_theorem1():
    import torch

    from ijr_cli.curvature.impurity import top_impurity

    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(10, 0.3), size=200)
    ev = theory.impurity_eigenvalues(p)
    torch_top = top_impurity(torch.tensor(p, dtype=torch.float64)).numpy()
    assert np.allclose(ev[:, -1], torch_top, atol=1e-10)
    assert np.allclose(ev[:, 0], 0, atol=1e-12)  # λ(C) = 0
    q = np.sort(p, axis=1)[:, ::-1]
    gini = 2 * q[:, 0] * (1 - q[:, 0])
    assert (ev[:, -1] <= q[:, 0] + 1e-12).all() and (ev[:, -1] >= q[:, 1] - 1e-12).all()
    assert (ev[:, -1] >= gini / 2 - 1e-12).all() and (ev[:, -1] <= gini + 1e-12).all()
    roots = ev[0][1:]  # the nonzero eigenvalues are the roots of the secular function
    assert np.abs(theory.secular(roots, p[0])).max() < 1e-8


# ------------------------------------------------------------------------------------------ the command
def test_report_on_a_partial_sweep_with_bad_files(tmp_path):
    """A partial sweep (a RUNNING run, a planned job never started), a truncated metrics.jsonl, a run without
    sharpness and a directory from another tool: reported and skipped with warnings naming the files."""
    import yaml

    sweep = tmp_path / "sweep"
    make_sweep(sweep, [0.01, 0.1], [32], [0, 1], steps=30, every=3)
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    torn = runs[0] / "metrics.jsonl"
    torn.write_text(torn.read_text()[:-40])
    write_run(
        sweep / "optimizer.batch_size=32,optimizer.lr=0.3,seed=0",
        {"optimizer.lr": 0.3, "seed": 0},
        list(range(0, 12, 3)),
        metrics=("test_acc", "train_acc"),
        status="RUNNING",
    )
    foreign = sweep / "tensorboard_run"
    foreign.mkdir()
    (foreign / "metrics.jsonl").write_text('{"loss": 1}\n')
    plan = yaml.safe_load((sweep / "sweep.yaml").read_text())
    plan["jobs"].append({"name": "optimizer.batch_size=32,optimizer.lr=1.0,seed=0", "overrides": ["optimizer.lr=1.0"]})
    (sweep / "sweep.yaml").write_text(yaml.safe_dump(plan))
    proc = report(sweep, "--no-figures")
    assert proc.returncode == 0, proc.stderr
    assert f"{torn}: 1 unreadable line(s) skipped" in proc.stderr
    assert f"{foreign / 'metrics.jsonl'}: not an ijr run directory" in proc.stderr
    out = sweep / "report"
    runs_csv = pd.read_csv(out / "runs.csv")
    assert len(runs_csv) == 5
    assert sorted(runs_csv["status"]) == ["COMPLETED"] * 4 + ["RUNNING"]
    assert runs_csv["sharpness"].isna().sum() == 1
    page = (out / "index.html").read_text()
    assert "missing: 1" in page and "running: 1" in page and "optimizer.lr=1.0" in page
    assert "unreadable line(s) skipped" in page
    summary = json.loads((out / "report.json").read_text())
    assert summary["runs"] == 5 and len(summary["warnings"]) == 3  # the torn COMPLETED run: finals from summary.json
    assert f"{torn}: damaged or unreadable; the COMPLETED run's final values are taken from" in proc.stderr
    assert not list(tmp_path.glob("**/.report.tmp-*"))


def test_empty_input_is_one_line_and_nothing_is_written(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = report(empty)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"ijr-report: error: no ijr run directories under {empty}; a run directory holds status.json or "
        "metrics.jsonl (ijr-train writes them)"
    ]
    assert list(empty.iterdir()) == []
    proc = report(tmp_path / "nope")
    assert proc.returncode == 2 and "does not exist" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = report(empty, tmp_path)
    assert proc.returncode == 2 and "--out" in proc.stderr
    sweep = tmp_path / "s"
    make_sweep(sweep, [0.1], [32], [0], steps=5)
    (tmp_path / "afile").write_text("")
    for args, says in (
        (["--jobs", "-1"], "--jobs -1: give a number of threads"),
        (["--figure-jobs", "-1"], "--figure-jobs -1: give a number of processes >= 1, or 0 for one per CPU"),
        (["--metrics", "nope"], "--metrics nope: not logged by any run"),
        (["--family-by", "nope"], "--family-by nope: no such column"),
        (["--out", tmp_path / "afile"], "is a file; give a directory"),
    ):
        proc = report(sweep, "--no-figures", *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("ijr-report: error: "), lines
        assert says in lines[0], lines
    assert not (sweep / "report").exists() and (tmp_path / "afile").read_text() == ""


def test_a_failed_report_leaves_the_previous_one(tmp_path):
    sweep = tmp_path / "s"
    make_sweep(sweep, [0.1], [32], [0, 1], steps=5)
    assert report(sweep, "--no-figures").returncode == 0
    before = (sweep / "report" / "runs.csv").read_text()
    proc = report(sweep, "--no-figures", "--group-by", "no.such.key")
    assert proc.returncode == 2 and "--group-by no.such.key: no such column" in proc.stderr
    assert (sweep / "report" / "runs.csv").read_text() == before
    assert sorted(p.name for p in sweep.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow  # (a subprocess run of several seconds: in make test-slow)
def test_report_on_runs_written_by_ijr_train(tmp_path):
    """The real thing: an `ijr-train -m` sweep (lr × seed) with sharpness, then ijr-report with figures. The
    runs table has the swept columns, the final sharpness equals the last logged one, history.parquet holds
    every logged metric value, and the figures exist as PNG and PDF."""
    import pyarrow.parquet as pq

    sweep = tmp_path / "multirun"
    proc = run_cli(
        [
            "-m",
            *TINY,
            "trainer.max_steps=12",
            "trainer.eval_every=6",
            "metrics.names=[sharpness,threshold]",
            "metrics.default_every=6",
            "metrics.lanczos_max_iters=10",
            "probe.n=64",
            "optimizer.lr=0.05,0.1",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = report(sweep, "--out", tmp_path / "rep", "--theory")
    assert proc.returncode == 0, proc.stderr
    drawn = [ln for ln in proc.stderr.splitlines() if ln.startswith("ijr-report: figure ")]  # progress, per figure
    assert drawn and drawn[0].startswith("ijr-report: figure 1/") and "paper000_fig2" in drawn[-1], proc.stderr
    out = tmp_path / "rep"
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 4 and set(runs["status"]) == {"COMPLETED"}
    assert sorted(runs["optimizer.lr"]) == [0.05, 0.05, 0.1, 0.1] and sorted(runs["seed"]) == [0, 0, 1, 1]
    long = pq.read_table(out / "history.parquet").to_pandas()
    for _, run in runs.iterrows():
        logged = [json.loads(line) for line in (Path(run["path"]) / "metrics.jsonl").read_text().splitlines()]
        sharp = [r["sharpness"] for r in logged if "sharpness" in r]
        assert run["sharpness"] == sharp[-1]
        mine = long[(long.run == run["run_id"]) & (long.metric == "sharpness")].sort_values("step")
        assert mine["value"].tolist() == sharp
        assert run["threshold"] == pytest.approx(2 / run["optimizer.lr"])
    agg = pd.read_csv(out / "tables" / "aggregate.csv")
    assert agg["optimizer.lr"].tolist() == [0.05, 0.1] and agg["test_acc_n"].tolist() == [2, 2]
    pngs = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert pngs == sorted(p.stem for p in (out / "figures").glob("*.pdf"))
    assert "multirun_trajectories_optimizer.lr" in pngs and "paper000_fig1_secular" in pngs
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs)
    assert "ijr-report" in page and "How this report was generated" in page
