"""Figures of a report (seaborn / matplotlib, Agg backend; each saved as PNG and PDF). No torch.

- trajectories: sharpness with its stability threshold, mean impurity with its 25–75 % band, ‖⟨J⟩‖ and
  `ijr_proxy`, losses and accuracies, against the step, one colour per value of a swept hyperparameter;
- finals: final metrics against a swept hyperparameter, hue/style by another (paper 002 Figs. 2–5);
- heatmap: a final metric over a two-dimensional grid;
- paper 000 Fig. 1: the secular function 1 − Σ p_i²/(p_i − λ) of a probability vector, its poles p_i and its
  roots (the eigenvalues of M = diag(p) − ppᵀ, Theorem 1);
- paper 000 Fig. 2 (left): λ(1) against p(1) for random probability vectors, with Theorem 1's bounds
  ½·Gini(p(1)) ≤ λ(1) ≤ Gini(p(1)), Gini(q) = 2q(1 − q), and λ(1) ≤ p(1).

Lines are means over the runs sharing a value (seeds, and any other swept key), bands ± one standard deviation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from ijr_cli.core import metric_names as M
from ijr_cli.report.collect import present

MAX_POINTS = 400  # steps kept per run in trajectory plots (evenly thinned; the tables use every step)
FINAL_PANELS = (M.INPUT_JAC_MAX, M.JAC_OP_NORM, M.SHARPNESS, M.GEN_GAP_LOSS, M.GEN_GAP_ACC, M.TEST_ACC)


@dataclass
class Figure:
    name: str  # file stem
    title: str
    caption: str
    png: Path
    pdf: Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


def _save(fig, out_dir: Path, name: str, title: str, caption: str) -> Figure:
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    fig.savefig(png, dpi=130, bbox_inches="tight")
    fig.savefig(pdf, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return Figure(name=name, title=title, caption=caption, png=png, pdf=pdf)


def _log_scale(values: pd.Series) -> bool:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return len(v) > 1 and (v > 0).all() and v.max() / v.min() >= 8


# ------------------------------------------------------------------------------------------ trajectories
def thin(history: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Keep about `max_points` evenly spaced logged steps per run (the first of each of `max_points` equal runs of
    rows, and the last row)."""
    grouped = history.groupby("run", sort=False)
    pos = grouped.cumcount().to_numpy()
    size = grouped["step"].transform("size").to_numpy()
    bucket = pos * (max_points - 1) // np.maximum(size - 1, 1)
    previous = (pos - 1) * (max_points - 1) // np.maximum(size - 1, 1)
    keep = (size <= max_points) | (pos == size - 1) | (pos == 0) | (bucket != previous)
    return history[keep]


def trajectory_panels(columns: Sequence[str]) -> List[tuple]:
    """(title, main metric, extra) for the panels whose metric was logged."""
    panels = [
        ("sharpness vs 2/η-type threshold (dashed)", M.SHARPNESS, M.THRESHOLD),
        ("mean impurity ⟨λ(1)⟩ (band: 25–75 %)", M.IMPURITY_MEAN, (M.IMPURITY_Q25, M.IMPURITY_Q75)),
        ("‖⟨J⟩‖₂", M.JAC_OP_NORM, None),
        ("ijr_proxy = ⟨λ(1)⟩·‖⟨J⟩û‖²", M.IJR_PROXY, None),
        ("input–output Jacobian (max)", M.INPUT_JAC_MAX, None),
        ("loss (solid train, dashed test; plain CE)", M.TRAIN_CE, M.TEST_CE),
        ("accuracy (solid train, dashed test)", M.TRAIN_ACC, M.TEST_ACC),
    ]
    return [p for p in panels if p[1] in columns]


def _extras(extra) -> tuple:
    return (extra,) if isinstance(extra, str) else tuple(extra or ())


def trajectory_stats(
    history: pd.DataFrame, values: pd.Series, columns: Sequence[str], max_points: int = MAX_POINTS
) -> dict:
    """Per column: the mean and sd (pandas', ddof 1) over the runs sharing a value, per (value, step), from that
    column's own logged rows thinned to `max_points` per run (a metric measured every k-th logged row keeps its
    points). `values`: run index -> the value's label. One vectorised groupby per column: seaborn's own
    aggregation (errorbar="sd") groups in Python and took 39 s per figure at 1,000 runs x 400 points."""
    dense = thin(history[["run", "step"]], max_points)
    out = {}
    for c in columns:
        column = history[c]
        rows = (
            history.loc[dense.index, ["run", "step", c]]
            if column.notna().all()
            else thin(history.loc[column.notna(), ["run", "step", c]], max_points)
        )
        if rows.empty:
            continue
        label = values.reindex(rows["run"]).to_numpy()
        out[c] = rows[c].groupby([label, rows["step"].to_numpy()]).agg(["mean", "std"])
    return out


def _of(stats: pd.DataFrame, value: str) -> pd.DataFrame:
    """The rows of one value (index: step); empty when none."""
    return (
        stats.xs(value, level=0) if value in stats.index.get_level_values(0) else pd.DataFrame({"mean": [], "std": []})
    )


def trajectories(
    history: pd.DataFrame, runs: pd.DataFrame, hue: str, out_dir: Path, name: str, title: str
) -> Optional[Figure]:
    """`history`: wide per-run rows (run index, step, metrics); `runs` indexed by run index with column `hue`."""
    plt, sns = _plt()
    values = runs[hue].map(str)
    panels = trajectory_panels(history.columns)
    columns = [c for c in dict.fromkeys(x for p in panels for x in (p[1], *_extras(p[2]))) if c in history]
    stats = trajectory_stats(history, values, columns)
    panels = [p for p in panels if p[1] in stats]
    if not panels:
        return None
    order = sorted(values.loc[values.index.intersection(history["run"].unique())].unique(), key=_natural)
    palette = dict(zip(order, sns.color_palette("viridis", len(order))))
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.1 * nrows), squeeze=False)
    for ax, (panel_title, metric, extra) in zip(axes.flat, panels):
        for value in order:
            color = palette[value]
            line = _of(stats[metric], value)
            ax.plot(line.index, line["mean"], color=color, linewidth=1.2, label=value)
            ax.fill_between(
                line.index, line["mean"] - line["std"], line["mean"] + line["std"], color=color, alpha=0.2, linewidth=0
            )
            if isinstance(extra, str) and extra in stats:
                dashed = _of(stats[extra], value)
                ax.plot(dashed.index, dashed["mean"], color=color, linestyle="--", linewidth=1.0)
            elif isinstance(extra, tuple) and all(e in stats for e in extra):
                low, high = _of(stats[extra[0]], value)["mean"], _of(stats[extra[1]], value)["mean"]
                low, high = low.align(high, join="inner")
                ax.fill_between(low.index, low, high, color=color, alpha=0.2, linewidth=0)
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        if metric in (M.SHARPNESS, M.JAC_OP_NORM, M.IJR_PROXY) and (history[metric].dropna() > 0).all():
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(_plain_formatter())
            ax.yaxis.set_minor_formatter(_plain_formatter(minor=True))
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            title=hue,
            loc="upper center",
            ncols=min(8, len(order)),
            frameon=False,
            bbox_to_anchor=(0.5, 1.0),
        )
    fig.suptitle(title, y=1.0 + 0.12 / nrows, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.16 / nrows))
    return _save(
        fig,
        out_dir,
        name,
        title,
        f"Against the step, one colour per value of {hue} (mean over the runs sharing it, band ± 1 sd). "
        "Sharpness: the dashed line is the stability threshold of the run's learning rate.",
    )


def _plain_formatter(minor: bool = False):
    import matplotlib.ticker as mticker

    if minor:
        return mticker.NullFormatter()
    return mticker.FuncFormatter(lambda v, _: f"{v:g}")


def _natural(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


# ------------------------------------------------------------------------------------------ final metrics
def finals(runs: pd.DataFrame, x: str, hue: Optional[str], out_dir: Path, name: str, title: str) -> Optional[Figure]:
    """Final metrics against swept hyperparameter `x`, hue and line style by `hue` (paper 002 Figs. 2–5)."""
    plt, sns = _plt()
    metrics = present(runs, FINAL_PANELS)
    if not metrics or x not in runs:
        return None
    data = runs.copy()
    numeric_x = pd.to_numeric(data[x], errors="coerce").notna().all()
    if not numeric_x:
        data[x] = data[x].map(str)
    if hue:
        data[hue] = data[hue].map(str)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        data[metric] = pd.to_numeric(data[metric], errors="coerce")
        sns.lineplot(
            data=data,
            x=x,
            y=metric,
            hue=hue,
            style=hue,
            markers=True,
            errorbar="sd",
            ax=ax,
            legend=ax is axes.flat[-1],
            palette="viridis" if hue else None,
            sort=numeric_x,
            color=None if hue else "C0",
        )
        if numeric_x and _log_scale(data[x]):
            ax.set_xscale("log")
        ax.set_title(metric, fontsize=9)
    if hue and axes.flat[-1].get_legend() is not None:
        sns.move_legend(axes.flat[-1], "upper left", bbox_to_anchor=(1.02, 1), title=hue, frameon=False)
    fig.suptitle(title, y=1.04, fontsize=11)
    fig.tight_layout()
    return _save(
        fig,
        out_dir,
        name,
        title,
        f"Final values against {x}" + (f", line style by {hue}" if hue else "") + "; mean over seeds with ± 1 sd bars.",
    )


def heatmap(
    runs: pd.DataFrame, rows: str, cols: str, metric: str, out_dir: Path, name: str, title: str
) -> Optional[Figure]:
    """Mean final `metric` over the (rows × cols) grid, the number of runs per cell in brackets."""
    plt, sns = _plt()
    if metric not in runs:
        return None
    data = runs[[rows, cols]].copy()
    data[metric] = pd.to_numeric(runs[metric], errors="coerce")
    mean = data.pivot_table(index=rows, columns=cols, values=metric, aggfunc="mean")
    count = data.pivot_table(index=rows, columns=cols, values=metric, aggfunc="count")
    if mean.empty or mean.isna().all().all():
        return None
    scale = 100 if metric in (M.TEST_ACC, M.TRAIN_ACC, M.GEN_GAP_ACC, "best_test_acc") else 1
    labels = (mean * scale).map(lambda v: "–" if pd.isna(v) else f"{v:.3g}") + count.reindex_like(mean).map(
        lambda n: f"\n({0 if pd.isna(n) else int(n)})"
    )
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * mean.shape[1], 0.8 + 0.6 * mean.shape[0]))
    sns.heatmap(
        mean * scale,
        annot=labels,
        fmt="",
        cmap="viridis",
        ax=ax,
        annot_kws={"fontsize": 7},
        cbar_kws={"label": metric + (" (%)" if scale == 100 else "")},
    )
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(
        fig, out_dir, name, title, f"Mean final {metric} per ({rows}, {cols}) cell; runs per cell in brackets."
    )


# ------------------------------------------------------------------------------------------ paper 000 Figs. 1–2
def impurity_eigenvalues(p: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of M = diag(p) − ppᵀ for each probability vector in the rows of `p` (float64)."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    m = np.einsum("ni,ij->nij", p, np.eye(p.shape[1])) - p[:, :, None] * p[:, None, :]
    return np.linalg.eigvalsh(m)


def secular(lam: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The secular function f(λ) = 1 − Σ_i p_i²/(p_i − λ), whose roots are M's nonzero eigenvalues (Theorem 1)."""
    return 1 - np.sum(p[None, :] ** 2 / (p[None, :] - lam[:, None]), axis=1)


def paper000_fig1(out_dir: Path, p: Sequence[float] = (0.45, 0.3, 0.15, 0.07, 0.03)) -> Figure:
    plt, sns = _plt()
    p = np.sort(np.asarray(p, dtype=np.float64))[::-1]
    roots = impurity_eigenvalues(p)[0]
    lam = np.linspace(-0.05, p[0] + 0.1, 6000)
    f = secular(lam, p)
    near_pole = np.min(np.abs(lam[:, None] - p[None, :]), axis=1) < 2e-3
    f[near_pole] = np.nan
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(lam, f, color="C0", linewidth=1.3, label="f(λ) = 1 − Σ p_i²/(p_i − λ)")
    for i, pi in enumerate(p):
        ax.axvline(pi, color="0.5", linestyle="--", linewidth=0.8, label="poles p_i" if i == 0 else None)
    ax.axhline(0, color="k", linewidth=0.6)
    ax.plot(roots, np.zeros_like(roots), "o", color="C3", label="roots: eigenvalues of diag(p) − ppᵀ")
    ax.set_ylim(-6, 6)
    ax.set_xlabel("λ")
    ax.set_title(f"Secular function for p = {tuple(round(float(x), 3) for x in p)}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(
        fig,
        out_dir,
        "paper000_fig1_secular",
        "Paper 000 Fig. 1: the secular function",
        "The eigenvalues of M = diag(p) − ppᵀ interlace the sorted p_i (poles): one root in each interval "
        f"(p(i+1), p(i)) and λ(C) = 0. Here λ(1) = {roots[-1]:.4f} ∈ [p(2), p(1)] = [{p[1]}, {p[0]}].",
    )


def paper000_fig2(out_dir: Path, num_classes: int = 10, n: int = 4000, seed: int = 0) -> Figure:
    plt, sns = _plt()
    rng = np.random.default_rng(seed)
    concentrations = rng.choice([0.05, 0.2, 1.0], size=n)
    p = np.stack([rng.dirichlet(np.full(num_classes, a)) for a in concentrations])
    lam1 = impurity_eigenvalues(p)[:, -1]
    p1 = p.max(axis=1)
    q = np.linspace(1 / num_classes, 1, 300)
    gini = 2 * q * (1 - q)
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    ax.scatter(p1, lam1, s=3, alpha=0.35, color="C0", label=f"λ(1) of random p (C = {num_classes})")
    ax.plot(q, gini, color="C3", label="Gini(p(1)) = 2p(1)(1 − p(1))")
    ax.plot(q, gini / 2, color="C2", label="½·Gini(p(1))")
    ax.plot(q, q, color="0.4", linestyle=":", label="p(1)")
    ax.set_xlabel("p(1), the top probability")
    ax.set_ylabel("λ(1), the impurity")
    ax.set_ylim(0, 0.55)
    ax.legend(fontsize=7)
    ax.set_title("Impurity against the top probability (Theorem 1 bounds)", fontsize=10)
    fig.tight_layout()
    return _save(
        fig,
        out_dir,
        "paper000_fig2_impurity_bounds",
        "Paper 000 Fig. 2 (left): impurity and its bounds",
        "Every point lies between ½·Gini(p(1)) and min(Gini(p(1)), p(1)) (Theorem 1); λ(1) → 0 as p(1) → 1.",
    )
