"""Paper 002's figures (MacDonald et al., progressive sharpening, flat minima and generalisation) and the edge of
stochastic stability (batch sharpness against 2/η), each drawn from a sweep's own runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ijr_cli.core import metric_names as M
from ijr_cli.report import figures as F
from ijr_cli.report.registry import PaperFigure, SweepData, caption_runs, swept_over

LABEL_SMOOTHING, WEIGHT_DECAY = "regularizer.label_smoothing", "optimizer.weight_decay"


def fig1_label_smoothing(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    fig = F.trajectories(
        data.history[["run", "step", *[c for c in (M.SHARPNESS, M.THRESHOLD) if c in data.history]]],
        data.runs,
        LABEL_SMOOTHING,
        out,
        name,
        "Paper 002 Fig. 1: sharpness with and without label smoothing",
    )
    if fig is not None:
        fig.caption = (
            "Sharpness (with its threshold dashed) and sharpness / threshold against the step, one colour per label "
            "smoothing value (mean over the runs sharing it, band ± 1 sd): label smoothing reduces progressive "
            "sharpening. " + caption_runs(data, list(data.runs.index))
        )
    return fig


def fig2_weight_decay(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    keep = [c for c in (M.SHARPNESS, M.THRESHOLD, M.GEN_GAP_LOSS, M.GEN_GAP_ACC, M.TEST_ACC) if c in data.runs]
    others = [k for k in data.swept if k != WEIGHT_DECAY]
    runs = data.runs[[WEIGHT_DECAY, *others, *keep]]
    fig = F.finals(
        runs,
        WEIGHT_DECAY,
        others[0] if others else None,
        out,
        name,
        "Paper 002 Fig. 2: weight decay, sharpness and the generalisation gap",
    )
    if fig is not None:
        fig.caption += " " + caption_runs(data, list(data.runs.index))
    return fig


def fig5_gap_vs_measures(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    from scipy import stats

    plt, sns = F._plt()
    runs = data.runs.copy()
    gap = pd.to_numeric(runs[M.GEN_GAP_LOSS], errors="coerce").abs()
    measures = [m for m in (M.SHARPNESS, M.INPUT_JAC_MAX) if m in runs and runs[m].notna().any()]
    families = sorted(runs["family"].fillna("none").unique()) if "family" in runs else ["all"]
    palette = dict(zip(families, sns.color_palette("tab10", len(families))))
    fig, axes = plt.subplots(1, len(measures), figsize=(4.8 * len(measures), 3.8), squeeze=False)
    for ax, measure in zip(axes.flat, measures):
        x = pd.to_numeric(runs[measure], errors="coerce")
        for fam in families:
            mine = (runs["family"].fillna("none") == fam) if "family" in runs else pd.Series(True, index=runs.index)
            ok = mine & x.notna() & gap.notna()
            tau = stats.kendalltau(x[ok], gap[ok]).statistic if ok.sum() >= 3 and x[ok].nunique() > 1 else np.nan
            text = "–" if np.isnan(tau) else f"{tau:+.2f}"
            ax.scatter(x[ok], gap[ok], s=14, color=palette[fam], label=f"{fam} (τ {text}, n={int(ok.sum())})")
        ok = x.notna() & gap.notna()
        pooled = stats.kendalltau(x[ok], gap[ok]).statistic if ok.sum() >= 3 and x[ok].nunique() > 1 else np.nan
        ax.set_title(f"gap vs {measure} (pooled τ {pooled:+.2f})" if not np.isnan(pooled) else measure, fontsize=9)
        ax.set_xlabel(f"final {measure}")
        ax.set_ylabel("|test CE − train CE|")
        F.readable_scale(ax, x[ok], axis="x")
        ax.legend(fontsize=6)
    fig.suptitle("Paper 002 Fig. 5: the generalisation gap against sharpness and the input Jacobian", fontsize=10)
    fig.tight_layout()
    return F._save(
        fig,
        out,
        name,
        "Paper 002 Fig. 5: gap against sharpness and against the input-Jacobian norm",
        "One point per run: the final loss gap |test CE − train CE| against the final sharpness and the final "
        "input–output Jacobian norm (max over the probe set), one colour per regulariser family, Kendall τ per "
        "family and pooled (the correlations table has intervals). " + caption_runs(data, list(runs.index)),
    )


def _sgd(data: SweepData) -> Optional[str]:
    bs = pd.to_numeric(data.runs.get("optimizer.batch_size"), errors="coerce")
    n = pd.to_numeric(data.runs.get("dataset.n_train"), errors="coerce")
    if bs is not None and n is not None and ((bs < n) | n.isna()).any():
        return None
    return "needs SGD runs (a batch smaller than the training set)"


def batch_sharpness_vs_threshold(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    plt, sns = F._plt()
    runs = data.representatives(data.runs_with((M.BATCH_SHARPNESS,)), limit=4)
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.3), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        frame = data.history_of(run)
        b = frame[["step", M.BATCH_SHARPNESS]].dropna()
        ax.plot(b["step"], b[M.BATCH_SHARPNESS], color="C1", linewidth=1.1, label="batch sharpness")
        if M.BATCH_SHARPNESS_SE in frame:
            se = frame[["step", M.BATCH_SHARPNESS, M.BATCH_SHARPNESS_SE]].dropna()
            low, high = (
                se[M.BATCH_SHARPNESS] - se[M.BATCH_SHARPNESS_SE],
                se[M.BATCH_SHARPNESS] + se[M.BATCH_SHARPNESS_SE],
            )
            ax.fill_between(se["step"], low, high, color="C1", alpha=0.25, linewidth=0)
        if M.SHARPNESS in frame:
            s = frame[["step", M.SHARPNESS]].dropna()
            ax.plot(s["step"], s[M.SHARPNESS], color="C0", linewidth=0.9, label="sharpness (full batch)")
        lr = data.lr(run)
        if lr:
            ax.axhline(2 / lr, color="k", linestyle="--", linewidth=0.9, label="2/η")
        F.readable_scale(ax, np.concatenate([b[M.BATCH_SHARPNESS].to_numpy(), [2 / lr] if lr else []]))
        ax.set_title(data.title(run), fontsize=8)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    fig.suptitle("The edge of stochastic stability: batch sharpness against 2/η", fontsize=10)
    fig.tight_layout()
    return F._save(
        fig,
        out,
        name,
        "Batch sharpness against 2/η (SGD runs)",
        "The minibatch curvature along the minibatch gradient (batch_sharpness, mean over minibatches ± its "
        "standard error; Andreyev & Beneventano 2024) and the full-batch sharpness against 2/η: SGD hovers with "
        "batch sharpness, not sharpness, at 2/η. " + caption_runs(data, runs),
    )


FIGURES = (
    PaperFigure(
        "paper002_fig1_label_smoothing",
        "002",
        "Fig. 1",
        "sharpness with and without label smoothing",
        metrics=(M.SHARPNESS,),
        condition=swept_over(LABEL_SMOOTHING),
        draw=fig1_label_smoothing,
    ),
    PaperFigure(
        "paper002_fig2_weight_decay",
        "002",
        "Fig. 2",
        "weight decay: sharpness and the generalisation gap",
        metrics=(M.SHARPNESS,),
        any_metrics=(M.GEN_GAP_LOSS, M.GEN_GAP_ACC),
        condition=swept_over(WEIGHT_DECAY),
        draw=fig2_weight_decay,
    ),
    PaperFigure(
        "paper002_fig5_gap_vs_measures",
        "002",
        "Fig. 5",
        "the gap against sharpness and the input-Jacobian norm per regulariser family, with τ",
        metrics=(M.GEN_GAP_LOSS,),
        any_metrics=(M.SHARPNESS, M.INPUT_JAC_MAX),
        condition=lambda d: None if len(d.runs) >= 3 else "needs at least 3 runs",
        draw=fig5_gap_vs_measures,
    ),
    PaperFigure(
        "batch_sharpness_vs_threshold",
        "Andreyev & Beneventano 2024",
        "the edge of stochastic stability",
        "batch sharpness against 2/η for SGD runs",
        metrics=(M.BATCH_SHARPNESS,),
        condition=_sgd,
        draw=batch_sharpness_vs_threshold,
    ),
)
