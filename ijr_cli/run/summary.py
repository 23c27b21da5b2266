"""What a run records about where it ran, and the few lines it prints at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch

import ijr_cli
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
        ("loss (as trained)", "train_loss", "test_loss", None),
        ("cross-entropy", "train_ce", "test_ce", "gen_gap_loss"),
        ("accuracy", "train_acc", "test_acc", "gen_gap_acc"),
    ):
        lines.append(
            f"  {label:18}{fmt(summary.get(tr)):>10}{fmt(summary.get(te)):>10}"
            f"{fmt(summary.get(gap)) if gap else '':>10}"
        )
    lines.append(f"  best test accuracy {fmt(summary.get('best_test_acc'))}; {summary['num_params']:,} parameters")
    if summary.get("sharpness") is not None and summary.get("threshold"):
        ratio = summary["sharpness"] / summary["threshold"]
        lines.append(
            f"  sharpness {summary['sharpness']:.4g} vs stability threshold {summary['threshold']:.4g} "
            f"(ratio {ratio:.3f}{'; at the edge of stability' if abs(ratio - 1) <= 0.15 else ''})"
        )
    return "\n".join(lines)


def _attempts(status: Optional[Status]) -> str:
    """' over 2 attempts (resumed from step 30)' for a resumed run; '' otherwise."""
    if status is None or not status.resumed:
        return ""
    steps = [a.resumed_from_step for a in status.attempts if a.resumed_from_step is not None]
    return f" over {len(status.attempts)} attempts (resumed from step {', '.join(map(str, steps))})"
