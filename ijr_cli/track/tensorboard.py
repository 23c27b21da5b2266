"""logger=tensorboard: a run's scalars as TensorBoard event files in its run directory's `tb/`.

`torch.utils.tensorboard.SummaryWriter` writes them: every scalar under its metric name at its step, the tracked
top Hessian eigenvalues (`sharpness_k_1` ... `sharpness_k_K`) also as one multi-line chart (the Custom Scalars
plugin), and at the end the hyperparameters (the flattened config) with the final metrics through the HParams
plugin, in the run's own event file (not the subdirectory `SummaryWriter.add_hparams` makes, which TensorBoard
lists as a second run). `tensorboard --logdir SWEEP_DIR` shows every run of a sweep as `<overrides>/tb`.

Every attempt opens its writer with `purge_step=0` and first writes the rows metrics.jsonl already holds
(`catch_up`): TensorBoard then drops every point of the earlier attempts' event files, those a killed attempt
wrote after its checkpoint included, so no step is shown twice. (Purging only from the checkpoint on would not
do: a kill -9 also loses the points still queued in the writer, which may be older than the checkpoint.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from ijr_cli.core import metric_names as M
from ijr_cli.core.config import TensorBoardLoggerConfig
from ijr_cli.track.base import RunInfo

DIR_NAME = "tb"
EIGENVALUES = f"^{M.SHARPNESS_K}_[0-9]+$"  # the multi-line chart's tags (a regular expression, any K)
HPARAMS_STATUS = {"COMPLETED": "success", "DIVERGED": "failure", "FAILED": "failure", "STOPPED": "running"}


class TensorBoardLogger:
    """One SummaryWriter in `<run dir>/tb` (or the directory given: `export` writes there too)."""

    name = "tensorboard"

    def __init__(self, cfg: Optional[TensorBoardLoggerConfig] = None, directory: Optional[Path] = None):
        self.cfg = cfg or TensorBoardLoggerConfig()
        self.directory = directory
        self.writer = None
        self.charted = False
        self.logged: set = set()  # the tags written (the HParams plugin's metrics are among them)
        self.info: Optional[RunInfo] = None

    def start(self, info: RunInfo, kept: Dict[str, Any], first_step: int) -> Dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        self.info = info
        directory = self.directory or info.run_dir / DIR_NAME
        self.writer = SummaryWriter(log_dir=str(directory), purge_step=0, flush_secs=self.cfg.flush_secs)
        return {"dir": str(directory), "purge_step": 0, "rewritten_through_step": first_step - 1}

    def catch_up(self, rows) -> None:
        for step, values in rows:
            self.log(step, values)

    def log(self, step: int, values: Dict[str, float]) -> None:
        w = self.writer
        for key, value in values.items():
            w.add_scalar(key, value, step)
        self.logged.update(values)
        if not self.charted and M.list_column(M.SHARPNESS_K, 1) in values:
            w.add_custom_scalars({"sharpness": {"top Hessian eigenvalues (sharpness_k)": ["Multiline", [EIGENVALUES]]}})
            self.charted = True

    def finish(self, status: str, summary: Dict[str, Any]) -> None:
        """The HParams plugin's record of this run: its hyperparameters and final metrics (the last value of each
        scalar of summary.json that was logged), in the run's own event file."""
        from torch.utils.tensorboard.summary import hparams

        from ijr_cli.track.base import scalars

        final = {k: v for k, v in scalars(summary).items() if k in self.logged}
        experiment, start, end = hparams(self.info.hyperparameters(), final)
        end.value[0].metadata.plugin_data.content = _session_end(HPARAMS_STATUS.get(status, "unknown"))
        fw = self.writer._get_file_writer()
        for s in (experiment, start, end):
            fw.add_summary(s)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _session_end(status: str) -> bytes:
    """The HParams plugin's session-end record with the run's outcome (torch's `hparams` always says success)."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    code = {
        "success": api_pb2.STATUS_SUCCESS,
        "failure": api_pb2.STATUS_FAILURE,
        "running": api_pb2.STATUS_RUNNING,
    }.get(status, api_pb2.STATUS_UNKNOWN)
    data = plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(status=code), version=0)
    return data.SerializeToString()
