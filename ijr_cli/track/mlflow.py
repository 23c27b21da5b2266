"""logger=mlflow: one MLflow run per ijr run, through `MlflowClient` (not the fluent API's one active run, so the
members of a pack each write their own run from one process).

  experiment  `logger.mlflow.experiment`, else the sweep's name, else "ijr"
  params      the flattened resolved config (`RunInfo.hyperparameters`), once, when the run is created
  metrics     every scalar of every row at its step (`log_batch`, at most every `flush_secs`)
  tags        ijr.status, ijr.sweep, ijr.run (the run directory's name), ijr.run_dir, ijr.family, ijr.overrides,
              mlflow.source.git.commit
  artifacts   summary.json and config.yaml, at the end
The tracking URI: `logger.mlflow.tracking_uri`, else $MLFLOW_TRACKING_URI, else the local store
sqlite:///<outputs>/mlflow.db (`default_tracking_uri`) with its artifacts in <outputs>/mlartifacts.

Rows are sent together at most every `flush_secs`; a resumed run first sends the rows of metrics.jsonl that the
MLflow run lacks (`catch_up`: a killed attempt's unsent rows). A resumed run continues the MLflow run whose id
status.json keeps (`Status.loggers["mlflow"]`); a run exported
by `ijr-report --to mlflow` is found again by its `ijr.run_dir` tag. Either way the steps MLflow already holds are
not sent again (MLflow cannot delete a point), so a step is never there twice: a resumed run's rows after its
checkpoint are recomputed bit for bit, only the timings (`elapsed_s`, `*_s`) differ, and MLflow keeps the first
attempt's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ijr_cli.core import metric_names as M
from ijr_cli.core.config import MlflowLoggerConfig
from ijr_cli.track.base import RunInfo

STATUS = {"COMPLETED": "FINISHED", "DIVERGED": "FINISHED", "FAILED": "FAILED", "STOPPED": "KILLED"}
RUN_DIR_TAG = "ijr.run_dir"
BATCH = 1000  # MLflow's limit of metrics per log_batch (params: 100)


def outputs_dir(run_dir: Path) -> Path:
    """The nearest ancestor of the run directory named `outputs` (ijr's default), else the run's parent."""
    for parent in Path(run_dir).resolve().parents:
        if parent.name == "outputs":
            return parent
    return Path(run_dir).resolve().parent


def default_tracking_uri(run_dir: Path) -> str:
    return f"sqlite:///{outputs_dir(run_dir) / 'mlflow.db'}"


def tracking_uri(cfg: MlflowLoggerConfig, run_dir: Path) -> str:
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(run_dir)


def experiment_id(client, name: str, uri: str) -> str:
    """The experiment's id, created when missing (a local store's artifacts beside its database)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another run created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


class MlflowLogger:
    name = "mlflow"

    def __init__(self, cfg: Optional[MlflowLoggerConfig] = None, buffered: bool = False):
        self.cfg = cfg or MlflowLoggerConfig()
        self.buffered = buffered  # export: rows sent in batches of BATCH metrics (live: each row as it comes)
        self.pending: List[Any] = []
        self.sent_at = 0.0  # when the pending points were last sent
        self.created = False
        self.experiment_name: Optional[str] = None
        self.client = None
        self.run_id: Optional[str] = None
        self.last_step = -1  # the last step MLflow holds for this run
        self.info: Optional[RunInfo] = None

    def start(self, info: RunInfo, kept: Dict[str, Any], first_step: int) -> Dict[str, Any]:
        # A dead tracking server must cost the run seconds, not MLflow's default 7 retries with backoff (minutes).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.cfg.request_timeout_s))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(self.cfg.request_retries))
        from mlflow.tracking import MlflowClient

        self.info = info
        uri = tracking_uri(self.cfg, info.run_dir)
        self.client = client = MlflowClient(tracking_uri=uri)
        self.experiment_name = self.cfg.experiment or info.sweep or "ijr"
        self.run_id, exp = self._kept_run(kept, uri)
        if self.run_id is None:
            exp = experiment_id(client, self.experiment_name, uri)
            self.run_id = self._tagged_run(exp)
        if self.run_id is None:
            run = client.create_run(exp, run_name=info.name, tags=self._tags("RUNNING"))
            self.run_id, self.created = run.info.run_id, True
            self._log_params()
        else:
            self.last_step = max((m.step for m in client.get_metric_history(self.run_id, M.ELAPSED_S)), default=-1)
            client.update_run(self.run_id, status="RUNNING")
            client.set_tag(self.run_id, "ijr.status", "RUNNING")
        return {"run_id": self.run_id, "experiment_id": exp, "tracking_uri": uri}

    def _kept_run(self, kept: Dict[str, Any], uri: str) -> Tuple[Optional[str], Optional[str]]:
        """(run id, experiment id) of the MLflow run status.json keeps, when it is in this store and not deleted."""
        from mlflow.exceptions import MlflowException

        if not kept.get("run_id") or kept.get("tracking_uri") != uri:
            return None, None
        try:
            run = self.client.get_run(kept["run_id"])
        except MlflowException:
            return None, None
        if run.info.lifecycle_stage == "deleted":
            return None, None
        return run.info.run_id, run.info.experiment_id

    def _tagged_run(self, exp: str) -> Optional[str]:
        """The run of the experiment tagged with this run directory (a run exported before), or None."""
        value = str(self.info.run_dir).replace("'", "\\'")
        found = self.client.search_runs([exp], filter_string=f"tags.`{RUN_DIR_TAG}` = '{value}'", max_results=1)
        return found[0].info.run_id if found else None

    def _tags(self, status: str) -> Dict[str, str]:
        info = self.info
        tags = {
            "ijr.status": status,
            "ijr.run": info.name,
            RUN_DIR_TAG: str(info.run_dir),
            "ijr.family": info.family,
            "ijr.overrides": " ".join(info.overrides),
        }
        if info.sweep:
            tags["ijr.sweep"] = info.sweep
        if info.git_commit:
            tags["mlflow.source.git.commit"] = info.git_commit
        return tags

    def _log_params(self) -> None:
        from mlflow.entities import Param

        params: List[Any] = [Param(k, str(v)) for k, v in self.info.hyperparameters().items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def catch_up(self, rows) -> None:
        """The earlier rows MLflow does not hold (a killed attempt's unsent rows), sent together."""
        buffered, self.buffered = self.buffered, True
        for step, values in rows:
            self.log(step, values)
        self.buffered = buffered
        self._send()

    def log(self, step: int, values: Dict[str, float]) -> None:
        if step <= self.last_step:
            return
        from mlflow.entities import Metric

        now = time.time()
        self.pending.extend(Metric(k, v, int(now * 1000), step) for k, v in values.items())
        self.last_step = step
        due = not self.buffered and now - self.sent_at >= self.cfg.flush_secs
        if due or len(self.pending) >= BATCH:
            self._send()

    def _send(self) -> None:
        """The pending points in requests of BATCH (one request per `flush_secs` in a live run: a request to a
        local sqlite store costs ~50 ms, so a row each costs a run with frequent evaluations seconds)."""
        pending, self.pending, self.sent_at = self.pending, [], time.time()
        for i in range(0, len(pending), BATCH):
            self.client.log_batch(self.run_id, metrics=pending[i : i + BATCH])

    def finish(self, status: str, summary: Dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        client, run_dir = self.client, self.info.run_dir
        self._send()
        client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in self._tags(status).items()])
        for name in ("summary.json", "config.yaml"):
            if (run_dir / name).exists():
                client.log_artifact(self.run_id, str(run_dir / name))
        client.set_terminated(self.run_id, STATUS.get(status, "FAILED"))

    def close(self) -> None:
        if self.client is not None and self.pending:
            self._send()
        self.client = None
