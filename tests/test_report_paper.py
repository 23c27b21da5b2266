"""The figure registry: every figure of papers 000 and 002 draws from a sweep that holds its metrics and arrays
(readably: no overlapping tick labels), and a sweep that lacks them lists the figure as not drawn, naming the
metric and the metrics preset that measures it."""

from __future__ import annotations

import html
import itertools
import json

import numpy as np
import pytest
import yaml
from synthetic_sweep import default_config, job_name, paper_values, write_paper_arrays, write_run  # noqa: E402

from ijr_cli.report import build, collect, figures, paper000, registry


def paper_sweep(root, grid: dict, steps=60, arrays=True):
    """A sweep over the product of `grid` (dotted key -> values) whose runs log every paper metric (and arrays)."""
    root.mkdir(parents=True, exist_ok=True)
    jobs = []
    for combo in itertools.product(*grid.values()):
        over = dict(zip(grid, combo))
        if "regularizer.lambda_reg" in over:
            over["regularizer.jacobian"] = "ejr" if over["regularizer.lambda_reg"] > 0 else "none"
        name = job_name(over)
        cfg = json.loads(json.dumps(default_config()))
        step_list = list(range(steps))
        lr = float(over.get("optimizer.lr", cfg["optimizer"]["lr"]))
        values = paper_values(step_list, lr, 128, int(over.get("seed", 0)))
        write_run(root / name, over, step_list, values=values, config=cfg)
        if arrays:
            write_paper_arrays(root / name, step_list)
        jobs.append({"name": name, "overrides": [f"{k}={v}" for k, v in over.items()]})
    (root / "sweep.yaml").write_text(yaml.safe_dump({"study": "paper", "launcher": "local", "jobs": jobs}))
    return root


def _sweep_data(root):
    data = collect.collect([root], query_slurm=False)
    name = next(iter(data.sweep_dirs))
    keys = [k for k in data.swept[name] if k != "seed"]
    return registry.SweepData(name, data.runs, data.wide.to_pandas(), keys)


def test_missing_data_is_named_with_the_preset_that_measures_it(tmp_path):
    root = tmp_path / "plain"
    for lr in (0.05, 0.1):
        write_run(root / f"lr={lr}", {"optimizer.lr": lr}, [0, 1, 2], metrics=("test_acc", "train_acc"))
    data = _sweep_data(root)
    drawable, skipped = registry.plan(data, False, "plain")
    assert drawable == []
    reasons = {n.entry.key: n.reason for n in skipped}
    assert reasons["paper000_fig08_q_lambda_sqrt"] == "needs metric q_lambda_sqrt; run with metrics=appendix_d"
    assert reasons["paper000_fig04_trajectory_pca"] == "needs metric trajectory; run with metrics=appendix_d"
    assert reasons["paper000_fig03_sharpness_jacobian"] == (
        "needs metrics sharpness, jac_op_norm; run with metrics=full"
    )
    assert reasons["paper000_fig09_m_vectors"] == "needs metrics m_cos, m_mrl; run with metrics=appendix_d"
    assert reasons["paper002_fig2_weight_decay"] == (
        "needs metrics sharpness, gen_gap_loss or gen_gap_acc; run with metrics=eos"  # (no eval metric in a preset)
    )
    assert reasons["paper000_fig07_baseline_vs_ejr"] == (
        "needs metric test_loss; evaluate during the run (trainer.eval_every)"
    )
    assert len(skipped) == len(registry.registry())
    assert registry.preset_for(["sharpness", "threshold"]) == "metrics=eos"
    assert registry.preset_for(["nonsense"]) == "metrics.names=[nonsense]"


def test_conditions_on_the_sweep_are_reasons_too(tmp_path):
    root = paper_sweep(tmp_path / "lr", {"optimizer.lr": [0.05, 0.1]}, steps=20, arrays=False)
    _, skipped = registry.plan(_sweep_data(root), False, "lr")
    reasons = {n.entry.key: n.reason for n in skipped}
    assert reasons["paper002_fig1_label_smoothing"] == "needs a sweep over regularizer.label_smoothing"
    assert reasons["paper002_fig2_weight_decay"] == "needs a sweep over optimizer.weight_decay"
    assert reasons["paper000_fig07_baseline_vs_ejr"].startswith("needs baseline and EJR runs in one sweep")
    assert reasons["paper000_fig33_acc_lr_lambda"] == "needs a sweep over regularizer.lambda_reg"
    assert reasons["paper000_fig04_trajectory_pca"].startswith("needs metric trajectory")
    assert "paper000_fig03_sharpness_jacobian" not in reasons and "paper000_fig05_jacobian_phases" not in reasons


def test_pca_of_a_known_trajectory():
    t = np.linspace(0, 1, 50)
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))[0]
    points = np.stack([3 * np.cos(2 * t), np.sin(2 * t), 0 * t, 0 * t, 0 * t, 0 * t], axis=1) @ rotation
    xy, share = paper000.pca_2d(points)
    centred = points - points.mean(axis=0)
    assert np.allclose(np.linalg.norm(xy, axis=1), np.linalg.norm(centred, axis=1))  # the plane holds it all
    assert share.sum() == pytest.approx(1.0)


def test_chosen_steps_and_the_slowly_varying_factor():
    steps = np.arange(0, 100, 10)
    assert paper000.chosen_steps(steps, onset=42) == [0, 40, 70, 90]
    assert paper000.chosen_steps(steps[:1]) == [0]
    proxy = np.linspace(1, 2, 40)
    c = 3 + 0.01 * np.arange(40)
    np.testing.assert_allclose(paper000.slowly_varying_factor(c * proxy, proxy, window=1), c)


def test_per_run_array_figures_draw_from_a_small_sweep(tmp_path, drawn):
    root = paper_sweep(tmp_path / "arr", {"optimizer.lr": [0.05, 0.1]}, steps=40)
    data = _sweep_data(root)
    drawable, _ = registry.plan(data, False, "arr")
    names = dict(drawable)
    for key in ("paper000_fig04_trajectory_pca", "paper000_fig08_q_lambda_sqrt", "paper000_fig05_jacobian_phases"):
        fig = names[key].draw(data, tmp_path, key, names[key])
        assert fig is not None and fig.png.stat().st_size > 5000 and "run(s) of sweep arr: " in fig.caption
        assert figures.overlapping_tick_labels(drawn[key]) == [], key
    jac = drawn["paper000_fig05_jacobian_phases"].axes[0]
    assert "d log‖⟨J⟩‖/dt" in jac.get_title()  # the synthetic three phases were found and marked
    assert len([p for p in jac.patches]) == 3


@pytest.mark.slow  # (every registry figure: about a minute of drawing)
def test_every_registry_figure_draws_from_a_sweep_that_holds_its_data(tmp_path, drawn):
    root = paper_sweep(
        tmp_path / "everything",
        {
            "optimizer.lr": [0.05, 0.1],
            "regularizer.lambda_reg": [0.0, 0.01],
            "regularizer.label_smoothing": [0.0, 0.1],
            "optimizer.weight_decay": [0.0, 5e-4],
        },
        steps=50,
    )
    build.build(build.ReportOptions(paths=[root], query_slurm=False, figure_jobs=1))
    stems = {p.stem for p in (root / "report" / "figures").glob("*.png")}
    keys = [e.key for e in registry.registry()]
    assert set(keys) <= stems, set(keys) - stems
    assert {p.stem for p in (root / "report" / "figures").glob("*.pdf")} == stems
    for key in keys:
        assert figures.overlapping_tick_labels(drawn[key]) == [], key
    page = (root / "report" / "index.html").read_text()
    assert html.escape("everything: the papers' figures") in page and "Not drawn from this sweep" not in page
    runs = collect.collect([root], query_slurm=False).runs
    assert runs["catapults"].min() >= 1 and runs["active_reg_start_step"].notna().all()


def test_run_page_array_views(tmp_path):
    from ijr_cli.report import run_pages

    root = paper_sweep(tmp_path / "arr", {"optimizer.lr": [0.05]}, steps=20)
    run = next(p for p in root.iterdir() if p.is_dir())
    views = {v["name"].split(" ")[0].rstrip(":"): v for v in run_pages.array_views(run, onset=8)}
    assert views["trajectory"]["kind"] == "scatter" and len(views["trajectory"]["x"]) == 20
    assert views["q_lambda_sqrt"]["kind"] == "heatmaps" and views["q_lambda_sqrt"]["steps"] == [0, 8, 13, 19]
    assert np.asarray(views["q_lambda_sqrt"]["matrices"][0]).shape == (4, 4)
    assert views["weight_norm_layers"]["kind"] == "lines"
    assert [s["name"] for s in views["weight_norm_layers"]["series"]] == [
        "layer0.weight",
        "layer1.weight",
        "layer2.weight",
    ]
    hist = views["jq1_norm_hist"]
    assert hist["kind"] == "lines" and hist["series"][0]["x"][0] == pytest.approx(0.25)
    json.dumps(views, allow_nan=False)  # embeddable as it is
