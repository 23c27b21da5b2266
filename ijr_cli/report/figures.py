"""Figures of a sweep (seaborn / matplotlib, Agg backend; each saved as PNG and PDF). No torch.

- trajectories: sharpness with its stability threshold, sharpness / threshold (1 = the edge of stability), mean
  impurity with its 25–75 % band, ‖⟨J⟩‖ and `ijr_proxy`, the trained loss (MSE or CE, named), plain CE when it
  differs, accuracies (%), against the step, one colour per value of a swept hyperparameter;
- spectrum: the tracked top Hessian eigenvalues (`sharpness_k`) over the steps, with the threshold;
- finals: final metrics against a swept hyperparameter, hue/style by another, markers, the stability threshold on
  the sharpness panel (paper 002 Figs. 2–5);
- heatmap: a final metric over a two-dimensional grid.

Every axis is readable: a positive metric spanning ≥ 30× gets a log axis with labelled 1-2-5 ticks (else linear),
a swept log axis is ticked at the swept values, and `declutter` drops every other tick label of an axis until no
two labels of the figure overlap (tested on the rendered bounding boxes). Accuracies are in % everywhere.
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
from ijr_cli.core.humanize import value as label
from ijr_cli.report.collect import present

MAX_POINTS = 400  # steps kept per run in trajectory plots (evenly thinned; the tables use every step)
FINAL_PANELS = (M.INPUT_JAC_MAX, M.JAC_OP_NORM, M.SHARPNESS, M.GEN_GAP_LOSS, M.GEN_GAP_ACC, M.TEST_ACC)
PERCENT = (M.TEST_ACC, M.TRAIN_ACC, M.GEN_GAP_ACC, "best_test_acc")  # fractions, drawn in %
EDGE = "sharpness_over_threshold"  # derived here: sharpness / the run's threshold (carried forward)
LOG_RATIO = 30  # a positive metric spanning at least this factor is drawn on a log axis


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
    declutter(fig)
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    fig.savefig(png, dpi=130, bbox_inches="tight")
    fig.savefig(pdf, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return Figure(name=name, title=title, caption=caption, png=png, pdf=pdf)


# ------------------------------------------------------------------------------------------ readable axes
def _drawn_labels(axis) -> list:
    """The tick labels matplotlib draws on `axis` (those of the ticks in view, with text)."""
    if not axis.get_visible() or not axis.axes.get_visible():  # (a twin's hidden shared axis draws nothing)
        return []
    ticks = axis._update_ticks()  # (private, since matplotlib 2: the ticks in view; get_ticklabels has stale ones)
    return [t.label1 for t in ticks if t.label1.get_visible() and t.label1.get_text()]


def tick_label_boxes(fig) -> List[tuple]:
    """(axes index, 'x'|'y', text, display-space bounding box) of every drawn tick label of the figure."""
    if not hasattr(fig.canvas, "get_renderer"):  # a closed figure: give it back an Agg canvas to measure on
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # the layout and the ticks, no pixels: a third of a draw
    renderer = fig.canvas.get_renderer()
    out = []
    for i, ax in enumerate(fig.axes):
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            for text in _drawn_labels(axis):
                out.append((i, name, text.get_text(), text.get_window_extent(renderer)))
    return out


def overlapping_tick_labels(fig, pad: float = 1.0) -> List[tuple]:
    """Pairs of tick labels of `fig` whose rendered bounding boxes intersect (`pad` pixels of air required)."""
    boxes = tick_label_boxes(fig)
    clashes = []
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            p, q = boxes[a][3], boxes[b][3]
            if p.x0 < q.x1 + pad and q.x0 < p.x1 + pad and p.y0 < q.y1 + pad and q.y0 < p.y1 + pad:
                clashes.append((boxes[a][:3], boxes[b][:3]))
    return clashes


def declutter(fig, rounds: int = 6) -> None:
    """Drop every other major tick of an axis whose labels overlap each other, until none do."""
    import matplotlib.ticker as mticker

    for _ in range(rounds):
        clashes = overlapping_tick_labels(fig)
        if not clashes:
            return
        for i, name in dict.fromkeys((a[0], a[1]) for pair in clashes for a in pair):
            axis = getattr(fig.axes[i], f"{name}axis")
            locs = [t.get_loc() for t in axis._update_ticks() if t.label1.get_text()]
            # (a twin shares this axis's locator: thinning one thins both, as it should)
            if len(locs) > 1:
                axis.set_major_locator(mticker.FixedLocator(locs[::2]))
            axis.set_minor_formatter(mticker.NullFormatter())


def _plain_formatter():
    import matplotlib.ticker as mticker

    return mticker.FuncFormatter(lambda v, _: f"{v:g}")


def readable_scale(ax, values, axis: str = "y") -> None:
    """A log axis with labelled 1-2-5 ticks when `values` are positive and span ≥ LOG_RATIO×, else linear."""
    import matplotlib.ticker as mticker

    v = pd.to_numeric(pd.Series(np.ravel(values)), errors="coerce").dropna()
    v = v[np.isfinite(v)]
    if len(v) < 2 or (v <= 0).any() or v.max() / v.min() < LOG_RATIO:
        return
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(_plain_formatter())
    target.set_minor_formatter(mticker.NullFormatter())


def swept_log_axis(ax, values) -> None:
    """A log x axis ticked at the swept values themselves (labels %g), for a swept key spanning ≥ 8×."""
    import matplotlib.ticker as mticker

    v = np.unique(pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy())
    if len(v) < 2 or (v <= 0).any() or v.max() / v.min() < 8:
        return
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(mticker.FixedLocator(v))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda x, _: label(float(f"{x:.6g}"))))
    ax.xaxis.set_minor_locator(mticker.NullLocator())


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


def with_edge(history: pd.DataFrame) -> pd.DataFrame:
    """`history` with EDGE = sharpness / threshold, the threshold carried forward within each run (it is logged
    when the learning rate changes); rows without sharpness get NaN."""
    if M.SHARPNESS not in history or M.THRESHOLD not in history:
        return history
    threshold = history.groupby("run", sort=False)[M.THRESHOLD].ffill()
    return history.assign(**{EDGE: history[M.SHARPNESS] / threshold.where(threshold > 0)})


def loss_names(runs: pd.DataFrame) -> str:
    """The trained losses of the runs, e.g. 'mse' or 'ce, mse' (config `loss.name`)."""
    names = sorted({str(v) for v in runs.get("loss.name", pd.Series(dtype=object)).dropna()})
    return ", ".join(names) or "the trained objective"


def trajectory_panels(history: pd.DataFrame, loss: str = "the trained objective") -> List[tuple]:
    """(title, main metric, extra, percent) for the panels whose metric was logged; `extra` is a dashed companion
    (a name) or a band (two names). Plain CE gets its own panel only where it differs from the trained loss."""
    ce_differs = M.TRAIN_LOSS not in history or (
        M.TRAIN_CE in history
        and not np.allclose(history[M.TRAIN_LOSS], history[M.TRAIN_CE], rtol=1e-9, atol=0, equal_nan=True)
    )
    panels = [
        ("sharpness λ_max (dashed: stability threshold 2/η)", M.SHARPNESS, M.THRESHOLD, False),
        ("sharpness / threshold (1 = the edge of stability)", EDGE, None, False),
        ("mean impurity ⟨λ(1)⟩ (band: 25–75 %)", M.IMPURITY_MEAN, (M.IMPURITY_Q25, M.IMPURITY_Q75), False),
        ("‖⟨J⟩‖₂", M.JAC_OP_NORM, None, False),
        ("ijr_proxy = ⟨λ(1)⟩·‖⟨J⟩û‖²", M.IJR_PROXY, None, False),
        ("input–output Jacobian (max)", M.INPUT_JAC_MAX, None, False),
        (f"trained loss: {loss} (solid train, dashed test)", M.TRAIN_LOSS, M.TEST_LOSS, False),
        ("plain cross-entropy (solid train, dashed test)", M.TRAIN_CE, M.TEST_CE, False),
        ("accuracy % (solid train, dashed test)", M.TRAIN_ACC, M.TEST_ACC, True),
    ]
    return [p for p in panels if p[1] in history and (p[1] != M.TRAIN_CE or ce_differs)]


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
    full = [c for c in columns if history[c].notna().all()]
    if full:  # the columns logged on every row: one groupby for all of them
        rows = history.loc[dense.index, ["run", "step", *full]]
        label = values.reindex(rows["run"]).to_numpy()
        stats = rows[full].groupby([label, rows["step"].to_numpy()]).agg(["mean", "std"])
        out.update({c: stats[c] for c in full})
    for c in columns:
        if c in out:
            continue
        rows = thin(history.loc[history[c].notna(), ["run", "step", c]], max_points)
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


def _grid(plt, n: int, width: float = 4.2, height: float = 3.1):
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes, nrows


def _legend_on_top(fig, axes, hue: str, n: int, nrows: int, title: str) -> None:
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles, labels, title=hue, loc="upper center", ncols=min(8, n), frameon=False, bbox_to_anchor=(0.5, 1.0)
        )
    fig.suptitle(title, y=1.0 + 0.12 / nrows, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.16 / nrows))


def trajectories(
    history: pd.DataFrame, runs: pd.DataFrame, hue: str, out_dir: Path, name: str, title: str
) -> Optional[Figure]:
    """`history`: wide per-run rows (run index, step, metrics); `runs` indexed by run index with column `hue`."""
    plt, sns = _plt()
    values = runs[hue].map(label)
    history = with_edge(history)
    panels = trajectory_panels(history, loss_names(runs))
    columns = [c for c in dict.fromkeys(x for p in panels for x in (p[1], *_extras(p[2]))) if c in history]
    stats = trajectory_stats(history, values, columns)
    panels = [p for p in panels if p[1] in stats]
    if not panels:
        return None
    order = sorted(values.loc[values.index.intersection(history["run"].unique())].unique(), key=_natural)
    palette = dict(zip(order, sns.color_palette("viridis", len(order))))
    fig, axes, nrows = _grid(plt, len(panels))
    for ax, (panel_title, metric, extra, percent) in zip(axes.flat, panels):
        scale = 100 if percent else 1
        for value in order:
            color = palette[value]
            line = _of(stats[metric], value) * scale
            ax.plot(line.index, line["mean"], color=color, linewidth=1.2, label=value)
            ax.fill_between(
                line.index, line["mean"] - line["std"], line["mean"] + line["std"], color=color, alpha=0.2, linewidth=0
            )
            if isinstance(extra, str) and extra in stats:
                dashed = _of(stats[extra], value) * scale
                ax.plot(dashed.index, dashed["mean"], color=color, linestyle="--", linewidth=1.0)
            elif isinstance(extra, tuple) and all(e in stats for e in extra):
                low, high = _of(stats[extra[0]], value)["mean"], _of(stats[extra[1]], value)["mean"]
                low, high = low.align(high, join="inner")
                ax.fill_between(low.index, low, high, color=color, alpha=0.2, linewidth=0)
        if metric == EDGE:
            ax.axhline(1.0, color="k", linestyle="--", linewidth=0.9)
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(metric + (" (%)" if percent else ""))
        if not percent:  # (a companion drawn on the same axis, such as the threshold, counts for the scale)
            companions = [stats[e]["mean"] for e in _extras(extra) if e in stats and isinstance(extra, str)]
            readable_scale(ax, np.concatenate([stats[metric]["mean"].to_numpy(), *[c.to_numpy() for c in companions]]))
    _legend_on_top(fig, axes, hue, len(order), nrows, title)
    return _save(
        fig,
        out_dir,
        name,
        title,
        f"Against the step, one colour per value of {hue} (mean over the runs sharing it, band ± 1 sd). "
        "Sharpness: the dashed line is the stability threshold of the run's learning rate (2/η for GD); "
        "sharpness / threshold = 1 is the edge of stability. Accuracies in %.",
    )


def spectrum(history: pd.DataFrame, runs: pd.DataFrame, out_dir: Path, name: str, title: str, max_runs: int = 6):
    """The tracked top-k Hessian eigenvalues (sharpness_k_1 … sharpness_k_K) of up to `max_runs` runs (the first
    seed of each setting first), each against the step with the run's threshold; None when k = 1 throughout."""
    plt, sns = _plt()
    columns = sorted((c for c in history if c.startswith(M.SHARPNESS_K + "_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    if len(columns) < 2:
        return None
    has = history.dropna(subset=[columns[1]])["run"].unique()
    chosen = [r for r in runs.sort_values("seed" if "seed" in runs else "run", kind="stable").index if r in has]
    chosen = chosen[:max_runs]
    if not chosen:
        return None
    fig, axes, nrows = _grid(plt, len(chosen), 4.0, 3.0)
    colours = sns.color_palette("rocket", len(columns))
    for ax, run in zip(axes.flat, chosen):
        mine = thin(history[history["run"] == run], MAX_POINTS)
        for i, (c, colour) in enumerate(zip(columns, colours), 1):
            rows = mine.dropna(subset=[c])
            ax.plot(rows["step"], rows[c], color=colour, linewidth=1.0, label=f"λ_{i}")
        if M.THRESHOLD in mine:
            t = mine[["step", M.THRESHOLD]].dropna()
            ax.plot(t["step"], t[M.THRESHOLD], color="k", linestyle="--", linewidth=0.9, label="threshold")
        ax.set_title(str(runs.loc[run, "run"]), fontsize=7)
        ax.set_xlabel("step")
        ax.set_ylabel("eigenvalue")
        readable_scale(ax, mine[columns].to_numpy())
    _legend_on_top(fig, axes, "tracked eigenvalues", len(columns) + 1, nrows, title)
    return _save(
        fig,
        out_dir,
        name,
        title,
        f"The top {len(columns)} Hessian eigenvalues tracked by the sharpness group (metrics.sharpness_k) of "
        f"{len(chosen)} run(s), with the stability threshold (dashed).",
    )


def _natural(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


# ------------------------------------------------------------------------------------------ final metrics
MARKERS = ("o", "X", "s", "P", "D", "^", "v", "<", ">", "p", "*", "h")


def finals(runs: pd.DataFrame, x: str, hue: Optional[str], out_dir: Path, name: str, title: str) -> Optional[Figure]:
    """Final metrics against swept hyperparameter `x`, colour and marker by `hue`, markers at every swept value,
    ± 1 sd bars; the sharpness panel carries the mean stability threshold per value of x (paper 002 Figs. 2–5).
    The means and sds come from one pandas groupby per panel (seaborn's own aggregation took 2.5 s a figure at
    1,000 runs)."""
    plt, sns = _plt()
    metrics = present(runs, FINAL_PANELS)
    if not metrics or x not in runs:
        return None
    data = runs.copy()
    numeric_x = pd.to_numeric(data[x], errors="coerce").notna().all()
    data[x] = pd.to_numeric(data[x]) if numeric_x else data[x].map(label)
    data["_hue"] = data[hue].map(label) if hue else ""
    order = sorted(data["_hue"].unique(), key=_natural)
    palette = dict(zip(order, sns.color_palette("viridis", len(order)) if hue else ["C0"]))
    xs = sorted(data[x].unique(), key=lambda v: _natural(label(v))) if not numeric_x else sorted(data[x].unique())
    position = {v: i for i, v in enumerate(xs)}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        scale = 100 if metric in PERCENT else 1
        values = pd.to_numeric(data[metric], errors="coerce") * scale
        stats = values.groupby([data["_hue"], data[x]]).agg(["mean", "std"])
        for k, value in enumerate(order):
            if value not in stats.index.get_level_values(0):
                continue
            line = stats.xs(value, level=0)
            where = line.index.to_numpy() if numeric_x else [position[v] for v in line.index]
            ax.errorbar(
                where,
                line["mean"],
                yerr=line["std"].fillna(0),
                color=palette[value],
                marker=MARKERS[k % len(MARKERS)],
                markersize=4,
                linewidth=1.2,
                capsize=2,
                label=value if hue else None,
            )
        if metric == M.SHARPNESS and M.THRESHOLD in data:
            t = pd.to_numeric(data[M.THRESHOLD], errors="coerce").groupby(data[x]).mean().dropna()
            if len(t):
                where = t.index.to_numpy() if numeric_x else [position[v] for v in t.index]
                ax.plot(where, t.to_numpy(), color="k", linestyle="--", linewidth=1.0, label="threshold (2/η)")
        if numeric_x:
            swept_log_axis(ax, data[x])
        else:
            ax.set_xticks(range(len(xs)), [label(v) for v in xs])
        shown = [values]
        if metric == M.SHARPNESS and M.THRESHOLD in data:
            shown.append(pd.to_numeric(data[M.THRESHOLD], errors="coerce"))
        readable_scale(ax, np.concatenate([v.to_numpy(dtype=float) for v in shown]))
        ax.set_title(metric + (" (%)" if scale == 100 else ""), fontsize=9)
        ax.set_ylabel(metric + (" (%)" if scale == 100 else ""))
        ax.set_xlabel(x)
        if metric == M.SHARPNESS and ax is not axes.flat[-1] and M.THRESHOLD in data:
            handles = [h for h, t in zip(*ax.get_legend_handles_labels()) if t == "threshold (2/η)"]
            ax.legend(handles=handles, fontsize=6, loc="best")
    if hue:
        handles, labels = axes.flat[-1].get_legend_handles_labels()
        keep = [(h, t) for h, t in zip(handles, labels) if t in order]
        axes.flat[-1].legend(
            [h for h, _ in keep],
            [t for _, t in keep],
            title=hue,
            loc="upper left",
            bbox_to_anchor=(1.02, 1),
            frameon=False,
        )
    fig.suptitle(title, y=1.04, fontsize=11)
    fig.tight_layout()
    return _save(
        fig,
        out_dir,
        name,
        title,
        f"Final values against {x}"
        + (f", colour and marker by {hue}" if hue else "")
        + "; mean over seeds with ± 1 sd bars; sharpness panel: dashed, the stability threshold (2/η for GD). "
        "Accuracies in %.",
    )


def heatmap(
    runs: pd.DataFrame, rows: str, cols: str, metric: str, out_dir: Path, name: str, title: str
) -> Optional[Figure]:
    """Mean final `metric` over the (rows × cols) grid; the number of runs per cell in brackets when it varies."""
    plt, sns = _plt()
    if metric not in runs:
        return None
    data = runs[[rows, cols]].copy()
    for k in (rows, cols):
        data[k] = data[k].map(lambda v: v if isinstance(v, (int, float, np.number)) else label(v))
    data[metric] = pd.to_numeric(runs[metric], errors="coerce")
    mean = data.pivot_table(index=rows, columns=cols, values=metric, aggfunc="mean")
    count = data.pivot_table(index=rows, columns=cols, values=metric, aggfunc="count").reindex_like(mean)
    if mean.empty or mean.isna().all().all():
        return None
    mean.index = [label(v) for v in mean.index]
    mean.columns = [label(v) for v in mean.columns]
    count.index, count.columns = mean.index, mean.columns
    scale = 100 if metric in PERCENT else 1
    counts = count.fillna(0).astype(int)
    same = counts.to_numpy().min() == counts.to_numpy().max()
    labels = (mean * scale).map(lambda v: "–" if pd.isna(v) else f"{v:.3g}")
    if not same:
        labels = labels + counts.map(lambda n: f"\n({n})")
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
    ax.set_ylabel(rows)
    ax.set_xlabel(cols)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    n_note = f"n = {counts.to_numpy().max()} run(s) per cell" if same else "runs per cell in brackets"
    return _save(fig, out_dir, name, title, f"Mean final {metric} per ({rows}, {cols}) cell; {n_note}.")
