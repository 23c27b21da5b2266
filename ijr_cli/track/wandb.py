"""logger=wandb: one W&B run per ijr run, offline by default (compute nodes rarely reach the internet: the run is
written below `<run dir>/wandb/` and `wandb sync <run dir>/wandb/offline-run-*` uploads it later).

project / entity from `logger.wandb`, group = `logger.wandb.group` or the sweep's name, job_type = the regulariser
family (`core.config.family`), name = the run directory's name, config = the flattened resolved config, history =
every scalar of every row at its step (W&B's own step is ijr's step), summary = summary.json's numbers. The W&B
id is kept in status.json (`Status.loggers["wandb"]["id"]`): a resumed or requeued run continues it
(`resume="allow"`); the members of a pack each have their own run (`reinit="create_new"`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ijr_cli.core.config import WandbLoggerConfig
from ijr_cli.track.base import RunInfo, scalars

ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_id() -> str:
    """A W&B run id (8 characters of [a-z0-9], the form W&B makes its own ids in)."""
    import secrets

    return "".join(secrets.choice(ID_ALPHABET) for _ in range(8))


EXIT_CODE = {"COMPLETED": 0, "DIVERGED": 0}  # any other outcome ends the W&B run as failed (exit code 1)


class WandbLogger:
    name = "wandb"

    def __init__(self, cfg: Optional[WandbLoggerConfig] = None):
        self.cfg = cfg or WandbLoggerConfig()
        self.run = None
        self.new = True

    def start(self, info: RunInfo, kept: Dict[str, Any], first_step: int) -> Dict[str, Any]:
        import wandb

        self.new = not kept.get("id")
        run_id = kept.get("id") or new_id()
        self.run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            group=self.cfg.group or info.sweep,
            job_type=info.family,
            name=info.name,
            id=run_id,
            resume="allow",
            dir=str(info.run_dir),
            mode=self.cfg.mode,
            config=info.hyperparameters(),
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        return {"id": run_id, "mode": self.cfg.mode, "dir": str(info.run_dir / "wandb")}

    def catch_up(self, rows) -> None:
        """A W&B run new to this ijr run (the logger added on resume) gets the earlier rows; a continued one has
        them (W&B's offline writer is its own process, which outlives a kill -9 of the run)."""
        if self.new:
            for step, values in rows:
                self.log(step, values)

    def log(self, step: int, values: Dict[str, float]) -> None:
        self.run.log(values, step=step)

    def finish(self, status: str, summary: Dict[str, Any]) -> None:
        self.run.summary.update({**scalars(summary), "status": status})
        self.run.finish(exit_code=EXIT_CODE.get(status, 1))
        self.run = None

    def close(self) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)
            self.run = None
