"""ijr: experiment orchestrator for training dynamics (sharpness, Jacobians, generalisation).

Module map, lower layers first (a module imports only from layers above it in this list):
  errors, config      schemas and validation; the bad-input exception
  data, models        datasets as device tensors, batching, augmentation; the architectures
  objectives, optim   losses, label smoothing, mixup; optimizers (SGD/GD/SAM) and lr schedules
  train               RunState, one training step, the fit loop, checkpoints
  measure             the named metrics of SCIENCE.md (evaluation on the full train/test sets)
  records             the run directory: status, metrics history, summary (no torch)
  experiment          builds a run from a typed config and drives it (resume, status, summary)
  cli                 entry points; the only code that sees Hydra
"""

__version__ = "0.1.0"
