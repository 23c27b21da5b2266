"""Per-run pages, `runs/<sweep>/<run>.html`, linked from the runs table of index.html. No torch.

Each page is self-contained (its charts are SVG drawn by explorer.js from data embedded in the page): the run's
status and attempts (status.json), the config values in which it differs from the rest of its sweep, its final
values, every logged trajectory (thinned to MAX_POINTS per metric, with the threshold, the edge-of-stability onset,
catapults and the active-regularisation period marked) and its arrays (heatmaps at chosen steps, lines over the
steps, the PCA of the trajectory sketch).
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
from pathlib import Path
from typing import Callable, Dict, List
from urllib.parse import quote

import numpy as np
import pandas as pd

from ijr_cli.core import arrays as array_store
from ijr_cli.core import metric_names as M
from ijr_cli.core import records
from ijr_cli.core.humanize import value as text_of
from ijr_cli.report import phases

MAX_POINTS = 200  # per metric on a run page
SKIP = {"run", "step", M.ELAPSED_S, M.LR}  # logged, but not trajectories worth a chart
LOG_METRICS = {
    M.SHARPNESS,
    M.JAC_OP_NORM,
    M.JAC_FRO_SQ,
    M.JAC_U_NORM_SQ,
    M.IJR_PROXY,
    M.TRAIN_LOSS,
    M.TEST_LOSS,
    M.TRAIN_CE,
    M.TEST_CE,
    M.BATCH_LOSS,
    M.GN_SHARPNESS,
}


def page_path(sweep: str, run: str) -> Path:
    """runs/<sweep>/<run>.html (relative to the report directory)."""
    return Path("runs", *Path(sweep).parts, f"{run}.html")


def href(path: Path) -> str:
    return quote(path.as_posix())


def rounded(values: np.ndarray, digits: int = 6) -> list:
    """Finite floats to `digits` significant digits, as a JSON-ready list (vectorised)."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(v))))
        out = np.where((v != 0) & np.isfinite(scale), np.round(v * scale) / scale, v)
    if np.isfinite(out).all():
        return out.tolist()
    return [None if not math.isfinite(x) else x for x in out.tolist()]


@functools.lru_cache(maxsize=4096)
def thin_index(n: int, limit: int) -> np.ndarray:
    """`limit` evenly spaced positions of n (all of them when n <= limit)."""
    return np.arange(n) if n <= limit else np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def packed(values: np.ndarray, dtype: str = "f32") -> dict:
    """A numeric array as base64 of its little-endian float32 (or int32) bytes, decoded by explorer.js's
    `unpack`: 6x faster to write than JSON numbers for 1,000 run pages, and a third of the size."""
    kind = np.dtype("<f4") if dtype == "f32" else np.dtype("<i4")
    return {dtype: base64.b64encode(np.ascontiguousarray(values, dtype=kind).tobytes()).decode("ascii")}


def series(steps: np.ndarray, values: np.ndarray, limit: int = MAX_POINTS):
    """(x, y) of the logged (finite) values, thinned evenly to `limit` points, packed (`packed`)."""
    ok = np.isfinite(values)
    steps, values = steps[ok], values[ok]
    keep = thin_index(len(values), limit)
    return packed(steps[keep], "i32"), packed(values[keep])


def embed_json(element_id: str, payload) -> str:
    """A <script type="application/json"> block (the '</' of any text escaped, so no value closes the script)."""
    text = json.dumps(payload, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    return f"<script type='application/json' id='{element_id}'>{text}</script>"


def run_marks(row: pd.Series, frame: Dict[str, np.ndarray]) -> List[dict]:
    marks = []
    for key, text in (
        ("eos_onset_step", "edge-of-stability onset"),
        ("active_reg_start_step", "active regularisation starts"),
        ("active_reg_end_step", "active regularisation ends"),
    ):
        v = row.get(key)
        if v is not None and not pd.isna(v):
            marks.append({"x": float(v), "label": f"{text} (step {text_of(v)})"})
    loss = phases.loss_series(frame)
    if loss is not None and M.SHARPNESS in frame:
        s = phases._logged(frame, M.SHARPNESS)
        marks += [{"x": float(e.step), "label": f"catapult at step {e.step}"} for e in phases.catapults(*loss, *s)]
    return marks


def charts(frame: Dict[str, np.ndarray], marks: List[dict]) -> List[dict]:
    """One line chart per logged metric (sharpness with its threshold dashed), in the order they were logged."""
    steps = np.asarray(frame["step"])
    out = []
    for c, values in frame.items():
        if c in SKIP or c == M.THRESHOLD or not np.isfinite(values).any():
            continue
        x, y = series(steps, values)
        lines = [{"name": c, "x": x, "y": y}]
        if c == M.SHARPNESS and M.THRESHOLD in frame:
            tx, ty = series(steps, frame[M.THRESHOLD])
            lines.append({"name": "threshold", "x": tx, "y": ty, "dash": "4 3", "color": "#000"})
        out.append(
            {
                "title": c,
                "series": lines,
                "marks": marks if c in (M.SHARPNESS, M.JAC_OP_NORM) else [],
                "logY": c in LOG_METRICS,
                "w": 300,
                "h": 190,
            }
        )
    return out


def array_views(run_dir: Path, onset) -> List[dict]:
    """The run's arrays as the page draws them: matrices as heatmaps at up to four steps, vectors as lines over the
    steps (one per entry, up to 12; histograms at four steps against their bin centres), the trajectory sketch as
    its first two principal components coloured by step."""
    from ijr_cli.report.paper000 import chosen_steps, pca_2d

    if not (Path(run_dir) / array_store.INDEX_NAME).exists():
        return []
    out = []
    for name, s in sorted(array_store.read_arrays(run_dir).items()):
        values = s.values.astype(np.float64)
        if name == M.TRAJECTORY and len(s.steps) >= 3:
            xy, share = pca_2d(values)
            out.append(
                {
                    "kind": "scatter",
                    "name": f"{name}: PCA ({100 * share.sum():.0f} % of the variance)",
                    "x": rounded(xy[:, 0]),
                    "y": rounded(xy[:, 1]),
                    "c": s.steps.tolist(),
                    "xlabel": "PC1 vs PC2, colour: step",
                }
            )
        elif values.ndim == 3:
            picks = chosen_steps(s.steps, onset)
            where = [int(np.flatnonzero(s.steps == p)[0]) for p in picks]
            out.append(
                {
                    "kind": "heatmaps",
                    "name": name,
                    "steps": picks,
                    "matrices": [[rounded(r) for r in values[i]] for i in where],
                }
            )
        elif values.ndim == 2 and name in (M.JQ1_NORM_HIST, M.JQ_COS2_HIST) and s.labels:
            edges = np.asarray(s.labels, dtype=float)
            centres = ((edges[1:] + edges[:-1]) / 2).tolist()
            picks = chosen_steps(s.steps, onset)
            lines = [
                {"name": f"step {p}", "x": centres, "y": rounded(values[int(np.flatnonzero(s.steps == p)[0])])}
                for p in picks
            ]
            out.append({"kind": "lines", "name": f"{name} (against the bin centre)", "series": lines})
        elif values.ndim == 2:
            labels = s.labels or [f"{name}[{k}]" for k in range(values.shape[1])]
            keep = thin_index(len(s.steps), MAX_POINTS)
            lines = [
                {"name": str(labels[k]), "x": s.steps[keep].tolist(), "y": rounded(values[keep, k])}
                for k in range(min(values.shape[1], 12))
            ]
            out.append({"kind": "lines", "name": name, "series": lines})
    return out


def varying_keys(configs: Dict[int, dict], members: List[int]) -> List[str]:
    """The config keys whose value is not the same in every run of `members` (one pass over the runs)."""
    missing = object()
    first: Dict[str, object] = {}
    varying = set()
    for n, i in enumerate(members):
        config = configs.get(i, {})
        for k in first.keys() - config.keys():
            varying.add(k)  # absent from this run
        for k, v in config.items():
            if k not in first:
                first[k] = v
                if n:  # absent from an earlier run
                    varying.add(k)
            elif k not in varying and first.get(k, missing) != v:
                varying.add(k)
    return sorted(varying)


def config_diff(configs: Dict[int, dict], varying: List[str], run: int) -> List[tuple]:
    """(key, this run's value) for the keys that vary within the run's sweep."""
    mine = configs.get(run, {})
    return [(k, mine.get(k)) for k in varying]


def _table(rows: List[tuple], head=("key", "value")) -> str:
    body = "".join(
        f"<tr><td class='text'>{html.escape(str(k))}</td><td class='text'>{html.escape(text_of(v))}</td></tr>"
        for k, v in rows
    )
    return (
        "<div class='scroll'><table><thead><tr>" + "".join(f"<th class='text'>{h}</th>" for h in head) + "</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def render(
    row: pd.Series,
    status: dict,
    diff: List[tuple],
    finals: List[tuple],
    payload: dict,
    back: str,
    css: str,
    script: str,
) -> str:
    attempts = status.get("attempts") or []
    keys = list(dict.fromkeys(k for a in attempts for k in a))
    attempt_rows = "".join(
        "<tr>" + "".join(f"<td class='text'>{html.escape(text_of(a.get(k)))}</td>" for k in keys) + "</tr>"
        for a in attempts
    )
    attempts_html = (
        "<div class='scroll'><table><thead><tr>"
        + "".join(f"<th class='text'>{html.escape(k)}</th>" for k in keys)
        + "</tr></thead>"
        f"<tbody>{attempt_rows}</tbody></table></div>"
        if attempts
        else "<p>no attempts recorded</p>"
    )
    facts = [
        ("status", row.get("status")),
        ("detail", row.get("status_detail")),
        ("status.json", status.get("status")),
        ("steps", row.get("last_step")),
        ("wall time (s)", row.get("wall_time_s")),
        ("device", status.get("device")),
        ("dtype", status.get("dtype")),
        ("path", row.get("path")),
        ("overrides", row.get("overrides")),
    ]
    title = f"ijr run {row['run_id']}"
    return "\n".join(
        [
            f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{css}</style></head><body>",
            f"<p><a href='{back}'>← the report</a></p><h1>{html.escape(title)}</h1>",
            "<h2>Status</h2>" + _table(facts) + "<h3>Attempts</h3>" + attempts_html,
            "<h2>Config: where this run differs from its sweep</h2>"
            + (_table(diff) if diff else "<p>the same config as every other run of the sweep</p>"),
            "<h2>Final values</h2>" + _table(finals, ("metric", "final")),
            "<h2>Trajectories</h2><p>Every logged metric against the step (thinned to at most "
            f"{MAX_POINTS} points each; dashed: the threshold; grey lines: the EoS onset, the active-regularisation "
            "period and catapults, named on hover).</p><div id='trajectories' class='charts'></div>",
            "<h2>Arrays</h2>"
            + (
                "<div id='arrays' class='charts'></div>"
                if payload["arrays"]
                else "<p>none recorded (metrics=appendix_d records them)</p><div id='arrays'></div>"
            ),
            embed_json("ijr-run-data", payload),
            f"<script>{script}</script></body></html>",
        ]
    )


def write_run_pages(
    data, out: Path, css: str, script: str, log: Callable[[str], None] = lambda m: None
) -> Dict[int, str]:
    """Every run's page under out/runs/; returns run index -> its href (relative to index.html)."""
    runs = data.runs
    frames: Dict[int, Dict[str, np.ndarray]] = {}
    if data.wide is not None:
        for part in data.wide.sort(["run", "step"]).partition_by("run", maintain_order=True):
            frames[int(part["run"][0])] = {
                c: part[c].to_numpy().astype(np.float64) if c != "step" else part[c].to_numpy()
                for c in part.columns
                if c != "run"
            }
    varying = {s: varying_keys(data.configs, list(runs.index[runs["sweep"] == s])) for s in runs["sweep"].unique()}
    metric_columns = [c for c in runs.columns if data.wide is not None and c in data.wide.columns and c not in SKIP]
    links = {}
    for n, (i, row) in enumerate(runs.iterrows(), 1):
        rel = page_path(row["sweep"], row["run"])
        frame = frames.get(i, {"step": np.zeros(0, dtype=np.int64)})
        payload = {
            "charts": charts(frame, run_marks(row, frame)),
            "arrays": array_views(row["path"], row.get("eos_onset_step")),
        }
        finals = [
            (c, row[c])
            for c in metric_columns + ["best_test_acc", "eos_onset_step", *phases.PHASE_COLUMNS]
            if c in row and not pd.isna(row[c])
        ]
        status = records.read_json(Path(row["path"]) / "status.json") or {}
        diff = config_diff(data.configs, varying[row["sweep"]], i)
        back = "../" * (len(rel.parts) - 1) + "index.html"
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(row, status, diff, finals, payload, back, css, script))
        links[i] = href(rel)
        if n % 200 == 0:
            log(f"run pages {n}/{len(runs)}")
    return links


def explorer_payload(data, links: Dict[int, str], axes: List[str], limit: int = 100) -> dict:
    """What the index page's explorer draws: parallel coordinates over `axes` (numeric columns of the runs table)
    and the overlay charts (sharpness / threshold and test accuracy of every run, `limit` points each)."""
    runs = data.runs
    ids = [str(r) for r in runs["run_id"]]
    parallel = {"runs": ids, "axes": []}
    for a in axes:
        v = pd.to_numeric(runs[a], errors="coerce")
        if v.notna().sum() and v.nunique() > 0:
            parallel["axes"].append({"name": a, "values": rounded(v.to_numpy())})
    overlay = []
    if data.wide is not None:
        import polars as pl

        wanted = [(M.SHARPNESS, "sharpness / threshold (1 = the edge)", True), (M.TEST_ACC, "test accuracy", False)]
        for metric, title, edge in wanted:
            if metric not in data.wide.columns:
                continue
            cols = ["run", "step", metric] + ([M.THRESHOLD] if edge and M.THRESHOLD in data.wide.columns else [])
            if edge and len(cols) < 4:
                continue
            frame = data.wide.select(cols).sort(["run", "step"])
            if edge:
                frame = frame.with_columns(pl.col(M.THRESHOLD).forward_fill().over("run"))
                frame = frame.with_columns((pl.col(metric) / pl.col(M.THRESHOLD)).alias("_y"))
            else:
                frame = frame.with_columns(pl.col(metric).alias("_y"))
            chart = {"title": title, "logY": False, "series": []}
            for part in frame.select("run", "step", "_y").drop_nulls("_y").partition_by("run", maintain_order=True):
                i = int(part["run"][0])
                if i not in runs.index:
                    continue
                x, y = series(part["step"].to_numpy(), part["_y"].to_numpy().astype(float), limit)
                chart["series"].append(
                    {"name": str(runs.loc[i, "run_id"]), "run": str(runs.loc[i, "run_id"]), "x": x, "y": y}
                )
            overlay.append(chart)
    return {
        "parallel": parallel,
        "overlay": overlay,
        "links": {str(runs.loc[i, "run_id"]): h for i, h in links.items()},
    }
