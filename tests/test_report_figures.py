"""ijr-report's figures are readable: no two rendered tick labels overlap, accuracy is in % everywhere, the trained
loss is plotted and named, sharpness has its normalised edge-of-stability panel, finals carry the threshold, the
tracked spectrum is drawn, and the synthetic theory figures appear only when asked for."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from synthetic_sweep import make_sweep, write_run  # noqa: E402

from ijr_cli.report import build, collect, figures


def _runs(values: dict, n: int) -> pd.DataFrame:
    return pd.DataFrame({k: v for k, v in values.items()}, index=range(n))


def test_tick_labels_never_overlap_on_log_axes(tmp_path, drawn):
    """The issue's case (lr 0.2, 0.3, 0.4 on a log axis: '2×10⁻¹3×10⁻¹4×10⁻¹'), a dense lr grid, and metrics
    spanning decades: every figure's rendered tick labels are pairwise disjoint, and the swept values are ticks."""
    rng = np.random.default_rng(0)
    for name, lrs in (("few", [0.2, 0.3, 0.4, 0.025]), ("dense", list(np.geomspace(0.001, 0.5, 14)))):
        lr = np.repeat(lrs, 2)
        runs = _runs(
            {
                "optimizer.lr": lr,
                "optimizer.batch_size": np.tile([32.0, 128.0], len(lrs)),
                "sharpness": 1.5 / lr,
                "threshold": 2 / lr,
                "jac_op_norm": np.geomspace(0.01, 500, len(lr)),
                "test_acc": rng.uniform(0.5, 0.9, len(lr)),
                "input_jac_max": rng.uniform(1, 3, len(lr)),
            },
            len(lr),
        )
        fig = figures.finals(runs, "optimizer.lr", "optimizer.batch_size", tmp_path, name, name)
        assert fig is not None
        assert figures.overlapping_tick_labels(drawn[name]) == [], name
        ticks = [t for t in figures.tick_label_boxes(drawn[name]) if t[1] == "x" and t[0] == 0]
        assert {t[2] for t in ticks} <= {figures.label(float(f"{v:.6g}")) for v in lrs} and len(ticks) >= 2
        legend = drawn[name].axes[-1].get_legend()
        assert legend is not None and "32" in [t.get_text() for t in legend.get_texts()]  # 32, not 32.0
    history = pd.DataFrame(
        {
            "run": np.repeat([0, 1], 50),
            "step": np.tile(np.arange(50), 2),
            "sharpness": np.concatenate([np.geomspace(0.05, 40, 50), np.geomspace(0.1, 4, 50)]),
            "threshold": np.repeat([40.0, 4.0], 50),
            "jac_op_norm": np.tile(np.geomspace(1e-3, 1e3, 50), 2),
        }
    )
    runs = _runs({"optimizer.lr": [0.05, 0.5], "run": ["a", "b"]}, 2)
    figures.trajectories(history, runs, "optimizer.lr", tmp_path, "traj", "traj")
    assert figures.overlapping_tick_labels(drawn["traj"]) == []
    sharp = next(ax for ax in drawn["traj"].axes if ax.get_ylabel() == "sharpness")
    assert sharp.get_yscale() == "log"
    assert len([t for t in figures.tick_label_boxes(drawn["traj"]) if t[2] in ("1", "10", "0.1")]) >= 2


def test_sharpness_over_threshold_carries_the_threshold_within_each_run():
    history = pd.DataFrame(
        {
            "run": [0, 0, 0, 1, 1],
            "step": [0, 1, 2, 0, 1],
            "sharpness": [1.0, np.nan, 3.0, 2.0, 8.0],
            "threshold": [4.0, np.nan, np.nan, np.nan, 8.0],
        }
    )
    edge = figures.with_edge(history)[figures.EDGE].to_numpy()
    np.testing.assert_allclose(edge, [0.25, np.nan, 0.75, np.nan, 1.0])


def test_trajectories_name_the_trained_loss_and_show_accuracy_in_percent(tmp_path, drawn):
    sweep = tmp_path / "mse"
    for lr in (0.05, 0.1):
        write_run(sweep / f"lr={lr}", {"optimizer.lr": lr, "loss.name": "mse", "seed": 0}, list(range(0, 30, 3)))
    data = collect.collect([sweep], query_slurm=False)
    history = data.wide.to_pandas()
    history["train_loss"] = history["train_ce"] / 7  # an MSE value is not the cross-entropy
    figures.trajectories(history, data.runs, "optimizer.lr", tmp_path, "t", "t")
    titles = {ax.get_title(): ax for ax in drawn["t"].axes}
    assert "trained loss: mse (solid train, dashed test)" in titles
    assert "plain cross-entropy (solid train, dashed test)" in titles  # differs from the trained loss: shown
    assert "sharpness / threshold (1 = the edge of stability)" in titles
    acc = titles["accuracy % (solid train, dashed test)"]
    top = max(np.nanmax(line.get_ydata()) for line in acc.get_lines())
    assert 50 < top <= 100 and acc.get_ylabel() == "train_acc (%)"
    history["train_loss"] = history["train_ce"]  # plain CE trained: one loss panel
    figures.trajectories(history, data.runs.assign(**{"loss.name": "ce"}), "optimizer.lr", tmp_path, "u", "u")
    titles = [ax.get_title() for ax in drawn["u"].axes]
    assert "trained loss: ce (solid train, dashed test)" in titles
    assert not any(t.startswith("plain cross-entropy") for t in titles)


def test_finals_mark_every_value_draw_the_threshold_and_use_percent(tmp_path, drawn):
    lr = np.repeat([0.01, 0.1, 0.4], 2)
    runs = _runs({"optimizer.lr": lr, "sharpness": 1.9 / lr, "threshold": 2 / lr, "test_acc": [0.8] * 6}, 6)
    figures.finals(runs, "optimizer.lr", None, tmp_path, "f", "f")
    axes = {ax.get_title(): ax for ax in drawn["f"].axes}
    dashed = [ln for ln in axes["sharpness"].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1
    np.testing.assert_allclose(dashed[0].get_ydata(), 2 / np.array([0.01, 0.1, 0.4]))
    marked = [ln for ln in axes["sharpness"].get_lines() if ln.get_marker() not in (None, "None", "")]
    assert marked and len(marked[0].get_xdata()) == 3
    acc = axes["test_acc (%)"]
    assert np.nanmax(np.concatenate([ln.get_ydata() for ln in acc.get_lines()])) == pytest.approx(80)


def test_heatmap_integer_labels_and_one_count_in_the_caption(tmp_path, drawn):
    runs = _runs(
        {"optimizer.batch_size": [32.0, 32.0, 128.0, 128.0], "trainer.max_steps": [200.0, 400.0] * 2, "test_acc": 0.5},
        4,
    )
    fig = figures.heatmap(runs, "optimizer.batch_size", "trainer.max_steps", "test_acc", tmp_path, "h", "h")
    ax = drawn["h"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["200", "400"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["32", "128"]
    assert all("(" not in t.get_text() for t in ax.texts) and "n = 1 run(s) per cell" in fig.caption


def _rows_with_spectrum(k_of_step):
    rows = []
    for step, k in enumerate(k_of_step):
        eig = [10.0 / (i + 1) + step for i in range(k)]
        rows.append({"step": step, "sharpness": eig[0], "sharpness_k": eig, "threshold": 20.0, "lr": 0.1})
    return rows


def test_sharpness_k_lists_become_columns_in_every_reader_and_a_spectrum_is_drawn(tmp_path, drawn):
    """sharpness_k (a list per row, its length varying with sharpness_k=auto) becomes sharpness_k_1..K in the
    chunked reader, the per-file reader and the line-by-line reader of a torn file; the report draws the
    spectrum with every tracked eigenvalue."""
    rows = _rows_with_spectrum([3, 3, 2, 4, 4])
    sweep = tmp_path / "spec"
    for seed in (0, 1):
        write_run(sweep / f"seed={seed}", {"seed": seed}, [0], metrics=("test_acc",), values={"test_acc": [0.5]})
        (sweep / f"seed={seed}" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torn = sweep / "seed=1" / "metrics.jsonl"
    torn.write_text(torn.read_text() + '{"step": 9, "sharp')
    expected = np.full((5, 4), np.nan)
    for i, r in enumerate(rows):
        expected[i, : len(r["sharpness_k"])] = r["sharpness_k"]
    columns = [f"sharpness_k_{i}" for i in range(1, 5)]
    chunk, _ = collect.read_chunk([(0, sweep / "seed=0" / "metrics.jsonl")])
    single, _ = collect.read_metrics(sweep / "seed=0" / "metrics.jsonl")
    line_by_line, warning = collect.read_metrics(torn)
    assert "unreadable line(s) skipped" in warning
    for frame in (chunk, single, line_by_line):
        np.testing.assert_array_equal(frame.select(columns).to_numpy(), expected)
    data = collect.collect([sweep], query_slurm=False)
    assert data.runs["sharpness_k_4"].tolist() == [expected[-1, 3]] * 2
    sections, _ = build.write_tables(data, build.ReportOptions(paths=[sweep]), _mkdir(tmp_path / "tables"))
    build.write_figures(data, sections, tmp_path / "figures")
    spectrum = drawn["spec_spectrum"]
    assert [ln.get_label() for ln in spectrum.axes[0].get_lines()] == ["λ_1", "λ_2", "λ_3", "λ_4", "threshold"]
    np.testing.assert_array_equal(spectrum.axes[0].get_lines()[3].get_ydata(), expected[3:, 3])


def _mkdir(path):
    path.mkdir()
    return path


def test_theory_figures_only_with_theory(tmp_path):
    sweep = tmp_path / "s"
    make_sweep(sweep, [0.05, 0.1], [32], [0], steps=12, every=3)
    build.build(build.ReportOptions(paths=[sweep], query_slurm=False))
    stems = {p.stem for p in (sweep / "report" / "figures").glob("*.png")}
    assert stems and not {"paper000_fig1_secular", "paper000_fig2_impurity_bounds"} & stems
    assert "Theory figures" not in (sweep / "report" / "index.html").read_text()
    build.build(build.ReportOptions(paths=[sweep], query_slurm=False, theory=True))
    stems = {p.stem for p in (sweep / "report" / "figures").glob("*.png")}
    assert {"paper000_fig1_secular", "paper000_fig2_impurity_bounds"} <= stems


def test_finals_without_a_logged_threshold(tmp_path, drawn):
    runs = _runs(
        {"optimizer.weight_decay": [0.0, 0.005] * 2, "sharpness": [3.0, 4.0, 3.5, 4.5], "seed": [0, 0, 1, 1]}, 4
    )
    assert figures.finals(runs, "optimizer.weight_decay", None, tmp_path, "wd", "wd") is not None
    axes = {ax.get_title(): ax for ax in drawn["wd"].axes}
    assert not [ln for ln in axes["sharpness"].get_lines() if ln.get_linestyle() == "--"]
