"""`RunState`: the mutable state of a run, exactly what a checkpoint stores; atomic checkpoint files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn

from ijr_cli.core import records


@dataclass
class RunState:
    """The mutable state of a run; `checkpoint_dict` / `load_checkpoint_dict` round-trip it exactly."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0  # optimizer steps taken
    loss_sum: Optional[torch.Tensor] = None  # sum of batch losses since the last logged row (on the device)
    loss_count: int = 0
    last_logged_step: int = -1
    best_test_acc: Optional[float] = None
    measure_state: Dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. Lanczos warm starts

    def checkpoint_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "last_logged_step": self.last_logged_step,
            "best_test_acc": self.best_test_acc,
            "measure_state": dict(self.measure_state),
            "rng": rng,
        }

    def load_checkpoint_dict(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step, self.loss_count = int(ckpt["step"]), int(ckpt["loss_count"])
        self.loss_sum = ckpt["loss_sum"]
        self.last_logged_step = int(ckpt["last_logged_step"])
        self.best_test_acc = ckpt["best_test_acc"]
        self.measure_state.clear()
        self.measure_state.update(ckpt.get("measure_state", {}))
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])


class _KeepWriteError:
    """A file that remembers the OSError of a failed write: torch.save reports it as a RuntimeError, which would
    lose the errno (a full disk must read "disk full: ... (ENOSPC)"). Writing through it keeps torch.save streaming
    (serialising in memory first cost 30 % more time and the checkpoint's size in memory, measured)."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def save_checkpoint(path: Path, ckpt: dict) -> None:
    """Write atomically (`records.atomic_file`: a temporary file, fsync, renamed over the old checkpoint; on
    failure the temporary file is removed and a StorageError names the path and the errno)."""
    with records.atomic_file(path) as f:
        writer = _KeepWriteError(f)
        try:
            torch.save(ckpt, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise


def load_checkpoint(path: Path, device: torch.device) -> dict:
    return torch.load(path, map_location=device, weights_only=True)
