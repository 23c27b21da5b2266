"""index.html: one self-contained page (figures embedded as base64 PNG, no external resources) with the
sweep status, the tables, the figures, the warnings and how the report was generated. No torch."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import pandas as pd

from ijr_cli.report.figures import Figure
from ijr_cli.sweep import state as sweep_state

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { margin-top: 1.6rem; }
.scroll { width: fit-content; max-width: 100%; overflow: auto; max-height: 36rem; margin: .6rem 0;
          border: 1px solid #eee; }
table { border-collapse: collapse; font-size: .82rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; } td.text, th.text { text-align: left; }
nav.toc { background: #fafafa; border: 1px solid #e4e4e4; padding: .4rem 1rem; font-size: .9rem; }
nav.toc ul { margin: .2rem 0; padding-left: 1.2rem; } nav.toc li { margin: .1rem 0; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
.counts span { display: inline-block; margin-right: 1rem; padding: .2rem .6rem; border-radius: .3rem; }
.COMPLETED { background: #dff3df; } .RUNNING { background: #e3ecfb; } .FAILED { background: #f9dcdc; }
.DIVERGED { background: #fbeed5; } .MISSING { background: #eee; }
pre, code { background: #f6f6f6; font-size: .85rem; } pre { padding: .6rem; overflow-x: auto; }
.warn { color: #8a4b00; }
.charts { display: flex; flex-wrap: wrap; gap: .4rem; } svg.chart { background: #fff; border: 1px solid #eee; }
.chart-title { font-size: 10px; fill: #333; } .tick { font-size: 9px; fill: #555; }
.plot-area { fill: none; stroke: #ddd; } .mark { stroke: #888; stroke-dasharray: 2 2; } .axis { stroke: #999; }
.pc-line { fill: none; stroke: #4c72b0; stroke-opacity: .35; stroke-width: 1; }
path.picked, .pc-line.picked { stroke: #d62728 !important; stroke-opacity: 1 !important; opacity: 1 !important;
  stroke-width: 2.2 !important; } path.faded { display: none; }
thead input.filter { width: 100%; box-sizing: border-box; font-size: .75rem; min-width: 4rem; }
th[aria-sort] { cursor: pointer; } th[aria-sort='ascending']::after { content: ' ▲'; }
th[aria-sort='descending']::after { content: ' ▼'; } tr[hidden] { display: none; }
.caution { color: #8a4b00; }
"""


def figure_label(entry) -> str:
    """'paper 000 Fig. 3', or 'the edge of stochastic stability (Andreyev & Beneventano 2024)'."""
    return f"paper {entry.paper} {entry.figure}" if entry.paper.isdigit() else f"{entry.figure} ({entry.paper})"


def _script() -> str:
    """explorer.js (the page scripts), embedded in every page."""
    from pathlib import Path

    return (Path(__file__).with_name("explorer.js")).read_text()


SCRIPT = None


def script() -> str:
    global SCRIPT
    if SCRIPT is None:
        SCRIPT = _script()
    return SCRIPT


def runs_table_html(runs: pd.DataFrame, links: Dict[int, str], columns: List[str], percent=()) -> str:
    """The interactive runs table: a link to each run's page, a checkbox to select it, its sweep, status and
    `columns`; a filter box under every heading ('0.1', '>0.5', '<=200', '!text' or a substring); sortable by a
    click on a heading (explorer.js). Each numeric cell carries its exact value in data-v."""
    from ijr_cli.core.humanize import value as text_of

    heads = ["", "run", "sweep", "status", *columns]
    names = "".join(
        f"<th class='text{' nosort' if i == 0 else ''}' aria-sort='none'>{html.escape(h)}"
        f"{' (%)' if h in percent else ''}</th>"
        for i, h in enumerate(heads)
    )
    filters = "<th class='nosort'></th>" + "".join(
        f"<th class='nosort'><input class='filter' data-col='{i}' placeholder='filter' aria-label='filter "
        f"{html.escape(h)}'></th>"
        for i, h in enumerate(heads)
        if i > 0
    )
    cells_of = {}  # column -> its cells' html, built per column (vectorised): 1,000 runs in milliseconds
    for c in columns:
        v = runs[c] if c in runs else pd.Series(None, index=runs.index, dtype=object)
        number = pd.to_numeric(v, errors="coerce")
        if number.notna().any() and (number.notna() | v.isna()).all():
            shown = number * (100 if c in percent else 1)
            texts = [
                "–" if pd.isna(x) else (f"{x:.2f}" if c in percent else text_of(round_sig(x))) for x in shown.tolist()
            ]
            exact = ["" if pd.isna(x) else repr(float(x)) for x in shown.tolist()]
            cells_of[c] = [f"<td data-v='{e}'>{html.escape(t)}</td>" for e, t in zip(exact, texts)]
        else:
            texts = [html.escape(text_of(x)) for x in v.tolist()]
            cells_of[c] = [f"<td class='text' data-v='{t}'>{t}</td>" for t in texts]
    body = []
    for k, (i, row) in enumerate(zip(runs.index, runs[["run_id", "run", "sweep", "status"]].itertuples(index=False))):
        run_id = html.escape(str(row.run_id))
        link = links.get(i)
        name = f"<a href='{link}'>{html.escape(str(row.run))}</a>" if link else html.escape(str(row.run))
        status = html.escape(str(row.status))
        cells = [
            f"<td><input type='checkbox' class='pick' value='{run_id}' aria-label='select {run_id}'></td>",
            f"<td class='text' data-v='{html.escape(str(row.run))}'>{name}</td>",
            f"<td class='text'>{html.escape(str(row.sweep))}</td>",
            f"<td class='text {status}'>{status}</td>",
            *(cells_of[c][k] for c in columns),
        ]
        body.append(f"<tr data-run='{run_id}'>" + "".join(cells) + "</tr>")
    return (
        f"<p id='runs-table-count'></p><div class='scroll'><table id='runs-table'><thead><tr class='names'>{names}"
        f"</tr><tr class='filters'>{filters}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def round_sig(v, digits: int = 4):
    """A float to `digits` significant digits (integers unchanged)."""
    if isinstance(v, (int, np.integer)) or pd.isna(v) or v == 0:
        return v
    return float(f"{float(v):.{digits}g}")


@dataclass
class SweepSection:
    name: str
    path: str
    states: List[sweep_state.JobState]
    tables: List[tuple] = field(default_factory=list)  # (title, note, DataFrame)
    figures: List[Figure] = field(default_factory=list)
    paper_figures: List[Figure] = field(default_factory=list)  # from the figure registry
    not_drawn: list = field(default_factory=list)  # registry.NotDrawn: the paper figures this sweep cannot draw
    kind: str = "sweep"  # or "comparison" (--compare: every sweep side by side; no status of its own)
    compare_keys: list = field(default_factory=list)


def table_html(table: pd.DataFrame) -> str:
    """A DataFrame as an HTML table; text columns left-aligned, floats with 4 significant digits."""
    head = "".join(f"<th class='text'>{html.escape(str(c))}</th>" for c in table.columns)
    body = []
    for _, row in table.iterrows():
        cells = []
        for value in row:
            if isinstance(value, float):
                text, cls = ("–" if pd.isna(value) else f"{value:.4g}"), ""
            else:
                text, cls = ("–" if value is None else str(value)), " class='text'"
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def figure_html(fig: Figure) -> str:
    data = base64.b64encode(fig.png.read_bytes()).decode("ascii")
    return (
        f"<figure><img alt='{html.escape(fig.title)}' src='data:image/png;base64,{data}'>"
        f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)} "
        f"(<code>figures/{html.escape(fig.pdf.name)}</code>)</figcaption></figure>"
    )


def status_html(states: List[sweep_state.JobState]) -> str:
    counts = sweep_state.counts(states)
    parts = [
        "<p class='counts'>" + "".join(f"<span class='{b}'>{b.lower()}: {n}</span>" for b, n in counts.items()) + "</p>"
    ]
    pending = [s for s in states if s.bucket != "COMPLETED"]
    if pending:
        rows = pd.DataFrame(
            [
                {
                    "job": s.name,
                    "state": s.bucket,
                    "step": s.step if s.step is not None else "–",
                    "detail": s.detail,
                    "overrides": " ".join(s.overrides),
                }
                for s in pending
            ]
        )
        parts.append(table_html(rows.astype(str)))
    return "".join(parts)


class _Outline:
    """Headings with anchors, collected as the page is written, for its table of contents."""

    def __init__(self):
        self.entries: List[tuple] = []  # (level, anchor, text)

    def h(self, level: int, text: str, code: bool = False) -> str:
        anchor = f"s{len(self.entries) + 1}"
        self.entries.append((level, anchor, text))
        shown = f"<code>{html.escape(text)}</code>" if code else html.escape(text)
        return f"<h{level} id='{anchor}'>{shown}</h{level}>"

    def nav(self) -> str:
        out, depth = ["<nav class='toc'><b>Contents</b>"], 1
        for level, anchor, text in self.entries:
            while depth < level:
                out.append("<ul>")
                depth += 1
            while depth > level:
                out.append("</ul>")
                depth -= 1
            out.append(f"<li><a href='#{anchor}'>{html.escape(text)}</a></li>")
        out += ["</ul>"] * (depth - 1) + ["</nav>"]
        return "".join(out)


def page(
    title: str,
    sections: List[SweepSection],
    general: List[tuple],
    theory: List[Figure],
    warnings: List[str],
    generated: Dict[str, str],
    files: List[str],
    explorer: str = "",
) -> str:
    """The whole page: title, a table of contents, then per sweep its status, tables and figures.
    `general`: (title, note, DataFrame) tables across sweeps; `generated`: label -> text."""
    o = _Outline()
    body = []
    if warnings:
        body.append(
            o.h(2, "Warnings") + "<ul class='warn'>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>"
        )
    for s in sections:
        if s.kind == "comparison":
            body.append(o.h(2, f"Comparison: {s.name}") + f"<p><code>{html.escape(s.path)}</code></p>")
        else:
            body.append(o.h(2, f"Sweep {s.name}") + f"<p><code>{html.escape(s.path)}</code></p>")
            body.append(o.h(3, f"{s.name}: status") + status_html(s.states))
        for t_title, note, table in s.tables:
            body.append(
                o.h(3, f"{s.name}: {t_title}") + (f"<p>{html.escape(note)}</p>" if note else "") + table_html(table)
            )
        if s.figures:
            body.append(o.h(3, f"{s.name}: figures") + "".join(figure_html(f) for f in s.figures))
        if s.paper_figures or s.not_drawn:
            body.append(o.h(3, f"{s.name}: the papers' figures") + "".join(figure_html(f) for f in s.paper_figures))
        if s.not_drawn:
            body.append(
                "<p>Not drawn from this sweep:</p><ul class='notdrawn'>"
                + "".join(
                    f"<li><b>{html.escape(figure_label(n.entry))}</b> "
                    f"({html.escape(n.entry.what)}): {html.escape(n.reason)}</li>"
                    for n in s.not_drawn
                )
                + "</ul>"
            )
    if explorer:
        body.append(o.h(2, "Runs: sort, filter, select") + explorer)
    for t_title, note, table in general:
        body.append(o.h(2, t_title) + (f"<p>{html.escape(note)}</p>" if note else "") + table_html(table))
    if theory:
        body.append(o.h(2, "Theory figures (paper 000)") + "".join(figure_html(f) for f in theory))
    body.append(
        o.h(2, "How this report was generated")
        + "<div class='scroll'><table>"
        + "".join(
            f"<tr><th class='text'>{html.escape(k)}</th><td class='text'><code>{html.escape(v)}</code></td></tr>"
            for k, v in generated.items()
        )
        + "</table></div>"
    )
    total = sum(len(s.states) for s in sections)
    n_sweeps = sum(s.kind == "sweep" for s in sections)
    intro = (
        f"<p>{n_sweeps} sweep(s), {total} job(s). Tables are mean ± sample standard deviation over the "
        "runs of a group, with the number of runs n; accuracies in %. Files beside this page: "
        + ", ".join(f"<code>{html.escape(f)}</code>" for f in files)
        + ".</p>"
    )
    head = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
    )
    tail = f"<script>{script()}</script></body></html>" if explorer else "</body></html>"
    return "\n".join([head, intro, o.nav(), *body, tail])
