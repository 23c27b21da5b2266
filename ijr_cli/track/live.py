"""The live loggers of one run, as its config asks for them (`logger=[...]`): the one place that knows every
logger class. (Separate from `base`, which the torch-free `ijr-sweep` pre-flight imports: TensorBoard's logger
imports torch.)"""

from __future__ import annotations

from typing import Optional

from ijr_cli.core.config import LoggerConfig
from ijr_cli.track.base import Loggers, RunInfo, selected
from ijr_cli.track.mlflow import MlflowLogger
from ijr_cli.track.tensorboard import TensorBoardLogger
from ijr_cli.track.wandb import WandbLogger

CLASSES = {"tensorboard": TensorBoardLogger, "mlflow": MlflowLogger, "wandb": WandbLogger}


def loggers_for_run(cfg: Optional[LoggerConfig], info: RunInfo) -> Loggers:
    """Each logger in force with its section of the config (their packages are imported when they start)."""
    return Loggers([CLASSES[name](getattr(cfg, name)) for name in selected(cfg)], info)
