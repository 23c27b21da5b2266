"""The runs table → the tables of a results section: aggregates over seeds, paper 000 Table 1, paper 002's
correlations. Plain pandas; no torch, no files (the report writes them).

Every aggregate is mean ± sample std (ddof 1) with the count n, so a missing seed is visible; a statistic over
runs is computed per run first (the generalisation gaps, SCIENCE.md) and then aggregated.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from ijr_cli.core import metric_names as M
from ijr_cli.core.humanize import value as _fmt_key
from ijr_cli.report.collect import present

SEED = "seed"
# final metrics shown in the aggregate tables, in this order, when the runs have them
KEY_METRICS = (
    M.TEST_ACC,
    "best_test_acc",
    M.TRAIN_ACC,
    M.GEN_GAP_ACC,
    M.GEN_GAP_LOSS,
    M.SHARPNESS,
    M.THRESHOLD,
    M.GN_SHARPNESS,
    M.JAC_OP_NORM,
    M.JAC_FRO_SQ,
    M.IJR_PROXY,
    M.IMPURITY_MEAN,
    M.INPUT_JAC_MAX,
    "eos_onset_step",
    "active_reg_start_step",
    "active_reg_end_step",
    "catapults",
    "wall_time_s",
)
# the measures paper 002 correlates with the generalisation gap (final values)
MEASURES = (
    M.SHARPNESS,
    M.GN_SHARPNESS,
    M.JAC_OP_NORM,
    M.JAC_FRO_SQ,
    M.JAC_U_NORM_SQ,
    M.IJR_PROXY,
    M.INPUT_JAC_MAX,
    M.INPUT_JAC_MEAN,
    M.TEST_INPUT_JAC_MAX,
    M.TEST_INPUT_JAC_MEAN,
    M.IMPURITY_MEAN,
    M.WEIGHT_NORM,
    M.GRAD_NORM,
)
# the gaps correlated: paper 002 §7 uses |test loss − train loss| (plain cross-entropy here); also train − test acc
GAPS = {"loss gap": M.GEN_GAP_LOSS, "acc gap": M.GEN_GAP_ACC}
ABS_GAPS = ("loss gap",)
EJR_KEYS = (
    "regularizer",
    "regularizer.jacobian",
    "regularizer.lambda_reg",
    "regularizer.rho_reg",
    "regularizer.mu_reg",
)
PERCENT = {M.TEST_ACC, M.TRAIN_ACC, "best_test_acc", M.GEN_GAP_ACC}  # fractions shown in %


def group_keys(runs: pd.DataFrame, swept: Sequence[str], group_by: Optional[Sequence[str]] = None) -> List[str]:
    """`group_by` when given, else the swept hyperparameters without the seed."""
    keys = list(group_by) if group_by else [k for k in swept if k != SEED]
    return [k for k in keys if k in runs]


def aggregate(runs: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per group: the keys, then `<metric>_mean`, `<metric>_std`, `<metric>_n` for each metric.
    Groups keep the order of first appearance; a missing key value is a group of its own."""
    metrics = list(metrics)
    numeric = runs[list(keys) + metrics].copy()
    for m in metrics:
        numeric[m] = pd.to_numeric(numeric[m], errors="coerce")
    if keys:
        grouped = numeric.groupby(list(keys), dropna=False, sort=False)[metrics]
        stats = grouped.agg(["mean", "std", "count"])
    else:
        stats = numeric[metrics].agg(["mean", "std", "count"]).T.stack().to_frame().T
    stats.columns = [f"{m}_{'n' if s == 'count' else s}" for m, s in stats.columns]
    out = stats.reset_index() if keys else stats.reset_index(drop=True)
    for m in metrics:
        out[f"{m}_n"] = out[f"{m}_n"].astype(int)
    if keys:
        out = out.sort_values(list(keys), kind="stable", key=_sort_key).reset_index(drop=True)
    return out


def _sort_key(column: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if numbers.notna().all() else column.astype(str)


def fmt_number(value, percent: bool = False, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if percent:
        return f"{100 * value:.2f}"
    if isinstance(value, (int, np.integer)) or float(value).is_integer() and abs(value) >= 1:
        return f"{value:.0f}" if abs(value) < 1e7 else f"{value:.3g}"
    return f"{value:.{digits}g}"


def fmt_mean_std(mean, std, n, percent: bool = False, show_n: bool = True) -> str:
    """'mean ± std (n=N)'; without the count when `show_n` is False (the row states it), except n = 0."""
    if n == 0 or mean is None or not math.isfinite(mean):
        return "– (n=0)"
    spread = "" if n < 2 or not math.isfinite(std) else f" ± {fmt_number(std, percent)}"
    return f"{fmt_number(mean, percent)}{spread}" + (f" (n={n})" if show_n else "")


def display_aggregate(agg: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """The aggregate as text cells: keys as they are (integers as integers), `n` (runs in the group: the largest
    count of its metrics), each metric as 'mean ± std', with '(n=k)' only where a metric has fewer values than
    the row's n (a run that did not log it); % for accuracies."""
    out = pd.DataFrame({k: agg[k].map(_fmt_key) for k in keys})
    counts = agg[[f"{m}_n" for m in metrics]].max(axis=1) if metrics else pd.Series(0, index=agg.index)
    out["n"] = counts.astype(int).to_numpy()
    for m in metrics:
        label = f"{m} (%)" if m in PERCENT else m
        out[label] = [
            fmt_mean_std(a, b, c, m in PERCENT, show_n=c != n)
            for a, b, c, n in zip(agg[f"{m}_mean"], agg[f"{m}_std"], agg[f"{m}_n"], counts)
        ]
    return out


# ------------------------------------------------------------------------------------------ paper 000 Table 1
def is_ejr(runs: pd.DataFrame) -> pd.Series:
    return runs.get("regularizer.jacobian", pd.Series("none", index=runs.index)).fillna("none") != "none"


def ejr_label(row: pd.Series) -> str:
    """The regularisation coefficient column of paper 000 Table 1 (λ_reg for ejr, ρ_reg [, μ_reg] otherwise)."""
    kind = row.get("regularizer.jacobian")
    if kind == "ejr":
        return f"ejr λ_reg = {fmt_number(row.get('regularizer.lambda_reg'))}"
    label = f"{kind} ρ_reg = {fmt_number(row.get('regularizer.rho_reg'))}"
    if kind == "ejr_v2":
        label += f", μ_reg = {fmt_number(row.get('regularizer.mu_reg'))}"
    return label


def table1(runs: pd.DataFrame, swept: Sequence[str], metric: str = M.TEST_ACC) -> Optional[pd.DataFrame]:
    """Paper 000 Table 1 layout: per setting (dataset, network, batch size, lr and any other swept key but the
    seed and the EJR keys), the baseline's accuracy (mean ± std, n), each EJR variant's, ΔAcc in points
    (100·(acc_ejr − acc_base)) and ERR in % (100·(err_base − err_ejr)/err_base, err = 1 − acc), from the means.
    None when the runs hold no baseline/EJR pair."""
    runs = runs[pd.to_numeric(runs.get(metric), errors="coerce").notna()] if metric in runs else runs.iloc[:0]
    if runs.empty or not is_ejr(runs).any() or is_ejr(runs).all():
        return None
    setting = ["dataset.name", "model.name", "optimizer.batch_size", "optimizer.lr"]
    setting += [k for k in swept if k not in setting and k != SEED and k not in EJR_KEYS]
    setting = [k for k in setting if k in runs]
    runs = runs.assign(
        _variant=[ejr_label(r) if e else "baseline" for (_, r), e in zip(runs.iterrows(), is_ejr(runs))],
        **{k: runs[k].map(_fmt_key) for k in setting},
    )
    rows = []
    for values, group in runs.groupby(setting, sort=False, dropna=False):
        base = pd.to_numeric(group.loc[group["_variant"] == "baseline", metric])
        for variant, ejr in group[group["_variant"] != "baseline"].groupby("_variant", sort=True):
            acc = pd.to_numeric(ejr[metric])
            row = dict(zip(setting, values if isinstance(values, tuple) else (values,)))
            row["regularisation"] = variant
            row["baseline (%)"] = fmt_mean_std(base.mean(), base.std(), len(base), True) if len(base) else "– (n=0)"
            row["+EJR (%)"] = fmt_mean_std(acc.mean(), acc.std(), len(acc), True)
            if len(base):
                d, e = delta_acc_err(base.mean(), acc.mean())
                row["ΔAcc (%p)"], row["ERR (%)"] = f"{d:+.2f}", f"{e:+.2f}" if math.isfinite(e) else "–"
            else:
                row["ΔAcc (%p)"] = row["ERR (%)"] = "–"
            rows.append(row)
    table = pd.DataFrame(rows).sort_values(setting + ["regularisation"], key=_sort_key, kind="stable")
    table = table.reset_index(drop=True).rename(
        columns={
            "dataset.name": "dataset",
            "model.name": "network",
            "optimizer.batch_size": "batch size",
            "optimizer.lr": "lr",
        }
    )
    return table


def delta_acc_err(acc_base: float, acc_ejr: float):
    """ΔAcc in points and ERR in % (paper 000 Table 1): ERR = (err_base − err_ejr)/err_base, err = 1 − acc."""
    err_base, err_ejr = 1 - acc_base, 1 - acc_ejr
    return 100 * (acc_ejr - acc_base), (100 * (err_base - err_ejr) / err_base if err_base > 0 else math.nan)


# ------------------------------------------------------------------------------------------ paper 002 correlations
CAUTION_N = 10  # correlations over fewer runs carry a bootstrap interval and a caution mark
BOOTSTRAP = 2000  # resamples of the bootstrap interval (seeded: the report is reproducible)
# Fieller, Hartley & Pearson (1957): var(atanh r) ≈ 0.437/(n − 4) for Kendall's τ, 1.06/(n − 3) for Spearman's ρ
FIELLER = {"τ": (0.437, 4), "ρ": (1.06, 3)}


def kendall_tau_b_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ_b of each row pair of x, y (B, n) (ties handled as scipy.stats.kendalltau does); NaN where a
    row is constant. Vectorised over rows for the bootstrap (n is small there)."""
    dx = np.sign(x[:, :, None] - x[:, None, :])
    dy = np.sign(y[:, :, None] - y[:, None, :])
    pairs = x.shape[1] * (x.shape[1] - 1) / 2
    s = (dx * dy).sum(axis=(1, 2)) / 2
    untied_x = pairs - ((dx == 0).sum(axis=(1, 2)) - x.shape[1]) / 2
    untied_y = pairs - ((dy == 0).sum(axis=(1, 2)) - x.shape[1]) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((untied_x > 0) & (untied_y > 0), s / np.sqrt(untied_x * untied_y), np.nan)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each row pair (average ranks for ties, as scipy.stats.spearmanr); NaN where constant."""
    from scipy import stats

    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / den, np.nan)


def correlation_interval(x, y, kind: str, level: float = 0.95, seed: int = 0) -> tuple:
    """A `level` interval for τ (kind 'τ') or ρ ('ρ') of x, y: below CAUTION_N runs the percentile bootstrap
    (BOOTSTRAP paired resamples, seeded), else the Fisher-z interval with Fieller et al.'s variance."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < CAUTION_N:
        idx = np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP, n))
        values = (kendall_tau_b_rows if kind == "τ" else spearman_rows)(x[idx], y[idx])
        values = values[np.isfinite(values)]
        if not len(values):
            return (math.nan, math.nan)
        low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
        return (float(low), float(high))
    r = stats.kendalltau(x, y).statistic if kind == "τ" else stats.spearmanr(x, y).statistic
    c, k = FIELLER[kind]
    z, half = math.atanh(min(max(r, -0.999999), 0.999999)), stats.norm.ppf(0.5 + level / 2) * math.sqrt(c / (n - k))
    return (math.tanh(z - half), math.tanh(z + half))


def _interval_text(interval: tuple) -> str:
    return "–" if not all(map(math.isfinite, interval)) else f"[{interval[0]:+.2f}, {interval[1]:+.2f}]"


def correlations(runs: pd.DataFrame, family_column: str = "family", min_runs: int = 3) -> Optional[pd.DataFrame]:
    """Kendall τ and Spearman ρ across runs between each generalisation gap and each measure's final value,
    per regulariser family and pooled ('all'); n runs in each, a 95 % interval for each (`correlation_interval`),
    and a caution mark where a family has fewer than CAUTION_N runs. Families with fewer than `min_runs` runs
    holding both values get '–'. None when no measure and gap are both present."""
    from scipy import stats

    measures = present(runs, MEASURES)
    gaps = {label: col for label, col in GAPS.items() if col in present(runs, [col])}
    if not measures or not gaps:
        return None
    families = [("all", runs)]
    if family_column in runs and runs[family_column].nunique(dropna=True) > 1:
        families += [(str(f), g) for f, g in runs.groupby(family_column, sort=True)]
    rows = []
    for fam, group in families:
        for measure in measures:
            row = {"family": fam, "measure": measure}
            for label, col in gaps.items():
                x = pd.to_numeric(group[measure], errors="coerce")
                y = pd.to_numeric(group[col], errors="coerce")
                if label in ABS_GAPS:
                    y = y.abs()
                ok = x.notna() & y.notna()
                n = int(ok.sum())
                row[f"n ({label})"] = n
                if n >= min_runs and x[ok].nunique() > 1 and y[ok].nunique() > 1:
                    row[f"τ ({label})"] = stats.kendalltau(x[ok], y[ok]).statistic
                    row[f"τ 95% CI ({label})"] = _interval_text(correlation_interval(x[ok], y[ok], "τ"))
                    row[f"ρ ({label})"] = stats.spearmanr(x[ok], y[ok]).statistic
                    row[f"ρ 95% CI ({label})"] = _interval_text(correlation_interval(x[ok], y[ok], "ρ"))
                else:
                    row[f"τ ({label})"] = row[f"ρ ({label})"] = math.nan
                    row[f"τ 95% CI ({label})"] = row[f"ρ 95% CI ({label})"] = "–"
            few = [label for label in gaps if min_runs <= row[f"n ({label})"] < CAUTION_N]
            row["caution"] = f"⚠ n < {CAUTION_N}: few runs, wide interval" if few else ""
            rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ output formats
def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table; numbers with 3 decimals (text cells such as '+3.83' are kept as written)."""
    shown = table.copy()
    for c in shown:
        if pd.api.types.is_float_dtype(shown[c]):
            shown[c] = shown[c].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}")
    return shown.astype(str).to_markdown(index=False, disable_numparse=True)


def to_latex(table: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs tabular (pandas' Styler), text cells escaped."""
    styler = table.style.hide(axis="index").format(precision=3, na_rep="–", escape="latex")
    styler = styler.format_index(escape="latex", axis=1)
    return styler.to_latex(
        hrules=True, caption=caption or None, label=label or None, position_float="centering" if caption else None
    )


# ------------------------------------------------------------------------------------------ comparing sweeps
def common_keys(runs: pd.DataFrame, swept: dict, sweeps: Sequence[str]) -> List[str]:
    """The swept keys (seed included) that every one of `sweeps` swept, in the first sweep's order."""
    keys = [k for k in swept.get(sweeps[0], []) if all(k in swept.get(s, []) for s in sweeps[1:])]
    return [k for k in keys if k in runs]


def comparison(runs: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """The sweeps side by side: mean ± std per (sweep, common key values but the seed) for each metric."""
    keys = ["sweep"] + [k for k in keys if k != SEED]
    return display_aggregate(aggregate(runs, keys, metrics), keys, metrics)


def paired_differences(runs: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str], base: str):
    """Runs matched across sweeps on every common key (the seed included): per other sweep and metric, the number
    of matched pairs, the largest |other − base| and the mean of other − base (e.g. a packed sweep against its
    unpacked twin: zero up to rounding). None when no run matches."""
    if not keys:
        return None
    numeric = runs[["sweep", *keys, *metrics]].copy()
    for m in metrics:
        numeric[m] = pd.to_numeric(numeric[m], errors="coerce")
    reference = numeric[numeric["sweep"] == base].drop(columns="sweep")
    rows = []
    for sweep in [s for s in dict.fromkeys(numeric["sweep"]) if s != base]:
        other = numeric[numeric["sweep"] == sweep].drop(columns="sweep")
        pairs = reference.merge(other, on=list(keys), suffixes=("_base", "_other"))
        if pairs.empty:
            continue
        for m in metrics:
            delta = (pairs[f"{m}_other"] - pairs[f"{m}_base"]).dropna()
            if not len(delta):
                continue
            rows.append(
                {
                    "sweep": sweep,
                    "against": base,
                    "metric": m,
                    "pairs": len(delta),
                    "max abs Δ": float(delta.abs().max()),
                    "mean Δ": float(delta.mean()),
                }
            )
    return pd.DataFrame(rows) if rows else None
