"""ijr: experiment orchestrator for training dynamics (sharpness, Jacobians, generalisation).

Subpackages, top layer first (a module imports only from the layers below it; import-linter checks it):
  cli/         the entry points ijr-train, ijr-sweep, ijr-status, ijr-report: the only code that sees Hydra or argparse
  report/      run directories -> tables, figures, index.html (no torch)
  sweep/       study files -> jobs and their run-directory names; a sweep directory's state (no torch)
  run/         one run: build its parts from the config, its life in the run directory (resume is there), signals
  measure/     the named metrics of SCIENCE.md, train/test evaluation, when each group is due
  track/       the live loggers (TensorBoard, MLflow, W&B) and `ijr-report --to` (beside measure/: neither imports
               the other)
  curvature/   Hessian / Gauss-Newton products, Lanczos, Jacobians, impurity, the probe set's passes
  train/       RunState, one training step (plain, SAM, EJR), the fit loop
  objectives, optim, data, models   losses and mixup; optimizers and schedules; datasets on the device; architectures
  core/        config schemas and validation, errors, metric names, status.json, run-directory files (no torch)
"""

__version__ = "0.1.0"
