"""One report: every run below the paths → runs/history tables, aggregate tables, figures, index.html, report.json.

Everything is written into a temporary sibling directory, then swapped in for the output directory as a whole, so
a failed report leaves the previous one (never half-written).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, List, Optional

import pandas as pd

from ijr_cli.core import metric_names as M
from ijr_cli.core import records
from ijr_cli.core.errors import UserError
from ijr_cli.report import collect, page, tables
from ijr_cli.sweep import state as sweep_state


@dataclass
class ReportOptions:
    """What `ijr-report` was asked for (its options, as plain values)."""

    paths: List[Path]
    out: Optional[Path] = None  # default: PATH/report for a single PATH
    group_by: Optional[List[str]] = None  # default: each sweep's swept hyperparameters but the seed
    metrics: Optional[List[str]] = None  # default: those of tables.KEY_METRICS that the runs logged
    family_by: str = "family"
    figures: bool = True
    theory: bool = False  # also paper 000's synthetic Figs. 1-2 (no run's data)
    compare: bool = False  # overlay the sweeps in the same tables and figures
    run_pages: Optional[bool] = None  # a page per run (default: with the figures; they are charts too)
    jobs: int = 0  # threads reading metrics files (0: one per CPU)
    figure_jobs: int = 0  # processes drawing figures (0: one per CPU; 1: in this process)
    query_slurm: bool = True
    command: str = "ijr-report"  # as typed, for the page's "how it was generated"


def check_paths(paths: List[Path], out: Optional[Path], jobs: int = 0) -> Path:
    if jobs < 0:
        raise UserError(f"--jobs {jobs}: give a number of threads >= 1, or 0 for one per CPU")
    for p in paths:
        if not p.exists():
            hint = (
                sweep_state.tiny_hint(Path(p)).replace("make status", "make report").replace("ijr-status", "ijr-report")
            )
            raise UserError(
                f"{p} does not exist{hint or '; give a sweep directory, a run directory or a folder holding them'}"
            )
        if not p.is_dir():
            raise UserError(f"{p} is not a directory; give a sweep directory, a run directory or a folder holding them")
    if out is None:
        if len(paths) > 1:
            raise UserError(f"{len(paths)} paths given; say where the report goes with --out DIR")
        out = paths[0] / "report"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write to {parent}; choose another --out")
    return out


def build(args: ReportOptions, log: Callable[[str], None] = lambda message: None) -> dict:
    """Everything into a temporary sibling directory, then swapped in for `out` (never half-written)."""
    t0 = time.perf_counter()
    out = check_paths(args.paths, args.out, args.jobs)
    if args.figure_jobs < 0:
        raise UserError(f"--figure-jobs {args.figure_jobs}: give a number of processes >= 1, or 0 for one per CPU")
    data = collect.collect(args.paths, jobs=args.jobs, query_slurm=args.query_slurm)
    runs = data.runs
    if runs.empty:
        detail = (
            f" ({len(data.warnings)} director{'y' if len(data.warnings) == 1 else 'ies'} skipped: {data.warnings[0]})"
            if data.warnings
            else ""
        )
        raise UserError(
            f"no ijr run directories under {', '.join(map(str, args.paths))}{detail}; a run directory "
            "holds status.json or metrics.jsonl (ijr-train writes them)"
        )
    check_columns(runs, data.swept, args)
    if args.compare and len(data.sweep_dirs) < 2:
        found = ", ".join(data.sweep_dirs) or "none"
        raise UserError(f"--compare needs at least two sweeps; found {len(data.sweep_dirs)} ({found})")
    for w in data.warnings:
        log(f"warning: {w}")
    timings = {"collect_s": time.perf_counter() - t0}
    log(f"read {len(runs)} run(s) in {len(data.sweep_dirs)} sweep(s) ({timings['collect_s']:.1f} s)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700); the report is for collaborators too
    try:
        t1 = time.perf_counter()
        with ThreadPoolExecutor(1) as pool:  # polars writes history.parquet without the GIL while pandas works
            history = pool.submit(
                collect.write_history, data.wide, dict(zip(runs.index, runs["run_id"])), tmp / "history.parquet"
            )
            (tmp / "tables").mkdir()
            runs_out = runs.copy()
            for c in runs_out.columns:  # mixed-type swept columns (numbers in one sweep, text in another) as text
                if runs_out[c].dtype == object:
                    runs_out[c] = runs_out[c].map(lambda v: v if v is None or isinstance(v, str) else str(v))
            runs_out.to_parquet(tmp / "runs.parquet", index=False)
            runs.to_csv(tmp / "runs.csv", index=False)
            sections, general = write_tables(data, args, tmp / "tables")
            n_history = history.result()
        timings["tables_s"] = time.perf_counter() - t1
        log(f"tables written ({timings['tables_s']:.1f} s; history: {n_history:,} values)")
        theory, explorer = [], []
        with_pages = args.figures if args.run_pages is None else args.run_pages

        def pages_and_explorer():  # (in this process, while the figures are drawn in others)
            t3 = time.perf_counter()
            explorer.append(write_run_pages_and_explorer(data, tmp, log, with_pages=with_pages))
            timings["run_pages_s" if with_pages else "explorer_s"] = time.perf_counter() - t3
            if with_pages:
                log(f"{len(runs)} run page(s) written ({timings['run_pages_s']:.1f} s)")

        if args.figures:
            t2 = time.perf_counter()
            jobs = args.figure_jobs or os.cpu_count() or 1
            theory = write_figures(
                data, sections, tmp / "figures", log, theory=args.theory, jobs=jobs, meanwhile=pages_and_explorer
            )
            timings["figures_s"] = time.perf_counter() - t2
            count = sum(len(s.figures) + len(s.paper_figures) for s in sections) + len(theory)
            log(f"{count} figures drawn ({timings['figures_s']:.1f} s, {jobs} process(es), run pages alongside)")
        else:
            pages_and_explorer()
        explorer = explorer[0]
        generated = generation_facts(args.command, out, data, timings)
        files = (
            ["runs.parquet", "runs.csv", "history.parquet", "tables/", "report.json"]
            + (["figures/"] if args.figures else [])
            + (["runs/"] if with_pages else [])
        )
        title = "ijr report: " + data.title
        (tmp / "index.html").write_text(
            page.page(title, sections, general, theory, data.warnings, generated, files, explorer)
        )
        summary = {
            "command": generated["command"],
            "generated": generated["generated"],
            "runs": len(runs),
            "history_values": n_history,
            "sweeps": {s.name: sweep_state.counts(s.states) for s in sections if s.kind == "sweep"},
            "warnings": data.warnings,
            "timings_s": timings,
            "versions": records.package_versions(
                ("ijr", "pandas", "polars", "pyarrow", "seaborn", "matplotlib", "scipy")
            ),
        }
        (tmp / "report.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": out, "runs": len(runs), "warnings": len(data.warnings), "timings": timings}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_dir(new: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_tables(data: collect.Collection, args, out: Path):
    """Per sweep: the aggregate and (when the runs allow) Table 1; across sweeps: the correlations."""
    runs = data.runs
    sections, md, tex, csv_parts = [], [], [], []
    if getattr(args, "compare", False):
        sections.append(write_comparison(data, args, out))
    for sweep, sweep_dir in data.sweep_dirs.items():
        sub = runs[runs["sweep"] == sweep]
        section = page.SweepSection(sweep, str(sweep_dir), data.states.get(sweep, []))
        sections.append(section)
        keys = tables.group_keys(sub, data.swept.get(sweep, []), args.group_by)
        metrics = collect.present(sub, args.metrics or tables.KEY_METRICS)
        if metrics:
            agg = tables.aggregate(sub, keys, metrics)
            shown = tables.display_aggregate(agg, keys, metrics)
            note = f"grouped by {', '.join(keys) or 'nothing (one group)'}; final values per run"
            section.tables.append(("Final metrics", note, shown))
            md.append(f"## {sweep}\n\n{note}\n\n{tables.to_markdown(shown)}\n")
            tex.append(f"% {sweep}: {note}\n{tables.to_latex(shown, caption=f'{sweep}: final metrics')}")
            csv_parts.append(agg.assign(sweep=sweep))
        t1 = tables.table1(sub, data.swept.get(sweep, []))
        if t1 is not None:
            note = (
                "paper 000 Table 1 layout: final test accuracy, ΔAcc = acc_EJR − acc_base in points, "
                "ERR = (err_base − err_EJR)/err_base, from the means"
            )
            section.tables.append(("Paper 000 Table 1: baseline vs EJR", note, t1))
            _write_all(out, f"table1_{_slug(sweep)}", t1, f"{sweep}: baseline vs EJR (paper 000 Table 1)")
    if csv_parts:
        pd.concat(csv_parts, ignore_index=True).to_csv(out / "aggregate.csv", index=False)
    (out / "aggregate.md").write_text("\n".join(md))
    (out / "aggregate.tex").write_text("\n".join(tex))
    general = []
    corr = tables.correlations(runs, family_column=args.family_by)
    if corr is not None:
        note = (
            "Kendall τ and Spearman ρ across runs between the generalisation gap and each measure's final value "
            "(paper 002 §7), per regulariser family and pooled (all); loss gap = |test CE − train CE|, "
            "acc gap = train acc − test acc; n runs; '–' below 3 runs or for a constant. 95 % intervals: "
            f"the percentile bootstrap ({tables.BOOTSTRAP} paired resamples) below {tables.CAUTION_N} runs, where "
            "the row carries a caution mark, else Fisher's z with Fieller et al.'s variance"
        )
        general.append(("Correlation with the generalisation gap (paper 002)", note, corr))
        _write_all(out, "correlations", corr, "Correlation with the generalisation gap")
    return sections, general


RUN_COLUMNS = (  # the runs table's columns after the swept keys, when logged
    M.TEST_ACC,
    M.GEN_GAP_ACC,
    M.GEN_GAP_LOSS,
    M.SHARPNESS,
    M.THRESHOLD,
    M.JAC_OP_NORM,
    M.INPUT_JAC_MAX,
    "eos_onset_step",
    "active_reg_start_step",
    "catapults",
    "last_step",
)
PARALLEL_METRICS = (M.TEST_ACC, M.GEN_GAP_LOSS, M.SHARPNESS, M.JAC_OP_NORM, M.INPUT_JAC_MAX)


def write_run_pages_and_explorer(
    data: collect.Collection, out: Path, log: Callable[[str], None], with_pages: bool = True
) -> str:
    """runs/<sweep>/<run>.html for every run (charts: drawn with the figures, not with --no-figures), and the
    index page's explorer: the runs table (sort, filter, select), parallel coordinates and every run's
    sharpness / threshold and test accuracy, selected runs highlighted (explorer.js)."""
    from ijr_cli.report import run_pages

    links = run_pages.write_run_pages(data, out, page.CSS, page.script(), log) if with_pages else {}
    swept = list(dict.fromkeys(k for keys in data.swept.values() for k in keys))
    columns = swept + [c for c in collect.present(data.runs, RUN_COLUMNS) if c not in swept]
    axes = [k for k in swept if k != tables.SEED and pd.to_numeric(data.runs[k], errors="coerce").notna().all()]
    axes += [m for m in collect.present(data.runs, PARALLEL_METRICS) if m not in axes]
    payload = run_pages.explorer_payload(data, links, axes)
    return (
        "<p>One row per run; its name opens the run's own page. Click a heading to sort; type in the box under "
        "it to filter (<code>0.1</code>, <code>&gt;0.5</code>, <code>&lt;=200</code>, <code>!text</code> or a "
        "substring); tick runs to highlight them in the charts below (filtered-out runs are hidden there).</p>"
        + page.runs_table_html(data.runs, links, columns, percent=[c for c in columns if c in tables.PERCENT])
        + "<div id='parallel' class='charts'></div><div id='overlay' class='charts'></div>"
        + run_pages.embed_json("ijr-explorer-data", payload)
    )


def write_comparison(data: collect.Collection, args, out: Path) -> page.SweepSection:
    """The sweeps side by side (--compare): finals per sweep and common key, and the paired differences of runs
    matched on every common key (a packed sweep against its unpacked twin, a baseline study against its EJR
    study with the same seeds)."""
    sweeps = list(data.sweep_dirs)
    section = page.SweepSection(" vs ".join(sweeps), ", ".join(str(p) for p in data.sweep_dirs.values()), [])
    section.kind = "comparison"
    keys = tables.common_keys(data.runs, data.swept, sweeps)
    section.compare_keys = keys
    metrics = collect.present(data.runs, args.metrics or tables.KEY_METRICS)
    if metrics:
        shown = tables.comparison(data.runs, keys, metrics)
        note = (
            f"the sweeps side by side, grouped by sweep and the keys they all swept "
            f"({', '.join(k for k in keys if k != tables.SEED) or 'none'}); final values per run"
        )
        section.tables.append(("Final metrics by sweep", note, shown))
        _write_all(out, "comparison", shown, "the sweeps side by side")
        paired = tables.paired_differences(data.runs, keys, metrics, sweeps[0])
        if paired is not None:
            note = (
                f"runs matched on {', '.join(keys)}: per sweep and metric, the pairs, the largest |sweep − "
                f"{sweeps[0]}| and its mean signed difference"
            )
            section.tables.append((f"Paired differences against {sweeps[0]}", note, paired))
            _write_all(out, "comparison_paired", paired, f"paired differences against {sweeps[0]}")
    return section


def check_columns(runs: pd.DataFrame, swept: dict, args) -> None:
    """--group-by, --metrics and --family-by must name columns of the runs table."""
    missing = [k for k in args.group_by or [] if k not in runs]
    if missing:
        keys = sorted({k for ks in swept.values() for k in ks})
        raise UserError(
            f"--group-by {' '.join(missing)}: no such column; choose among the swept keys "
            f"({', '.join(keys) or 'none'}) or runs.csv's columns"
        )
    unknown = [m for m in args.metrics or [] if m not in runs]
    if unknown:
        raise UserError(f"--metrics {' '.join(unknown)}: not logged by any run; runs.csv lists the columns")
    if args.family_by not in runs:
        raise UserError(f"--family-by {args.family_by}: no such column; runs.csv lists the columns")


def _write_all(out: Path, stem: str, table: pd.DataFrame, caption: str) -> None:
    table.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.md").write_text(tables.to_markdown(table) + "\n")
    (out / f"{stem}.tex").write_text(tables.to_latex(table, caption=caption))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_") or "all"


def write_figures(
    data: collect.Collection,
    sections,
    out: Path,
    log: Callable[[str], None] = lambda m: None,
    theory: bool = False,
    jobs: int = 1,
    meanwhile: Callable[[], None] = lambda: None,
):
    """Every figure of every sweep section, then (with `theory`) the synthetic theory figures; `log` hears
    "figure i/N name (elapsed)" as each is drawn (drawing is most of a report's time). `jobs` > 1 draws in that
    many forked processes (`_draw_all`); `meanwhile` runs in this process while they draw."""
    from ijr_cli.report import figures, registry
    from ijr_cli.report import theory as theory_figures

    planning = time.perf_counter()
    out.mkdir()
    runs = data.runs
    wide = data.wide
    planned = []  # (section or None, name, draw, the section's list it goes to)
    for section in sections:
        if getattr(section, "kind", "sweep") == "comparison":
            planned += _comparison_figures(data, section, out)
            continue
        sweep = section.name
        sub = runs[runs["sweep"] == sweep]
        keys = [k for k in data.swept.get(sweep, []) if k != tables.SEED]
        slug = _slug(sweep)
        if wide is not None:
            import polars as pl

            mine = wide if len(sub) == len(runs) else wide.filter(pl.col("run").is_in(list(sub.index)))
            everything = mine.to_pandas()
            cols = ["run", "step"] + [c for c in wide.columns if c in _TRAJECTORY_COLUMNS or _is_spectrum(c)]
            history = everything[cols]
            for k in keys or [None]:
                hue = k or "sweep"
                name = f"{slug}_trajectories_{_slug(hue)}"
                title = f"{sweep}: trajectories by {hue}"
                planned.append(
                    (section, name, partial(figures.trajectories, history, sub, hue, out, name, title), section.figures)
                )
            if any(_is_spectrum(c) for c in cols):
                name, title = f"{slug}_spectrum", f"{sweep}: tracked top Hessian eigenvalues"
                planned.append(
                    (section, name, partial(figures.spectrum, history, sub, out, name, title), section.figures)
                )
        for x in keys:
            hue = next((k for k in keys if k != x), None)
            name = f"{slug}_finals_vs_{_slug(x)}"
            title = f"{sweep}: final metrics vs {x}"
            planned.append((section, name, partial(figures.finals, sub, x, hue, out, name, title), section.figures))
        if len(keys) == 2:
            for metric in (M.TEST_ACC, M.GEN_GAP_LOSS, M.SHARPNESS):
                name = f"{slug}_heatmap_{metric}"
                title = f"{sweep}: {metric} over {keys[0]} × {keys[1]}"
                draw = partial(figures.heatmap, sub, keys[0], keys[1], metric, out, name, title)
                planned.append((section, name, draw, section.figures))
        if wide is not None:
            sweep_data = registry.SweepData(sweep, sub, everything, keys)
            drawable, section.not_drawn = registry.plan(sweep_data, len(sections) > 1, slug)
            for name, entry in drawable:
                draw = partial(_paper_figure, entry, sweep_data, out, name)
                planned.append((section, name, draw, section.paper_figures))
    drawn_theory = []
    if theory:
        planned += [(None, "paper000_fig1", partial(theory_figures.paper000_fig1, out), drawn_theory)]
        planned += [(None, "paper000_fig2", partial(theory_figures.paper000_fig2, out), drawn_theory)]
    log(f"{len(planned)} figures planned ({time.perf_counter() - planning:.1f} s)")
    started = time.perf_counter()
    entries = {e.key: e for e in registry.registry()}
    for i, (fig, (section, name, _, destination)) in enumerate(zip(_draw_all(planned, jobs, meanwhile), planned), 1):
        log(f"figure {i}/{len(planned)} {name} ({time.perf_counter() - started:.1f} s)")
        if isinstance(fig, NotDrawnFigure):
            section.not_drawn.append(registry.NotDrawn(entries[fig.key], fig.reason))
            log(f"warning: {name} not drawn: {fig.reason}")
        elif fig:
            destination.append(fig)
    return drawn_theory


_PLANNED: list = []  # the figures a forked drawing process draws (inherited, never pickled)


def _draw_one(i: int):
    return _PLANNED[i][2]()


def _draw_all(planned: list, jobs: int, meanwhile: Callable[[], None]):
    """Each planned figure's result, in order. With jobs > 1 (and fork available), `jobs` forked processes draw
    them: each inherits the data, so nothing large is pickled (only the small Figure records come back);
    matplotlib draws one figure per process at a time, so 2 cores give ~2x. The drawing code uses pandas, numpy
    and matplotlib only (never polars, whose thread pool a fork does not carry over)."""
    import multiprocessing

    global _PLANNED
    if jobs <= 1 or len(planned) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        meanwhile()
        yield from (draw() for _, _, draw, _ in planned)
        return
    _PLANNED = planned
    try:
        with multiprocessing.get_context("fork").Pool(min(jobs, len(planned))) as pool:
            results = pool.imap(_draw_one, range(len(planned)))
            meanwhile()
            yield from results
    finally:
        _PLANNED = []


def _comparison_figures(data: collect.Collection, section, out: Path) -> list:
    """Every sweep in the same figures: trajectories coloured by sweep (and by the first common key, when it has
    at most six values), and finals against each common key with one line per sweep."""
    from ijr_cli.report import figures

    if data.wide is None:
        return []
    runs = data.runs
    keys = [k for k in section.compare_keys if k != tables.SEED]
    label = runs["sweep"].astype(str)
    if keys and runs[keys[0]].nunique() <= 6:
        label = label + ", " + keys[0] + "=" + runs[keys[0]].map(figures.label)
    runs = runs.assign(comparison=label)
    cols = ["run", "step"] + [c for c in data.wide.columns if c in _TRAJECTORY_COLUMNS]
    history = data.wide.select(cols).to_pandas()
    name, title = "comparison_trajectories", f"{section.name}: trajectories"
    planned = [
        (section, name, partial(figures.trajectories, history, runs, "comparison", out, name, title), section.figures)
    ]
    for x in keys:
        name, title = f"comparison_finals_vs_{_slug(x)}", f"{section.name}: final metrics vs {x}"
        planned.append((section, name, partial(figures.finals, runs, x, "sweep", out, name, title), section.figures))
    return planned


@dataclass
class NotDrawnFigure:
    """A registry figure that failed on a sweep's data (returned by a drawing process, listed by the parent)."""

    key: str
    reason: str


def _paper_figure(entry, sweep_data, out: Path, name: str):
    """One registry figure; one that fails on this sweep's data is listed as not drawn (with the error), and the
    report goes on."""
    try:
        return entry.draw(sweep_data, out, name, entry)
    except Exception as exc:  # noqa: BLE001  (a figure's failure must not lose the report; it is named)
        import matplotlib.pyplot as plt

        plt.close("all")
        return NotDrawnFigure(entry.key, f"failed on this sweep's data: {type(exc).__name__}: {exc}")


def _is_spectrum(column: str) -> bool:
    """sharpness_k_2, sharpness_k_3, ...: the tracked eigenvalues below the top one (collect.expand_lists)."""
    prefix = M.SHARPNESS_K + "_"
    return column.startswith(prefix) and column[len(prefix) :].isdigit()


_TRAJECTORY_COLUMNS = (
    M.SHARPNESS,
    M.THRESHOLD,
    M.IMPURITY_MEAN,
    M.IMPURITY_Q25,
    M.IMPURITY_Q75,
    M.JAC_OP_NORM,
    M.IJR_PROXY,
    M.INPUT_JAC_MAX,
    M.TRAIN_LOSS,
    M.TEST_LOSS,
    M.TRAIN_CE,
    M.TEST_CE,
    M.TRAIN_ACC,
    M.TEST_ACC,
)


def generation_facts(command: str, out: Path, data: collect.Collection, timings: dict) -> dict:
    git = records.git_info(Path(__file__).resolve().parent)
    return {
        "command": command,
        "generated": records.now_iso(),
        "output": str(out.resolve()),
        "inputs": ", ".join(str(p) for p in data.sweep_dirs.values()),
        "ijr commit": f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}",
        "timings": ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
        "regenerate": command,
    }
