"""Progress where people look: a bar on a terminal, one flushed line per evaluation everywhere else.

On a terminal (stderr a TTY) a tqdm bar shows the latest train loss and accuracy, test accuracy and sharpness
against the stability threshold 2/η; its rate is the average since the attempt began (`smoothing=0`), so the
ETA counts evaluation and measurement time, not only the fast steps between them. Under nohup, a pipe or SLURM
(no TTY) each evaluation prints one line to stdout instead; every evaluation's line also goes to the run's log
file (ijr-train.log), never a carriage-return bar.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Dict, Optional

from ijr_cli.core import metric_names as M
from ijr_cli.core.humanize import duration


def _num(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def sharpness_text(row: Dict[str, float]) -> Optional[str]:
    """`sharpness 18.2 / 2/η 20` when the row measured sharpness (with the threshold when it was measured)."""
    if M.SHARPNESS not in row:
        return None
    text = f"sharpness {_num(row[M.SHARPNESS])}"
    if M.THRESHOLD in row:
        text += f" / 2/η {_num(row[M.THRESHOLD])}"
    return text


def row_line(row: Dict[str, float], total: int, elapsed_s: float, eta_s: float) -> str:
    """One evaluation as one line: step/total, elapsed, ETA, lr, losses and accuracies, sharpness vs 2/η."""
    step = int(row[M.STEP])
    parts = [
        f"step {step}/{total} ({100 * step / max(total, 1):.0f}%)",
        f"elapsed {duration(elapsed_s)}",
        f"ETA {duration(eta_s)}",
        f"lr {_num(row.get(M.LR))}",
    ]
    for split, loss, acc in (("train", M.TRAIN_LOSS, M.TRAIN_ACC), ("test", M.TEST_LOSS, M.TEST_ACC)):
        if loss in row:
            parts.append(f"{split} loss {_num(row[loss])} acc {row.get(acc, float('nan')):.4f}")
    sharp = sharpness_text(row)
    if sharp:
        parts.append(sharp)
    return "  ".join(parts)


class Progress:
    """The progress of one attempt from `initial` to `total` steps; `bar`: None = a bar when stderr is a TTY and
    lines on stdout otherwise, True = always the bar, False = neither (the log file still gets its lines)."""

    def __init__(self, total: int, initial: int, bar: Optional[bool] = None, log_path: Optional[Path] = None):
        self.total, self.initial, self.log_path = total, initial, log_path
        tty = sys.stderr.isatty()
        self.use_bar = tty if bar is None else bool(bar)
        self.print_lines = bar is None and not tty
        self.started = time.perf_counter()
        self.postfix: Dict[str, str] = {}
        self.label: Optional[str] = None  # a prefix of the printed lines (a pack: which member they show)
        self._bar = None
        if self.use_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, initial=initial, unit="step", dynamic_ncols=True, leave=True, smoothing=0, file=sys.stderr
            )

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def batch_loss(self, loss: float) -> None:
        if self._bar is not None:
            self.postfix["loss"] = f"{loss:.4g}"
            self._bar.set_postfix(self.postfix, refresh=False)

    def row(self, row: Dict[str, float]) -> None:
        """An evaluation row: the bar's text, and one line on stdout (without a TTY) and in the log file."""
        step = int(row[M.STEP])
        elapsed = time.perf_counter() - self.started
        done = step - self.initial
        eta = elapsed / done * (self.total - step) if done > 0 else float("nan")
        if self._bar is not None:
            for key, label in ((M.TRAIN_LOSS, "loss"), (M.TRAIN_ACC, "acc"), (M.TEST_ACC, "test_acc")):
                if key in row:
                    self.postfix[label] = f"{row[key]:.4g}" if key == M.TRAIN_LOSS else f"{row[key]:.3f}"
            if M.SHARPNESS in row:
                threshold = f"/{row[M.THRESHOLD]:.3g}" if M.THRESHOLD in row else ""
                self.postfix["S/2η"] = f"{row[M.SHARPNESS]:.3g}{threshold}"
            self._bar.set_postfix(self.postfix, refresh=True)
        if not any(k in row for k in (M.TRAIN_LOSS, M.TEST_LOSS, M.SHARPNESS)):
            return  # a row of cheap measurements only (e.g. the trajectory's every-step records): no line
        line = row_line(row, self.total, elapsed, eta)
        if self.print_lines:
            print(f"ijr-train: {self.label + ': ' if self.label else ''}{line}", flush=True)
        if self.log_path is not None:
            try:
                with open(self.log_path, "a") as f:
                    f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            except OSError:
                pass  # (a disk that refuses the log refuses the metrics too: that write reports it)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
