"""Phase detection on synthetic curves with known phases: the edge-of-stability onset, the active-regularisation
period of ‖⟨J⟩‖ (paper 000 §4.2) and catapults; and their columns in the runs table."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_sweep import make_sweep  # noqa: E402

from ijr_cli.report import collect, phases


def test_eos_onset_is_the_first_step_at_the_fraction_with_the_threshold_carried():
    steps = np.arange(0, 100, 10)
    sharp = np.array([1, 2, np.nan, 5, 8.9, 9.0, 10, 9, 11, 10], dtype=float)
    thr = np.array([10, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan])
    assert phases.eos_onset(steps, sharp, thr) == 50
    assert phases.eos_onset(steps, sharp, thr, fraction=1.05) == 80
    assert phases.eos_onset(steps, sharp, np.full(10, 100.0)) is None


def test_eos_onset_equals_the_runs_table_column(tmp_path):
    sweep = tmp_path / "s"
    make_sweep(sweep, [0.05, 0.1, 0.2], [32], [0, 1], steps=60, every=3)
    data = collect.collect([sweep], query_slurm=False)
    history = data.wide.to_pandas()
    for run, frame in history.groupby("run"):
        frame = frame.sort_values("step")
        expected = phases.eos_onset(frame["step"], frame["sharpness"], frame["threshold"])
        assert data.runs.loc[run, "eos_onset_step"] == expected


def _three_phase(n=3000, breaks=(600, 1900), slopes=(4e-3, 3e-4, 2.5e-3), noise=0.01, seed=0):
    steps = np.arange(n)
    rate = np.where(steps < breaks[0], slopes[0], np.where(steps < breaks[1], slopes[1], slopes[2]))
    log_j = np.concatenate([[0.0], np.cumsum(rate[:-1])])
    log_j += noise * np.random.default_rng(seed).standard_normal(n)
    return steps, np.exp(log_j)


@pytest.mark.parametrize("breaks", [(600, 1900), (300, 2500), (1200, 1800)])
def test_active_regularisation_period_found_at_the_known_boundaries(breaks):
    steps, j = _three_phase(breaks=breaks)
    found = phases.active_regularisation(steps[::5], j[::5])  # logged every 5th step
    assert found is not None
    assert abs(found.start - breaks[0]) <= 0.03 * len(steps) and abs(found.end - breaks[1]) <= 0.03 * len(steps)
    np.testing.assert_allclose(found.slopes, (4e-3, 3e-4, 2.5e-3), rtol=0.25, atol=1e-4)


def test_no_active_period_without_a_gentle_middle():
    steps = np.arange(2000)
    assert phases.active_regularisation(steps, np.exp(2e-3 * steps)) is None  # one exponential
    long_steps, j = _three_phase(slopes=(4e-3, 3e-3, 2.5e-3))  # slowing, but never gentle
    assert phases.active_regularisation(long_steps, j) is None
    assert phases.active_regularisation(steps[:5], np.ones(5)) is None  # too short


def _catapult_run(spikes=(300, 700), drops=(True, True), n=1000, every=10):
    steps = np.arange(n)
    loss = 2.0 * np.exp(-steps / 300) + 0.05
    sharp_steps = np.arange(0, n, every)
    sharp = np.minimum(20.0, 5 + sharp_steps / 20)
    for s, dropping in zip(spikes, drops):
        loss[s : s + 6] *= np.array([3, 6, 8, 5, 3, 1.5])
        if dropping:
            after = sharp_steps >= s + 4
            sharp = np.where(after, sharp * np.where(sharp_steps < s + 60, 0.6, 1.0), sharp)
    return steps, loss, sharp_steps, sharp


def test_catapults_are_loss_spikes_followed_by_a_sharpness_drop():
    events = phases.catapults(*_catapult_run())
    assert [e.step for e in events] == [300, 700] and [e.peak_step for e in events] == [302, 702]
    assert all(e.sharpness_after <= 0.8 * e.sharpness_before for e in events)
    assert events[0].loss_ratio == pytest.approx(8 * 1.0, rel=0.01)
    only_one = phases.catapults(*_catapult_run(drops=(True, False)))  # a spike without a drop is not one
    assert [e.step for e in only_one] == [300]
    steps, loss, s_steps, sharp = _catapult_run(spikes=())
    assert phases.catapults(steps, loss, s_steps, sharp) == []


def test_phase_columns_of_the_runs_table(tmp_path):
    import polars as pl

    steps, j = _three_phase(n=1000, breaks=(200, 700), slopes=(1.2e-2, 6e-4, 8e-3))
    c_steps, loss, s_steps, sharp = _catapult_run()
    wide = pl.DataFrame(
        {
            "run": np.repeat([0, 1], 1000).astype(np.int32),
            "step": np.tile(steps, 2),
            "jac_op_norm": np.concatenate([j, np.exp(2e-3 * steps)]),
            "batch_loss": np.tile(loss, 2),
            "sharpness": np.tile(np.where(np.isin(steps, s_steps), np.interp(steps, s_steps, sharp), np.nan), 2),
        }
    )
    table = phases.phase_columns(wide)
    assert (
        abs(table.loc[0, "active_reg_start_step"] - 200) <= 30 and abs(table.loc[0, "active_reg_end_step"] - 700) <= 30
    )
    assert np.isnan(table.loc[1, "active_reg_start_step"])
    assert table["catapults"].tolist() == [2, 2] and table["first_catapult_step"].tolist() == [300, 300]
