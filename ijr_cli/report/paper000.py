"""Paper 000's figures (Lee, Park & Lee, Implicit Jacobian Regularization), each drawn from a sweep's own runs.

The registry entries (`FIGURES`) say what each needs; captions of the paper are in ../shared/papers/001_….
Per-run figures use up to three representative runs (the first seed of each value of the first swept key).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import numpy as np
import pandas as pd

from ijr_cli.core import metric_names as M
from ijr_cli.report import figures as F
from ijr_cli.report import phases
from ijr_cli.report.registry import PaperFigure, SweepData, caption_runs, swept_over
from ijr_cli.report.theory import theorem1_bounds

EJR_KEY = "regularizer.jacobian"


def _reps(data: SweepData, metrics=(), arrays=(), limit: int = 3) -> List[int]:
    return data.representatives(data.runs_with(metrics, arrays), limit)


def _marks(ax, data: SweepData, run: int) -> None:
    """The run's detected phases on a step axis: EoS onset (dotted), catapults (red ticks at the top)."""
    row = data.runs.loc[run]
    onset = row.get("eos_onset_step")
    if onset is not None and not pd.isna(onset):
        ax.axvline(onset, color="0.3", linestyle=":", linewidth=1.0, label="EoS onset")
    frame = data.history_of(run)
    loss = phases.loss_series(frame)
    if loss is not None and M.SHARPNESS in frame:
        rows = frame[["step", M.SHARPNESS]].dropna()
        for i, event in enumerate(phases.catapults(*loss, rows["step"], rows[M.SHARPNESS])):
            ax.axvline(event.step, color="C3", alpha=0.35, linewidth=0.8, label="catapult" if i == 0 else None)


def _rows(frame: pd.DataFrame, *columns) -> pd.DataFrame:
    return F.thin(frame[["run", "step", *columns]].dropna(subset=list(columns)), 2000)


# ------------------------------------------------------------------------------------------ Fig. 2
def fig02_impurity(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    plt, sns = F._plt()
    runs = _reps(data, (M.IMPURITY_MEAN, M.P1_MEAN))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, run in enumerate(runs):
        rows = _rows(data.history_of(run), M.P1_MEAN, M.IMPURITY_MEAN)
        points = left.scatter(rows[M.P1_MEAN], rows[M.IMPURITY_MEAN], c=rows["step"], cmap="viridis", s=6)
        band = data.history_of(run)
        line = _rows(band, M.IMPURITY_MEAN)
        right.plot(line["step"], line[M.IMPURITY_MEAN], color=f"C{i}", label=data.title(run))
        if M.IMPURITY_Q25 in band and M.IMPURITY_Q75 in band:
            q = _rows(band, M.IMPURITY_Q25, M.IMPURITY_Q75)
            right.fill_between(q["step"], q[M.IMPURITY_Q25], q[M.IMPURITY_Q75], color=f"C{i}", alpha=0.2, lw=0)
    theorem1_bounds(
        left, np.linspace(0.1, 1, 200), ("Gini(p(1)) (upper bound)", "½·Gini(p(1)) (per-example lower bound)")
    )
    left.set_xlabel("⟨p(1)⟩, the mean top probability")
    left.set_ylabel("⟨λ(1)⟩, the mean impurity")
    left.legend(fontsize=6)
    fig.colorbar(points, ax=left, label="step")
    right.set_xlabel("step")
    right.set_ylabel("⟨λ(1)⟩ (band: 25–75 %)")
    right.legend(fontsize=6)
    fig.suptitle("Paper 000 Fig. 2: the impurity of the probability output", fontsize=10)
    fig.tight_layout()
    return F._save(
        fig,
        out,
        name,
        "Paper 000 Fig. 2: impurity against the top probability, and over training",
        "Left: the probe set's mean impurity ⟨λ(1)⟩ against its mean top probability ⟨p(1)⟩ at every logged step "
        "(colour: step) with Theorem 1's bounds (they hold per example; for means the upper bound still holds, "
        "Gini being concave). Right: ⟨λ(1)⟩ with its 25–75 % band over the steps (the ∩-shape). "
        + caption_runs(data, runs),
    )


# ------------------------------------------------------------------------------------------ Fig. 3
def fig03_sharpness_jacobian(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    plt, sns = F._plt()
    runs = _reps(data, (M.SHARPNESS, M.JAC_OP_NORM))
    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 2.9 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        frame = data.history_of(run)
        last, handles = frame["step"].max(), []
        onset = data.runs.loc[run].get("eos_onset_step")
        centre = onset if onset is not None and not pd.isna(onset) else last / 2
        width = max(0.1 * last, 5)
        windows = ((0, last), (max(0, centre - width), min(last, centre + 3 * width)))
        for ax, (lo, hi) in zip(row, windows):
            part = frame[(frame["step"] >= lo) & (frame["step"] <= hi)]
            s = part[["step", M.SHARPNESS]].dropna()
            ax.plot(s["step"], s[M.SHARPNESS], color="C0", linewidth=1.0, label="sharpness")
            if M.THRESHOLD in part:
                t = part[["step", M.THRESHOLD]].dropna()
                ax.plot(t["step"], t[M.THRESHOLD], color="C0", linestyle="--", linewidth=0.9, label="2/η")
            _marks(ax, data, run)
            ax.set_xlim(lo, hi)
            ax.set_ylabel("sharpness", color="C0")
            ax.set_xlabel("step")
            twin = ax.twinx()
            j = part[["step", M.JAC_OP_NORM]].dropna()
            twin.plot(j["step"], j[M.JAC_OP_NORM] ** 2, color="C3", linewidth=1.0, label="‖⟨J⟩‖²")
            twin.set_ylabel("‖⟨J⟩‖²", color="C3")
            twin.grid(False)
            ax.set_title(f"{data.title(run)}: steps {F.label(lo)}–{F.label(hi)}", fontsize=8)
            if not handles:
                handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        row[0].legend(handles=handles, fontsize=6, loc="upper left")
    fig.suptitle("Paper 000 Fig. 3: sharpness and ‖⟨J⟩‖² over training", fontsize=10)
    fig.tight_layout()
    return F._save(
        fig,
        out,
        name,
        "Paper 000 Fig. 3: sharpness and the Jacobian norm",
        "Sharpness (left axis, with 2/η dashed) and ‖⟨J⟩‖² (right axis) over the whole run and over a window "
        "around the edge-of-stability onset (dotted); red lines mark detected catapults. " + caption_runs(data, runs),
    )


# ------------------------------------------------------------------------------------------ Figs. 4, 26
def pca_2d(points: np.ndarray):
    """The first two principal components of the rows of `points` (centred SVD), and their variance shares."""
    x = np.asarray(points, dtype=np.float64)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    share = s**2 / max(float((s**2).sum()), 1e-300)
    return u[:, :2] * s[:2], share[:2]


def fig04_trajectory(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    plt, sns = F._plt()
    runs = _reps(data, arrays=(M.TRAJECTORY,), limit=2)
    try:
        import umap  # noqa: F401  (umap-learn: optional)

        have_umap = True
    except ImportError:
        have_umap = False
    ncols = 3 if have_umap else 2
    fig, axes = plt.subplots(len(runs), ncols, figsize=(4.2 * ncols, 3.6 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        series = data.arrays(run)[M.TRAJECTORY]
        steps = series.steps
        xy, share = pca_2d(series.values)
        onset = data.runs.loc[run].get("eos_onset_step")
        start = onset if onset is not None and not pd.isna(onset) else steps[int(0.75 * (len(steps) - 1))]
        zoom = steps >= start
        zoomed, zoom_share = pca_2d(series.values[zoom]) if zoom.sum() >= 3 else (xy[zoom], share)
        panels = [
            (row[0], xy, steps, "PCA of θ(t)", share),
            (row[1], zoomed, steps[zoom], f"steps ≥ {start:g}", zoom_share),
        ]
        if have_umap:
            import umap

            embedded = umap.UMAP(n_components=2, random_state=0).fit_transform(series.values)
            panels.append((row[2], embedded, steps, "UMAP of θ(t)", None))
        for ax, points, when, title, var in panels:
            ax.plot(points[:, 0], points[:, 1], color="0.8", linewidth=0.5, zorder=1)
            dots = ax.scatter(points[:, 0], points[:, 1], c=when, cmap="coolwarm", s=5, zorder=2)
            ax.set_title(f"{data.title(run)}: {title}", fontsize=8)
            ax.set_xlabel(f"PC1 ({100 * var[0]:.0f} %)" if var is not None else "UMAP 1")
            ax.set_ylabel(f"PC2 ({100 * var[1]:.0f} %)" if var is not None else "UMAP 2")
        fig.colorbar(dots, ax=row[-1], label="step")
    fig.suptitle("Paper 000 Figs. 4, 26: the optimisation trajectory (blue → red)", fontsize=10)
    fig.tight_layout()
    return F._save(
        fig,
        out,
        name,
        "Paper 000 Figs. 4, 26: the parameter trajectory",
        "The run's trajectory sketch (metrics `trajectory`: a seeded Johnson–Lindenstrauss embedding of θ(t)) "
        "projected on its first two principal components, coloured by step, and zoomed on the steps after the "
        "edge-of-stability onset (PCA of those steps alone), where the oscillatory catapult shows. "
        + ("UMAP beside it. " if have_umap else "UMAP: not drawn (install umap-learn to add it). ")
        + caption_runs(data, runs),
    )


# ------------------------------------------------------------------------------------------ Fig. 5
def fig05_jacobian_phases(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    plt, sns = F._plt()
    runs = _reps(data, (M.JAC_OP_NORM,))
    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 3.4), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        rows = data.history_of(run)[["step", M.JAC_OP_NORM]].dropna()
        ax.plot(rows["step"], rows[M.JAC_OP_NORM], color="C0", linewidth=1.1)
        period = phases.active_regularisation(rows["step"], rows[M.JAC_OP_NORM])
        if period is not None:
            lo, hi = rows["step"].min(), rows["step"].max()
            for (a, b), tone, text in (
                ((lo, period.start), "0.92", "I"),
                ((period.start, period.end), "#dff3df", "II"),
                ((period.end, hi), "0.92", "III"),
            ):
                ax.axvspan(a, b, color=tone, alpha=0.8, zorder=0)
                ax.text((a + b) / 2, 0.95, text, transform=ax.get_xaxis_transform(), ha="center", fontsize=9)
            slopes = ", ".join(f"{v:.2g}" for v in period.slopes)
            ax.set_title(f"{data.title(run)}\nd log‖⟨J⟩‖/dt: {slopes}", fontsize=8)
        else:
            ax.set_title(f"{data.title(run)}\n(no active-regularisation period detected)", fontsize=8)
        F.readable_scale(ax, rows[M.JAC_OP_NORM])
        ax.set_xlabel("step")
        ax.set_ylabel("‖⟨J⟩‖₂")
    fig.suptitle("Paper 000 Fig. 5: three phases of implicit Jacobian regularisation", fontsize=10)
    fig.tight_layout()
    return F._save(
        fig,
        out,
        name,
        "Paper 000 Fig. 5: the three phases of ‖⟨J⟩‖",
        "‖⟨J⟩‖ (a log axis where it spans ≥ 30×) with the detected phases (report/phases.py: the best "
        "three-segment fit of log ‖⟨J⟩‖): "
        "(I) fast growth, (II) the active-regularisation period with a gentle slope (green), (III) growth again; "
        "the title gives the three fitted slopes. " + caption_runs(data, runs),
    )


# ------------------------------------------------------------------------------------------ Figs. 6, 22-25
def fig06_by_hyperparameter(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    key = data.swept[0]
    columns = [c for c in (M.SHARPNESS, M.THRESHOLD, M.JAC_OP_NORM, M.IMPURITY_MEAN) if c in data.history]
    fig = F.trajectories(
        data.history[["run", "step", *columns]],
        data.runs,
        key,
        out,
        name,
        f"Paper 000 Figs. 6, 22–25: sharpness, ‖⟨J⟩‖ and ⟨λ(1)⟩ by {key}",
    )
    if fig is not None:
        fig.caption = (
            f"Sharpness (with its threshold), sharpness / threshold, ‖⟨J⟩‖ and the mean impurity ⟨λ(1)⟩ against "
            f"the step, one colour per value of {key} (mean over seeds, band ± 1 sd). "
            + caption_runs(data, list(data.runs.index))
        )
    return fig


# ------------------------------------------------------------------------------------------ Fig. 7
def _has_baseline_and_ejr(data: SweepData) -> Optional[str]:
    kinds = data.runs.get(EJR_KEY, pd.Series(dtype=object)).fillna("none")
    if (kinds == "none").any() and (kinds != "none").any():
        return None
    return "needs baseline and EJR runs in one sweep (regularizer=none and regularizer=ejr|ejr_sam|ejr_v2)"


def fig07_baseline_vs_ejr(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    plt, sns = F._plt()
    runs = data.runs.assign(_ejr=data.runs.get(EJR_KEY, pd.Series("none", index=data.runs.index)).fillna("none"))
    others = [k for k in data.swept if k not in (EJR_KEY, "regularizer") and not k.startswith("regularizer.")]
    key = others[0] if others else None
    values = sorted(runs[key].map(F.label).unique(), key=F._natural) if key else [""]
    palette = dict(zip(values, sns.color_palette("viridis", len(values))))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for metric, ax, scale in ((M.TEST_ACC, axes[0], 100), (M.TEST_LOSS, axes[1], 1)):
        for (value, variant), group in runs.groupby(
            [runs[key].map(F.label) if key else pd.Series("", index=runs.index), "_ejr"]
        ):
            hist = data.history[data.history["run"].isin(group.index)][["step", metric]].dropna()
            mean = hist.groupby("step")[metric].mean() * scale
            style = "-" if variant == "none" else "--"
            label = f"{key}={value}, " if key else ""
            ax.plot(mean.index, mean.to_numpy(), style, color=palette[value], label=f"{label}{variant}")
        ax.set_xlabel("step")
        ax.set_ylabel(metric + (" (%)" if scale == 100 else ""))
    axes[1].legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left", frameon=False)
    fig.suptitle("Paper 000 Fig. 7: baseline (solid) against EJR (dashed)", fontsize=10)
    fig.tight_layout()
    return F._save(
        fig,
        out,
        name,
        "Paper 000 Fig. 7: test accuracy and loss, baseline vs EJR",
        "Test accuracy (%) and test loss against the step (mean over seeds): baseline solid, EJR variants dashed"
        + (f", one colour per value of {key}. " if key else ". ")
        + caption_runs(data, list(runs.index)),
    )


# ------------------------------------------------------------------------------------------ arrays at chosen steps
def chosen_steps(steps: np.ndarray, onset=None, count: int = 4) -> List[int]:
    """Up to `count` recorded steps: the first, the EoS onset (or a quarter in), halfway from there to the end, and
    the last."""
    steps = np.asarray(steps)
    if not len(steps):
        return []
    wanted = [steps[0], onset if onset is not None and not pd.isna(onset) else np.quantile(steps, 0.25)]
    wanted += [(wanted[1] + steps[-1]) / 2, steps[-1]]
    picked = [int(steps[np.argmin(np.abs(steps - w))]) for w in wanted]
    return list(dict.fromkeys(picked))[:count]


def _heatmaps(data, run, array, out, name, title, caption, cmap="viridis", center=None):
    plt, sns = F._plt()
    series = data.arrays(run)[array]
    picks = chosen_steps(series.steps, data.runs.loc[run].get("eos_onset_step"))
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.0), squeeze=False)
    for ax, step in zip(axes.flat, picks):
        matrix = series.values[int(np.flatnonzero(series.steps == step)[0])]
        sns.heatmap(matrix, ax=ax, cmap=cmap, center=center, square=True, cbar=True, xticklabels=2, yticklabels=2)
        ax.set_title(f"step {step}", fontsize=8)
    fig.suptitle(f"{title} ({data.title(run)})", fontsize=10)
    fig.tight_layout()
    return F._save(fig, out, name, title, caption + " " + caption_runs(data, [run]))


def fig08_q_lambda(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    run = _reps(data, arrays=(M.Q_LAMBDA_SQRT,), limit=1)[0]
    return _heatmaps(
        data,
        run,
        M.Q_LAMBDA_SQRT,
        out,
        name,
        "Paper 000 Figs. 8, 27: ⟨QΛ^{1/2}⟩",
        "The mean over the probe examples of QΛ^{1/2} (the logit Hessian's eigenvectors scaled by the root of "
        "their eigenvalues) in the probability-ranked basis, at the first step, the edge-of-stability onset, "
        "halfway from there to the end and the last recorded step: the top eigenvector concentrates on the two "
        "most probable classes.",
        cmap="RdBu_r",
        center=0,
    )


def fig09_m_vectors(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    plt, sns = F._plt()
    run = _reps(data, arrays=(M.M_COS, M.M_MRL), limit=1)[0]
    arrays = data.arrays(run)
    cos, mrl = arrays[M.M_COS], arrays[M.M_MRL]
    picks = chosen_steps(cos.steps, data.runs.loc[run].get("eos_onset_step"), count=2)
    fig, axes = plt.subplots(1, len(picks) + 1, figsize=(3.4 * (len(picks) + 1), 3.1), squeeze=False)
    for ax, step in zip(axes.flat, picks):
        matrix = cos.values[int(np.flatnonzero(cos.steps == step)[0])]
        sns.heatmap(matrix, ax=ax, cmap="RdBu_r", vmin=-1, vmax=1, square=True)
        ax.set_title(f"cos(m_i, m_j), step {step}", fontsize=8)
    ax = axes.flat[-1]
    colours = sns.color_palette("tab10", mrl.values.shape[1])
    for c in range(mrl.values.shape[1]):
        ax.plot(mrl.steps, mrl.values[:, c], color=colours[c], linewidth=0.9, label=f"class {c}")
    ax.set_xlabel("step")
    ax.set_ylabel("mean resultant length")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=5, ncols=2)
    ax.set_title("MRL of m/‖m‖ per class", fontsize=8)
    fig.suptitle(f"Paper 000 Figs. 9, 28–30: the m-vectors ({data.title(run)})", fontsize=10)
    fig.tight_layout()
    return F._save(
        fig,
        out,
        name,
        "Paper 000 Figs. 9, 28–30: class means of the m-vectors",
        "Cosines between the class means m_i of the per-example vectors m = Jᵀq (heatmaps at two steps) and the "
        "mean resultant length of m/‖m‖ per class over the steps (1: every example of the class points the same "
        "way). The directional scatter of two classes (Fig. 9's third panel) needs per-example m, which ijr does "
        "not store. " + caption_runs(data, [run]),
    )


def fig10_alignment(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    plt, sns = F._plt()
    runs = _reps(data, any_of(data, (M.COS_M_GRAD_Q50, M.ALIGN_S_GRAD)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for i, run in enumerate(runs):
        frame = data.history_of(run)
        if M.COS_M_GRAD_Q50 in frame:
            q = frame[["step", M.COS_M_GRAD_Q25, M.COS_M_GRAD_Q50, M.COS_M_GRAD_Q75]].dropna()
            axes[0].plot(q["step"], q[M.COS_M_GRAD_Q50], color=f"C{i}", label=data.title(run))
            axes[0].fill_between(q["step"], q[M.COS_M_GRAD_Q25], q[M.COS_M_GRAD_Q75], color=f"C{i}", alpha=0.2)
        for metric, style in ((M.ALIGN_S_GRAD, "-"), (M.ALIGN_S_TOP_EIG, "--")):
            if metric in frame:
                a = frame[["step", metric]].dropna()
                axes[1].plot(a["step"], a[metric], style, color=f"C{i}", label=f"{metric}: {data.title(run)}")
    axes[0].set_title("cos(g, r) per example: median, 25–75 %", fontsize=8)
    axes[1].set_title("alignment with S = span{m_i} (solid: ∇L, dashed: top eigenvector)", fontsize=8)
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    fig.suptitle("Paper 000 Figs. 10, 31: gradient alignment", fontsize=10)
    fig.tight_layout()
    return F._save(
        fig,
        out,
        name,
        "Paper 000 Figs. 10, 31: alignment of the gradient",
        "Left: the per-example cosine between the m-vector and the loss gradient (median with its 25–75 % band). "
        "Right: the share of ∇L_S and of the Hessian's top eigenvector in span{m_i} (A_S). " + caption_runs(data, runs),
    )


def any_of(data: SweepData, metrics) -> tuple:
    """The first of `metrics` the sweep logged (for runs_with)."""
    return tuple(m for m in metrics if data.logged(m))[:1]


def fig11_histograms(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    plt, sns = F._plt()
    run = _reps(data, arrays=(M.JQ1_NORM_HIST, M.JQ_COS2_HIST), limit=1)[0]
    arrays = data.arrays(run)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, key, xlabel in (
        (axes[0], M.JQ1_NORM_HIST, "‖J q₁‖ / max over the probe set"),
        (axes[1], M.JQ_COS2_HIST, "cos²(J q₁, J q₁') between examples"),
    ):
        series = arrays[key]
        edges = np.asarray(series.labels, dtype=float) if series.labels else np.arange(series.values.shape[1] + 1)
        picks = chosen_steps(series.steps, data.runs.loc[run].get("eos_onset_step"))
        colours = sns.color_palette("viridis", len(picks))
        for step, colour in zip(picks, colours):
            counts = series.values[int(np.flatnonzero(series.steps == step)[0])]
            ax.stairs(counts, edges, color=colour, label=f"step {step}", linewidth=1.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("examples" if key == M.JQ1_NORM_HIST else "pairs")
        ax.legend(fontsize=6)
    fig.suptitle(f"Paper 000 Fig. 11: histograms ({data.title(run)})", fontsize=10)
    fig.tight_layout()
    return F._save(
        fig,
        out,
        name,
        "Paper 000 Fig. 11: histograms over the probe set",
        "The fixed-bin histograms of metrics jq1_norm_hist and jq_cos2_hist at four recorded steps. "
        + caption_runs(data, [run]),
    )


NORMS = (M.LOGIT_NORM_MEAN, M.LOGIT_SUM_ABS_MEAN, M.WEIGHT_NORM, M.DIST_INIT)


def fig12_norms(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    plt, sns = F._plt()
    metrics = [m for m in NORMS if data.logged(m)]
    runs = _reps(data, metrics[:1])
    layer_run = next((r for r in runs if M.WEIGHT_NORM_LAYERS in data.array_names(r)), None)
    layers = data.arrays(layer_run)[M.WEIGHT_NORM_LAYERS] if layer_run is not None else None
    n = len(metrics) + (1 if layers is not None else 0)
    fig, axes = plt.subplots(1, n, figsize=(3.5 * n, 3.1), squeeze=False)
    titles = {
        M.LOGIT_NORM_MEAN: "⟨‖z‖⟩",
        M.LOGIT_SUM_ABS_MEAN: "⟨|1ᵀz|⟩",
        M.WEIGHT_NORM: "‖θ‖",
        M.DIST_INIT: "‖θ − θ(0)‖",
    }
    for ax, metric in zip(axes.flat, metrics):
        for i, run in enumerate(runs):
            rows = data.history_of(run)[["step", metric]].dropna()
            ax.plot(rows["step"], rows[metric], color=f"C{i}", linewidth=1.0, label=data.title(run))
        ax.set_title(titles[metric], fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
    axes.flat[0].legend(fontsize=6)
    if layers is not None:
        ax = axes.flat[n - 1]
        names = layers.labels or [f"layer {i}" for i in range(layers.values.shape[1])]
        colours = sns.color_palette("rocket", len(names))
        for k, (layer, colour) in enumerate(zip(names, colours)):
            ax.plot(layers.steps, layers.values[:, k], color=colour, linewidth=0.9, label=str(layer))
        ax.set_title(f"layerwise ‖θ_l‖ ({data.title(layer_run)})", fontsize=8)
        ax.set_xlabel("step")
        ax.legend(fontsize=5)
    fig.suptitle("Paper 000 Figs. 12–14: logit and weight norms", fontsize=10)
    fig.tight_layout()
    return F._save(
        fig,
        out,
        name,
        "Paper 000 Figs. 12–14: logit norm, logit sum, weight norm, distance from init, layerwise norms",
        "The probe set's mean logit norm and |logit sum|, the weight norm and the distance from the initial "
        "weights against the step"
        + (", and the norm of each layer's parameters" if layers is not None else "")
        + ". "
        + caption_runs(data, runs),
    )


# ------------------------------------------------------------------------------------------ Figs. 15-21
def slowly_varying_factor(sharpness: np.ndarray, proxy: np.ndarray, window: int = 21) -> np.ndarray:
    """c(t) in ‖H‖ ≈ c(t) · ⟨λ(1)⟩‖⟨J⟩û‖²: the running median (over `window` logged points, centred) of the
    ratio sharpness / ijr_proxy."""
    ratio = pd.Series(np.asarray(sharpness, dtype=float) / np.asarray(proxy, dtype=float))
    return ratio.rolling(window, center=True, min_periods=1).median().to_numpy()


def fig15_hessian_vs_proxy(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    plt, sns = F._plt()
    runs = _reps(data, (M.SHARPNESS, M.IJR_PROXY))
    fig, axes = plt.subplots(2, len(runs), figsize=(4.4 * len(runs), 5.6), squeeze=False)
    for k, run in enumerate(runs):
        rows = data.history_of(run)[["step", M.SHARPNESS, M.IJR_PROXY]].dropna()
        rows = rows[rows[M.IJR_PROXY] > 0]
        c = slowly_varying_factor(rows[M.SHARPNESS], rows[M.IJR_PROXY])
        top, bottom = axes[0, k], axes[1, k]
        top.plot(rows["step"], rows[M.SHARPNESS], color="C0", linewidth=1.1, label="‖H‖ (sharpness)")
        top.plot(
            rows["step"], c * rows[M.IJR_PROXY], color="C3", linestyle="--", linewidth=1.0, label="c(t)·⟨λ(1)⟩‖⟨J⟩û‖²"
        )
        lr = data.lr(run)
        if lr:
            top.axhline(2 / lr, color="k", linestyle=":", linewidth=0.8, label="2/η")
        top.set_title(data.title(run), fontsize=8)
        top.legend(fontsize=6)
        bottom.plot(rows["step"], c, color="C2")
        bottom.set_ylabel("c(t)")
        bottom.set_xlabel("step")
        spread = np.nanmax(c) / max(np.nanmin(c), 1e-300) if len(c) else math.nan
        bottom.set_title(f"fitted factor (max/min {spread:.2g})", fontsize=8)
    fig.suptitle("Paper 000 Figs. 15–21: ‖H‖ ∝ ⟨λ(1)⟩‖⟨J⟩û‖²", fontsize=10)
    fig.tight_layout()
    return F._save(
        fig,
        out,
        name,
        "Paper 000 Figs. 15–21: the Hessian norm against ⟨λ(1)⟩‖⟨J⟩û‖²",
        "Top: the sharpness ‖H‖ and ijr_proxy = ⟨λ(1)⟩‖⟨J⟩û‖² scaled by the fitted, slowly varying factor c(t) (the "
        "running median of their ratio over 21 logged points). Bottom: c(t). " + caption_runs(data, runs),
    )


def fig33_acc_lr_lambda(data: SweepData, out: Path, name: str, entry) -> Optional[F.Figure]:
    fig = F.heatmap(
        data.runs,
        "regularizer.lambda_reg",
        "optimizer.lr",
        M.TEST_ACC,
        out,
        name,
        "Paper 000 Fig. 33: test accuracy (%) over λ_reg × lr",
    )
    if fig is not None:
        fig.caption += " " + caption_runs(data, list(data.runs.index))
    return fig


FIGURES = (
    PaperFigure(
        "paper000_fig02_impurity",
        "000",
        "Fig. 2",
        "impurity against p(1) with Theorem 1's bounds, and over training",
        metrics=(M.IMPURITY_MEAN, M.P1_MEAN),
        draw=fig02_impurity,
    ),
    PaperFigure(
        "paper000_fig03_sharpness_jacobian",
        "000",
        "Fig. 3",
        "sharpness and ‖⟨J⟩‖² on twin axes with 2/η",
        metrics=(M.SHARPNESS, M.JAC_OP_NORM),
        draw=fig03_sharpness_jacobian,
    ),
    PaperFigure(
        "paper000_fig04_trajectory_pca",
        "000",
        "Figs. 4, 26",
        "PCA (and UMAP) of the parameter trajectory",
        arrays=(M.TRAJECTORY,),
        draw=fig04_trajectory,
    ),
    PaperFigure(
        "paper000_fig05_jacobian_phases",
        "000",
        "Fig. 5",
        "the three phases of ‖⟨J⟩‖ with detected boundaries",
        metrics=(M.JAC_OP_NORM,),
        draw=fig05_jacobian_phases,
    ),
    PaperFigure(
        "paper000_fig06_by_hyperparameter",
        "000",
        "Figs. 6, 22–25",
        "sharpness, ‖⟨J⟩‖, ⟨λ(1)⟩ by a swept hyperparameter",
        metrics=(M.SHARPNESS,),
        any_metrics=(M.JAC_OP_NORM, M.IMPURITY_MEAN),
        condition=lambda d: None if d.swept else "needs a swept hyperparameter",
        draw=fig06_by_hyperparameter,
    ),
    PaperFigure(
        "paper000_fig07_baseline_vs_ejr",
        "000",
        "Fig. 7",
        "test accuracy and loss, baseline vs EJR",
        metrics=(M.TEST_ACC, M.TEST_LOSS),
        condition=_has_baseline_and_ejr,
        draw=fig07_baseline_vs_ejr,
    ),
    PaperFigure(
        "paper000_fig08_q_lambda_sqrt",
        "000",
        "Figs. 8, 27",
        "⟨QΛ^{1/2}⟩ heatmaps at chosen steps",
        arrays=(M.Q_LAMBDA_SQRT,),
        draw=fig08_q_lambda,
    ),
    PaperFigure(
        "paper000_fig09_m_vectors",
        "000",
        "Figs. 9, 28–30",
        "cosines between class means, MRL per class",
        arrays=(M.M_COS, M.M_MRL),
        draw=fig09_m_vectors,
    ),
    PaperFigure(
        "paper000_fig10_alignment",
        "000",
        "Figs. 10, 31",
        "cos(g, r) and the alignment with S",
        any_metrics=(M.COS_M_GRAD_Q50, M.ALIGN_S_GRAD),
        draw=fig10_alignment,
    ),
    PaperFigure(
        "paper000_fig11_histograms",
        "000",
        "Fig. 11",
        "histograms of ‖Jq₁‖ and cos²",
        arrays=(M.JQ1_NORM_HIST, M.JQ_COS2_HIST),
        draw=fig11_histograms,
    ),
    PaperFigure(
        "paper000_fig12_norms",
        "000",
        "Figs. 12–14",
        "logit norm, logit sum, weight norm, distance from init, layerwise norms",
        any_metrics=NORMS,
        draw=fig12_norms,
    ),
    PaperFigure(
        "paper000_fig15_hessian_vs_proxy",
        "000",
        "Figs. 15–21",
        "‖H‖ against ⟨λ(1)⟩‖⟨J⟩û‖² with the fitted factor",
        metrics=(M.SHARPNESS, M.IJR_PROXY),
        draw=fig15_hessian_vs_proxy,
    ),
    PaperFigure(
        "paper000_fig33_acc_lr_lambda",
        "000",
        "Fig. 33",
        "test accuracy over lr × λ_reg",
        metrics=(M.TEST_ACC,),
        condition=lambda d: swept_over("optimizer.lr")(d) or swept_over("regularizer.lambda_reg")(d),
        draw=fig33_acc_lr_lambda,
    ),
)
