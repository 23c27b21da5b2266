"""`ijr-report PATH... --to mlflow|tensorboard`: finished runs (COMPLETED or DIVERGED, trained with a logger or
without one) written into a tracker from their run directories, idempotently.

  mlflow        the run's MLflow run is found again (the id status.json keeps, else its `ijr.run_dir` tag) and
                receives only the steps it lacks, its tags and artifacts again; a new run otherwise. Exporting
                twice gives one MLflow run per ijr run, with each step once.
  tensorboard   the run's tb/ is written anew from metrics.jsonl (into tb.export/, then swapped in), so that
                `tensorboard --logdir SWEEP_DIR` shows every run, and a rerun leaves the same files' content.
The same logger classes as a live run write them (`tensorboard.TensorBoardLogger`, `mlflow.MlflowLogger`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import yaml

from ijr_cli.core import metric_names as M
from ijr_cli.core import records
from ijr_cli.core.config import MlflowLoggerConfig
from ijr_cli.core.status import FINISHED, read_status
from ijr_cli.track.base import EXPORTABLE, RunInfo, check_installed, scalars


@dataclass
class ExportResult:
    exported: List[Path] = field(default_factory=list)
    created: int = 0  # MLflow runs made by this export (the others existed and were updated)
    skipped: Dict[Path, str] = field(default_factory=dict)  # run directory -> why (not finished, unreadable)
    where: str = ""  # the tracking URI and experiment, or "each run's tb/"


def export(
    runs: List[Path],
    to: str,
    *,
    tracking_uri: Optional[str] = None,
    experiment: Optional[str] = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> ExportResult:
    """Each run directory into tracker `to`; a run that is not finished is skipped with the reason. A run's sweep
    is its parent directory when that is a sweep directory (as for a live run: `RunInfo.of`)."""
    if to not in EXPORTABLE:
        raise ValueError(f"--to must be one of {', '.join(EXPORTABLE)}, got {to}")
    check_installed([to])
    result = ExportResult()
    for i, run_dir in enumerate(runs):
        why = _export_run(Path(run_dir), to, tracking_uri, experiment, result)
        if why:
            result.skipped[Path(run_dir)] = why
        else:
            result.exported.append(Path(run_dir))
        progress(i + 1, len(runs))
    return result


def _export_run(
    run_dir: Path, to: str, uri: Optional[str], experiment: Optional[str], result: ExportResult
) -> Optional[str]:
    rd = records.RunDirectory(run_dir)
    status = read_status(rd.status_path)
    if status is None or status.status not in FINISHED:
        return f"not finished ({status.status if status else 'no readable status.json'})"
    if not rd.config_path.exists():
        return "no config.yaml"
    overrides = yaml.safe_load(rd.overrides_path.read_text()) if rd.overrides_path.exists() else []
    info = RunInfo.of(run_dir, rd.config_path.read_text(), overrides or [], status.facts.get("git"))
    rows = records.read_rows(rd.metrics_path)
    summary = rd.read_summary() or {}
    if to == "tensorboard":
        result.where = "each run's tb/"
        _to_tensorboard(info, rows, status.status, summary)
    else:
        from ijr_cli.track.mlflow import MlflowLogger

        logger = MlflowLogger(MlflowLoggerConfig(tracking_uri=uri, experiment=experiment), buffered=True)
        kept = logger.start(info, dict(status.loggers.get("mlflow") or {}), 0)
        for row in rows:
            logger.log(int(row[M.STEP]), scalars(row))
        logger.finish(status.status, summary)
        result.created += logger.created
        result.where = f"{kept['tracking_uri']}, experiment {logger.experiment_name}"
    return None


def _to_tensorboard(info: RunInfo, rows: List[dict], status: str, summary: dict) -> None:
    from ijr_cli.track.tensorboard import DIR_NAME, TensorBoardLogger

    final, fresh, old = (info.run_dir / n for n in (DIR_NAME, f"{DIR_NAME}.export", f"{DIR_NAME}.old"))
    for stale in (fresh, old):
        shutil.rmtree(stale, ignore_errors=True)
    logger = TensorBoardLogger(directory=fresh)
    logger.start(info, {}, 0)
    try:
        for row in rows:
            logger.log(int(row[M.STEP]), scalars(row))
        logger.finish(status, summary)
    finally:
        logger.close()
    if final.exists():
        final.rename(old)
    fresh.rename(final)
    shutil.rmtree(old, ignore_errors=True)
