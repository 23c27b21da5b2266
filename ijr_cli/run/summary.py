"""What a run records about where it ran, and the few lines it prints at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch

import ijr_cli
from ijr_cli.core import metric_names as M
from ijr_cli.core import records
from ijr_cli.core.status import Status


def environment(device: torch.device, dtype: str) -> Dict[str, object]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else records.cpu_name()
    return {
        "device": str(device),
        "device_name": name,
        "dtype": dtype,
        "torch_threads": torch.get_num_threads(),
        "git": records.git_info(Path(ijr_cli.__file__).resolve().parent),
        "versions": records.package_versions(),
    }


def summary_table(summary: dict, run_dir: Path, status: Optional[Status] = None) -> str:
    """The few lines printed at the end of a run (the wall time is summed over its attempts)."""

    def fmt(v):
        return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    head = (
        f"ijr-train: {summary['status']} ({summary['stop_reason']}) after {summary['steps']} steps "
        f"in {summary['wall_time_s']:.1f} s{_attempts(status)} -> {run_dir}"
    )
    lines = [head, f"  {'':18}{'train':>10}{'test':>10}{'gap':>10}"]
    for label, tr, te, gap in (
        ("loss (as trained)", M.TRAIN_LOSS, M.TEST_LOSS, None),
        ("cross-entropy", M.TRAIN_CE, M.TEST_CE, M.GEN_GAP_LOSS),
        ("accuracy", M.TRAIN_ACC, M.TEST_ACC, M.GEN_GAP_ACC),
    ):
        lines.append(
            f"  {label:18}{fmt(summary.get(tr)):>10}{fmt(summary.get(te)):>10}"
            f"{fmt(summary.get(gap)) if gap else '':>10}"
        )
    lines.append(f"  best test accuracy {fmt(summary.get('best_test_acc'))}; {summary['num_params']:,} parameters")
    if summary.get(M.SHARPNESS) is not None and summary.get(M.THRESHOLD):
        ratio = summary[M.SHARPNESS] / summary[M.THRESHOLD]
        lines.append(
            f"  sharpness {summary[M.SHARPNESS]:.4g} vs stability threshold {summary[M.THRESHOLD]:.4g} "
            f"(ratio {ratio:.3f}{'; at the edge of stability' if abs(ratio - 1) <= 0.15 else ''})"
        )
    return "\n".join(lines)


def _attempts(status: Optional[Status]) -> str:
    """' over 2 attempts (resumed from step 30)' for a resumed run; '' otherwise."""
    if status is None or not status.resumed:
        return ""
    steps = [a.resumed_from_step for a in status.attempts if a.resumed_from_step is not None]
    return f" over {len(status.attempts)} attempts (resumed from step {', '.join(map(str, steps))})"
