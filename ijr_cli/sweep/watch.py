"""`ijr-status SWEEP_DIR --watch [SECONDS]`: a sweep's state, refreshed until every job has ended. No torch.

On a terminal the screen is redrawn in place (ANSI: cursor home, clear) with the counts and one line per job
(step/total, test accuracy, sharpness / threshold, the job's ETA from its step rate between two refreshes, its
SLURM state); elsewhere (a log file, a pipe) one plain line per refresh, with the counts and the jobs whose state
or step changed. It stops by itself once no job is RUNNING (or queued), and on Ctrl-C.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, TextIO, Tuple

from ijr_cli.core.humanize import duration
from ijr_cli.sweep import state as sweep_state

CLEAR = "\x1b[H\x1b[2J"


@dataclass
class Rates:
    """Each job's last seen (time, step): its ETA is the remaining steps at the rate between two refreshes."""

    seen: Dict[str, Tuple[float, int]] = field(default_factory=dict)
    rate: Dict[str, float] = field(default_factory=dict)

    def update(self, states: List[sweep_state.JobState], now: float) -> None:
        for s in states:
            if s.step is None:
                continue
            before = self.seen.get(s.name)
            if before is not None and s.step > before[1] and now > before[0]:
                self.rate[s.name] = (s.step - before[1]) / (now - before[0])
            if before is None or s.step != before[1]:
                self.seen[s.name] = (now, s.step)

    def eta(self, s: sweep_state.JobState) -> Optional[float]:
        rate = self.rate.get(s.name)
        if s.bucket != "RUNNING" or not rate or s.step is None or not s.total_steps:
            return None
        return max(s.total_steps - s.step, 0) / rate


def job_line(s: sweep_state.JobState, rates: Rates) -> str:
    eta = rates.eta(s)
    parts = [f"{s.label:9}", s.name]
    measures = s.measures()
    if measures:
        parts.append(measures)
    if eta is not None:
        parts.append(f"ETA {duration(eta)}")
    if s.detail:
        parts.append(s.detail)
    return "  ".join(parts)


def screen(sweep_dir, states: List[sweep_state.JobState], rates: Rates, stamp: str) -> str:
    """The whole terminal view: a header, the counts, every job (RUNNING first)."""
    counts = sweep_state.counts(states)
    order = {b: i for i, b in enumerate(("RUNNING", "FAILED", "MISSING", "DIVERGED", "COMPLETED"))}
    lines = [
        f"{sweep_dir}: {len(states)} job(s) at {stamp} (Ctrl-C to stop watching)",
        "  " + "  ".join(f"{b} {counts[b]}" for b in sweep_state.BUCKETS),
    ]
    lines += ["  " + job_line(s, rates) for s in sorted(states, key=lambda s: (order[s.bucket], s.name))]
    return "\n".join(lines)


def changes(states: List[sweep_state.JobState], previous: Dict[str, tuple]) -> List[sweep_state.JobState]:
    """The jobs whose bucket or step differ from `previous` (name -> (bucket, step)), which is updated."""
    out = []
    for s in states:
        now = (s.bucket, s.step)
        if previous.get(s.name) != now:
            out.append(s)
            previous[s.name] = now
    return out


def finished(states: List[sweep_state.JobState]) -> bool:
    return bool(states) and not any(s.bucket == "RUNNING" for s in states)


def watch(
    sweep_dir,
    every: float,
    out: TextIO,
    tty: bool,
    poll: Callable[[], List[sweep_state.JobState]],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    max_refreshes: Optional[int] = None,
) -> List[sweep_state.JobState]:
    """Refresh every `every` seconds until `finished` (or `max_refreshes`); returns the last states."""
    rates, previous, n = Rates(), {}, 0
    while True:
        states = poll()
        now = clock()
        rates.update(states, now)
        stamp = time.strftime("%H:%M:%S", time.localtime(now))
        if tty:
            out.write(CLEAR + screen(sweep_dir, states, rates, stamp) + "\n")
        else:
            counts = sweep_state.counts(states)
            line = f"{stamp} " + " ".join(f"{b.lower()} {counts[b]}" for b in sweep_state.BUCKETS)
            moved = changes(states, previous)
            out.write(line + "".join(f"\n  {job_line(s, rates)}" for s in moved) + "\n")
        out.flush()
        n += 1
        if finished(states) or (max_refreshes is not None and n >= max_refreshes):
            return states
        sleep(every)
