"""`ijr-report PATH...`: run directories → tables, figures and one self-contained report page.

Writes into PATH/report/ (or --out), replacing it as a whole only when everything has been written:

  index.html                 the page: status, tables, figures (embedded), warnings, how it was generated
  runs.parquet, runs.csv     one row per run (ijr_cli.collect)
  history.parquet            every logged value: run, step, metric, value
  tables/*.md|tex|csv        aggregate (per sweep, grouped by the swept hyperparameters or --group-by),
                             table1 (paper 000 Table 1 layout), correlations (paper 002)
  figures/*.png|pdf          trajectories, spectrum, final metrics, heatmaps (+ --theory: paper 000 Figs. 1, 2)
  report.json                the command, versions, counts, warnings and timings
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from ijr_cli.core.errors import StorageError, UserError
from ijr_cli.report import tables
from ijr_cli.report.build import ReportOptions, build

PROG = "ijr-report"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Tables, figures and a report page from ijr run directories "
        "(a sweep directory, several, or all of outputs/).",
    )
    ap.add_argument("paths", nargs="+", type=Path, help="sweep directories, run directories, or folders holding them")
    ap.add_argument("--out", type=Path, help="output directory (default: PATH/report for a single PATH)")
    ap.add_argument(
        "--group-by",
        nargs="+",
        metavar="KEY",
        help="columns to aggregate over (default: each sweep's swept hyperparameters but the seed), "
        "e.g. optimizer.lr regularizer",
    )
    ap.add_argument(
        "--metrics",
        nargs="+",
        metavar="NAME",
        help=f"final metrics in the aggregate tables (default: those logged among {', '.join(tables.KEY_METRICS)})",
    )
    ap.add_argument(
        "--family-by",
        default="family",
        metavar="COLUMN",
        help="the column that names a run's regulariser family in the correlation table (default: family)",
    )
    ap.add_argument(
        "--no-figures", action="store_true", help="tables and the page only, without figures and run pages (fast)"
    )
    ap.add_argument(
        "--compare",
        action="store_true",
        help="also overlay the sweeps in the same tables and figures (e.g. a baseline study and its EJR study, or a "
        "packed sweep and its unpacked twin), with the paired differences of matching runs",
    )
    ap.add_argument(
        "--theory",
        action="store_true",
        help="also paper 000's synthetic theory figures (Fig. 1's secular function, Fig. 2's bounds on random p)",
    )
    ap.add_argument("--jobs", type=int, default=0, help="threads reading metrics files (default: one per CPU)")
    ap.add_argument(
        "--figure-jobs",
        type=int,
        default=0,
        metavar="N",
        help="processes drawing figures (default: one per CPU; 1: draw in the report's own process)",
    )
    ap.add_argument("--no-slurm", action="store_true", help="do not ask squeue for the state of SLURM jobs")
    ap.add_argument(
        "--to",
        choices=("mlflow", "tensorboard"),
        help="instead of a report, write the finished runs into MLflow (one MLflow run per ijr run) or TensorBoard "
        "(each run's tb/); a rerun updates them, never duplicates (README: Watching runs)",
    )
    ap.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="--to mlflow: the tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<outputs>/mlflow.db)",
    )
    ap.add_argument("--experiment", metavar="NAME", help="--to mlflow: the experiment (default: each sweep's name)")
    args = ap.parse_args(argv)
    if (args.tracking_uri or args.experiment) and args.to != "mlflow":
        ap.error("--tracking-uri and --experiment go with --to mlflow")
    return args


def log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.to:
        return export_runs(args)
    try:
        result = build(
            ReportOptions(
                paths=args.paths,
                out=args.out,
                group_by=args.group_by,
                metrics=args.metrics,
                family_by=args.family_by,
                figures=not args.no_figures,
                theory=args.theory,
                compare=args.compare,
                jobs=args.jobs,
                figure_jobs=args.figure_jobs,
                query_slurm=not args.no_slurm,
                command=" ".join([PROG, *argv]),
            ),
            log,
        )
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was replaced", file=sys.stderr)
        raise SystemExit(130) from None
    except OSError as exc:  # a full disk, a read-only or unwritable --out: the previous report is left as it was
        error = StorageError(exc.filename or args.out or "the report directory", exc)
        print(f"{PROG}: error: {error}; the previous report (if any) is unchanged", file=sys.stderr)
        raise SystemExit(StorageError.exit_code) from None
    print(
        f"{PROG}: {result['runs']} run(s) -> {result['out'] / 'index.html'}"
        + (f" ({result['warnings']} warning(s))" if result["warnings"] else "")
    )


def export_runs(args: argparse.Namespace) -> None:
    """`--to mlflow|tensorboard`: the finished runs below the paths into the tracker (`ijr_cli.track.export`)."""
    from tqdm import tqdm

    from ijr_cli.report.collect import find_run_dirs
    from ijr_cli.track.export import export  # (torch, for TensorBoard's SummaryWriter: only on this path)

    found = find_run_dirs(args.paths)
    if not found:
        print(f"{PROG}: error: no run directory below {' '.join(map(str, args.paths))}", file=sys.stderr)
        raise SystemExit(2)
    runs = sorted(found)
    bar = tqdm(total=len(runs), desc=f"{PROG}: --to {args.to}", unit="run", disable=None, file=sys.stderr)
    try:
        result = export(
            runs,
            args.to,
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
            progress=lambda done, total: bar.update(1),
        )
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        bar.close()
    for run, why in result.skipped.items():
        log(f"{run}: {why}; not exported")
    made = f" ({result.created} new, {len(result.exported) - result.created} updated)" if args.to == "mlflow" else ""
    print(f"{PROG}: {len(result.exported)} run(s) -> {args.to}{made}: {result.where or 'nothing written'}")
