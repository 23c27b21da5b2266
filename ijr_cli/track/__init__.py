"""Live loggers (no torch): a run's rows, as they are logged, also in TensorBoard, MLflow or W&B.

  base          what every logger is given (`RunInfo`, the row's scalars) and `Loggers`, the fan-out that warns once
                and disables a logger that fails, so that no run is ever lost to one
  live          the loggers a run's config asks for (`loggers_for_run`)
  tensorboard   event files in the run directory's tb/ (torch's SummaryWriter; a resume purges the steps
                after the checkpoint)
  mlflow        one MLflow run per ijr run (MlflowClient: packed members each have theirs)
  wandb         one W&B run per ijr run, offline by default
  export        `ijr-report SWEEP --to mlflow|tensorboard`: finished runs into a tracker, idempotently

Each logger's package is an optional extra (`pip install 'ijr[tensorboard]'`), imported only when that logger
is in force: the default (`logger=none`) imports none of them.
"""
