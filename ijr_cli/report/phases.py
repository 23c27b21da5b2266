"""Phases of a training run, detected from its logged curves (numpy; no torch). Each is a column of the runs table
(`phase_columns`) and a mark on the paper figures.

- edge-of-stability onset: the first logged step where sharpness ≥ `fraction` · threshold (the threshold carried
  forward; Cohen et al. 2021; the same rule as `collect.run_facts`' polars column);
- the active-regularisation period of ‖⟨J⟩‖ (paper 000 §4.2, Fig. 5): ‖⟨J⟩‖ grows fast (I), is actively
  regularised with a gentle slope (II), then grows again (III). Detected as the best three-segment least-squares
  fit of log ‖⟨J⟩‖ against the step (independent lines, breakpoints on a grid of at most GRID points) whose
  middle slope is below `gentle` times both outer slopes;
- catapults (Lewkowycz et al. 2020; paper 000 Fig. 4's "iterative catapult"): the loss jumps to ≥ `spike` times
  its running minimum, and the sharpness measured after the jump (within `window` logged steps) falls ≥ `drop`
  below its last value before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import pandas as pd

from ijr_cli.core import metric_names as M

EOS_FRACTION = 0.9
GRID = 100  # breakpoint candidates of the three-segment fit (the curve is resampled to this many points)


def eos_onset(steps, sharpness, threshold, fraction: float = EOS_FRACTION) -> Optional[int]:
    """The first step with sharpness ≥ fraction · threshold (NaNs skipped, the threshold carried forward)."""
    steps, sharpness = np.asarray(steps), np.asarray(sharpness, dtype=float)
    carried = pd.Series(np.asarray(threshold, dtype=float)).ffill().to_numpy()
    hit = np.flatnonzero(np.isfinite(sharpness) & (sharpness >= fraction * carried))
    return int(steps[hit[0]]) if len(hit) else None


@dataclass
class ActivePeriod:
    start: int  # first step of phase II
    end: int  # first step of phase III
    slopes: tuple  # d log‖⟨J⟩‖ / d step in phases I, II, III


def _segment_sse(x: np.ndarray, y: np.ndarray):
    """sse[i, j]: the residual sum of squares of the least-squares line through points i..j-1, and slope[i, j], for
    all i < j at once from prefix sums ((n+1)² matrices; inf / 0 where j <= i)."""
    n = len(x)
    c = [np.concatenate([[0.0], np.cumsum(v)]) for v in (np.ones(n), x, y, x * x, x * y, y * y)]
    k, sx, sy, sxx, sxy, syy = (v[None, :] - v[:, None] for v in c)
    upper = k > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        var = sxx - sx * sx / k
        cov = sxy - sx * sy / k
        slope = np.where(upper & (var > 1e-300), cov / var, 0.0)
        sse = np.where(upper, np.maximum(syy - sy * sy / k - slope * cov, 0.0), np.inf)
    return sse, slope


def active_regularisation(steps, jac_norm, gentle: float = 0.5, min_points: int = 4) -> Optional[ActivePeriod]:
    """Phase II of ‖⟨J⟩‖ (paper 000 §4.2): see the module docstring. None when the curve has no gentle middle
    (or fewer than 3 · min_points positive values)."""
    steps, v = np.asarray(steps, dtype=float), np.asarray(jac_norm, dtype=float)
    ok = np.isfinite(v) & (v > 0)
    steps, y = steps[ok], np.log(v[ok])
    if len(y) < 3 * min_points:
        return None
    if len(y) > GRID:  # resample evenly in the step (the fit is of the curve, not of its logging cadence)
        grid = np.linspace(steps[0], steps[-1], GRID)
        y, steps = np.interp(grid, steps, y), grid
    n = len(y)
    x = (steps - steps[0]) / max(steps[-1] - steps[0], 1.0)
    sse, slope = _segment_sse(x, y)
    a = np.arange(min_points, n - 2 * min_points + 1)
    b = np.arange(2 * min_points, n - min_points + 1)
    a, b = np.meshgrid(a, b, indexing="ij")
    valid = b - a >= min_points
    total = np.where(valid, sse[0, a] + sse[a, b] + sse[b, n], np.inf)
    best = np.unravel_index(np.argmin(total), total.shape)
    i, j = int(a[best]), int(b[best])
    s = (slope[0, i], slope[i, j], slope[j, n])
    if not (s[1] < gentle * s[0] and s[1] < gentle * s[2]):
        return None
    span = max(steps[-1] - steps[0], 1.0)
    return ActivePeriod(start=int(round(steps[i])), end=int(round(steps[j])), slopes=tuple(float(v / span) for v in s))


@dataclass
class Catapult:
    step: int  # the loss spike's first step above spike × the running minimum
    peak_step: int
    loss_ratio: float  # peak loss / running minimum before it
    sharpness_before: float
    sharpness_after: float  # the lowest sharpness within `window` logged steps after the spike


def catapults(
    steps, loss, sharp_steps, sharpness, spike: float = 2.0, drop: float = 0.2, window: int = 50
) -> List[Catapult]:
    """Loss spikes followed by a sharpness drop (see the module docstring). `loss` is logged at `steps`,
    `sharpness` at `sharp_steps` (often every k-th step)."""
    steps, loss = np.asarray(steps), np.asarray(loss, dtype=float)
    sharp_steps, sharpness = np.asarray(sharp_steps), np.asarray(sharpness, dtype=float)
    keep = np.isfinite(loss)
    steps, loss = steps[keep], loss[keep]
    keep = np.isfinite(sharpness)
    sharp_steps, sharpness = sharp_steps[keep], sharpness[keep]
    if len(loss) < 3 or len(sharpness) < 2:
        return []
    low = np.minimum.accumulate(loss)
    above = loss[1:] >= spike * low[:-1]
    starts = np.flatnonzero(above & ~np.concatenate([[False], above[:-1]])) + 1
    events = []
    for s in starts:
        end = s
        while end + 1 < len(loss) and loss[end + 1] >= spike * low[s - 1]:
            end += 1
        peak = s + int(np.argmax(loss[s : end + 1]))
        before = np.flatnonzero(sharp_steps < steps[s])
        after = np.flatnonzero(sharp_steps >= steps[s])[:window]
        if not len(before) or not len(after):
            continue
        b, lowest = sharpness[before[-1]], float(np.min(sharpness[after]))
        if b > 0 and lowest <= (1 - drop) * b:
            events.append(Catapult(int(steps[s]), int(steps[peak]), float(loss[peak] / low[s - 1]), float(b), lowest))
    return events


PHASE_COLUMNS = ("active_reg_start_step", "active_reg_end_step", "catapults", "first_catapult_step")


def _logged(frame, column: str):
    """(steps, values) of the rows where `column` was logged; `frame` maps names to arrays (a DataFrame or dict)."""
    if column not in frame:
        return None
    v = np.asarray(frame[column], dtype=float)
    ok = np.isfinite(v)
    return np.asarray(frame["step"])[ok], v[ok]


def loss_series(frame):
    """The loss a catapult is read from: the per-step minibatch loss (batch_loss) where logged, else train_loss."""
    for c in (M.BATCH_LOSS, M.TRAIN_LOSS):
        logged = _logged(frame, c)
        if logged is not None and len(logged[0]) >= 3:
            return logged
    return None


def run_phases(frame) -> dict:
    """One run's history (step and metric arrays, in step order) -> PHASE_COLUMNS' values (NaN where not detected
    or not measured)."""
    out = dict.fromkeys(PHASE_COLUMNS, np.nan)
    jac = _logged(frame, M.JAC_OP_NORM)
    if jac is not None:
        period = active_regularisation(*jac)
        if period is not None:
            out["active_reg_start_step"], out["active_reg_end_step"] = period.start, period.end
    loss, sharp = loss_series(frame), _logged(frame, M.SHARPNESS)
    if loss is not None and sharp is not None:
        events = catapults(*loss, *sharp)
        out["catapults"] = len(events)
        out["first_catapult_step"] = events[0].step if events else np.nan
    return out


def phase_columns(wide) -> pd.DataFrame:
    """Per run index of a wide polars history: PHASE_COLUMNS (`run_phases` of each run)."""
    needed = [c for c in ("run", "step", M.JAC_OP_NORM, M.BATCH_LOSS, M.TRAIN_LOSS, M.SHARPNESS) if c in wide.columns]
    if not any(c in needed for c in (M.JAC_OP_NORM, M.SHARPNESS)):
        return pd.DataFrame(columns=list(PHASE_COLUMNS), dtype=float)
    rows = {}
    for part in wide.select(needed).sort(["run", "step"]).partition_by("run", maintain_order=True):
        arrays = {c: part[c].to_numpy() for c in needed}
        rows[int(arrays["run"][0])] = run_phases(arrays)
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(PHASE_COLUMNS))
