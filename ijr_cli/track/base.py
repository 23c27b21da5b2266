"""What every live logger is given, and `Loggers`: the fan-out that never lets a logger lose a run.

A logger (`tensorboard.TensorBoardLogger`, `mlflow.MlflowLogger`, `wandb.WandbLogger`) has four calls:
  start(info, kept, first_step) -> kept   open (or continue) its run; `kept` is what status.json holds for it
                                          (`Status.loggers[name]`: MLflow's run id, W&B's id); `first_step` the
                                          first step this attempt logs (0, or the step after the checkpoint's row)
  catch_up(rows)                          a resumed run's earlier rows [(step, values)] from metrics.jsonl: each
                                          logger sends those its run may lack
  log(step, values)                       one row's scalars (`scalars`)
  finish(status, summary)                 the outcome (COMPLETED / DIVERGED / FAILED / STOPPED) and summary.json
  close()
`Loggers` calls each one inside a guard: the first exception (an unreachable tracking server, a full disk under
tb/) prints one warning, records why in status.json (`loggers.<name>.disabled`) and turns that logger off; the
run and its files go on. Bad input (a logger whose package is not installed) is refused before anything is
written (`check_installed`, exit code 2).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import yaml

from ijr_cli.core import metric_names as M
from ijr_cli.core import records
from ijr_cli.core.config import LoggerConfig, family
from ijr_cli.core.errors import UserError
from ijr_cli.core.status import Status

NAMES = ("tensorboard", "mlflow", "wandb")
# per logger: the modules it imports (each must be installed) and the extra of pyproject.toml that installs them
PACKAGES = {"tensorboard": ("tensorboard",), "mlflow": ("mlflow",), "wandb": ("wandb",)}
EXPORTABLE = ("tensorboard", "mlflow")  # ijr-report --to
MESSAGE_CHARS = 400  # of a logger's error in its one warning (an HTTP client's can run to kilobytes)
SWEEP_FILES = ("sweep.yaml", "multirun.yaml")  # a directory holding one of these is a sweep (ijr-sweep, Hydra -m)


def selected(cfg: Optional[LoggerConfig]) -> List[str]:
    """The loggers in force, in NAMES order (a section that is not null)."""
    return [name for name in NAMES if cfg is not None and getattr(cfg, name, None) is not None]


def check_installed(names: List[str]) -> None:
    """A UserError naming the extra to install for the first logger whose package is missing (pre-flight)."""
    for name in names:
        for module in PACKAGES[name]:
            if importlib.util.find_spec(module) is None:
                raise UserError(
                    f"logger={name} needs the Python package {module}, which is not installed: "
                    f"pip install 'ijr[{name}]' (or drop {name} from logger=)"
                )


@dataclass
class RunInfo:
    """What a logger names and tags its run with."""

    run_dir: Path
    config: Dict[str, Any]  # the resolved config, flattened to dotted keys
    overrides: List[str] = field(default_factory=list)
    git_commit: Optional[str] = None
    sweep: Optional[str] = None  # the sweep's name; None for a run outside a sweep

    @classmethod
    def of(
        cls,
        run_dir: Path,
        config_yaml: str,
        overrides: List[str],
        git: Optional[dict] = None,
        sweep: Optional[str] = None,
    ) -> "RunInfo":
        """`sweep` None: the parent directory's name when it is a sweep directory (it holds sweep.yaml or
        Hydra's multirun.yaml)."""
        run_dir = Path(run_dir).resolve()
        if sweep is None and any((run_dir.parent / f).exists() for f in SWEEP_FILES):
            sweep = run_dir.parent.name
        config = records.flatten(yaml.safe_load(config_yaml) or {})
        return cls(run_dir, config, list(overrides), (git or {}).get("commit"), sweep)

    @property
    def name(self) -> str:
        """The run directory's name: in a sweep, its swept overrides (`optimizer.lr=0.1,seed=0`)."""
        return self.run_dir.name

    @property
    def family(self) -> str:
        """The regularisers in force (`core.config.family`): W&B's job_type."""
        return family(self.config)

    def hyperparameters(self) -> Dict[str, Any]:
        """The flattened config without the loggers' own settings, as str/int/float/bool (a list as its text,
        null as "null"): MLflow's params, TensorBoard's hparams, W&B's config."""
        out: Dict[str, Any] = {}
        for k, v in self.config.items():
            if k.startswith("logger."):
                continue
            out[k] = v if isinstance(v, (bool, int, float, str)) else "null" if v is None else str(v)
        return out


def scalars(row: Dict[str, Any]) -> Dict[str, float]:
    """The numbers of one logged row (as metrics.jsonl holds it) by metric name: a list metric's entries as
    name_1 ... name_K (the report's columns), null / non-finite / text values and `step` left out."""
    out: Dict[str, float] = {}
    for k, v in row.items():
        if k == M.STEP:
            continue
        if k in M.LIST_METRICS and isinstance(v, list):
            for i, x in enumerate(v, 1):
                if _finite(x):
                    out[M.list_column(k, i)] = float(x)
        elif _finite(v):
            out[k] = float(v)
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Loggers:
    """The live loggers of one run, each behind a guard (the module docstring)."""

    def __init__(self, loggers: List[Any], info: RunInfo, warn: Callable[[str], None] = _stderr):
        self.active = list(loggers)
        self.info = info
        self.warn = warn
        self.disabled: Dict[str, str] = {}
        self.kept: Optional[Dict[str, Any]] = None  # Status.loggers, once `start` has it

    def __bool__(self) -> bool:
        return bool(self.active)

    def _guard(self, logger, what: str, method: str, *args) -> Any:
        """logger.method(*args), or None (and the logger off, with one warning) when it raises."""
        try:
            return getattr(logger, method)(*args)
        except Exception as e:  # noqa: BLE001 - a logger's failure of any kind must not end the run
            first_line = str(e).splitlines()[0] if str(e) else ""
            message = f"{type(e).__name__}: {first_line[:MESSAGE_CHARS]}".rstrip(": ")
            self.disabled[logger.name] = f"{what}: {message}"
            self.active.remove(logger)
            later = (
                f"; ijr-report {self.info.run_dir} --to {logger.name} exports them later"
                if logger.name in EXPORTABLE
                else ""
            )
            self.warn(
                f"ijr-train: warning: the {logger.name} logger failed ({what}: {message}); it is off for the rest "
                f"of this run, which goes on (metrics.jsonl has every row{later})"
            )
            if self.kept is not None:
                self.kept.setdefault(logger.name, {})["disabled"] = self.disabled[logger.name]
            try:
                logger.close()
            except Exception:  # noqa: BLE001 - closing a broken logger is best effort
                pass
            return None

    def start(self, status: Status, first_step: int, metrics_path: Optional[Path] = None) -> None:
        """Open or continue each logger's run (what a resume needs goes into `status.loggers`, written by the
        caller with the rest of status.json), then let each catch up with the rows metrics.jsonl already holds
        (a resumed run's rows before `first_step`): what a killed attempt never sent, or all of them for a logger
        added on resume."""
        self.kept = status.loggers
        for logger in list(self.active):
            kept = dict(status.loggers.get(logger.name) or {})
            kept.pop("disabled", None)
            new = self._guard(logger, "start", "start", self.info, kept, first_step)
            if new is not None:
                status.loggers[logger.name] = new
        if self.active and first_step > 0 and metrics_path is not None:
            earlier = [(int(r[M.STEP]), scalars(r)) for r in records.read_rows(metrics_path) if M.STEP in r]
            earlier = [(step, values) for step, values in earlier if step < first_step]
            for logger in list(self.active):
                self._guard(logger, "catching up", "catch_up", earlier)

    def log(self, row: Dict[str, Any]) -> None:
        if not self.active:
            return
        step, values = int(row[M.STEP]), scalars(row)
        for logger in list(self.active):
            self._guard(logger, f"step {step}", "log", step, values)

    def finish(self, status: str, summary: Dict[str, Any]) -> None:
        for logger in list(self.active):
            self._guard(logger, "finish", "finish", status, summary)

    def close(self) -> None:
        for logger in list(self.active):
            self._guard(logger, "close", "close")
        self.active = []
