"""SIGTERM, SIGUSR2 and Ctrl-C (SIGINT) stop a run at a step boundary; SIGUSR2 is then handed to submitit's
requeue."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Dict, Optional

from ijr_cli.core.errors import Terminated


class StopSignals:
    """SIGTERM, and SIGUSR2 (SLURM's warning before a time limit or a preemption, asked for with `--signal`),
    make the training loop stop at the next step boundary with a checkpoint of that step; a second SIGTERM
    stops at once. Ctrl-C (SIGINT) does the same: the first stops at the step boundary with a checkpoint, a second
    interrupts at once (KeyboardInterrupt). On leaving, the handlers in place before are restored. Under
    submitit, SIGUSR2's previous handler is submitit's "checkpoint and requeue": `pass_on` calls it once the
    checkpoint is on disk, so the requeued job resumes exactly where this one stopped."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)

    def __init__(self):
        self.signum: Optional[int] = None
        self.previous: Dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handler(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is not None and signum == signal.SIGTERM:
            raise Terminated("terminated (second SIGTERM, without waiting for the step to end)")
        if signum == signal.SIGINT:
            print(
                "\nijr-train: Ctrl-C: stopping at the end of this step with a checkpoint (Ctrl-C again: at once)",
                file=sys.stderr,
                flush=True,
            )
        self.signum = signum

    def requested(self) -> Optional[str]:
        if self.signum is None:
            return None
        name = signal.Signals(self.signum).name
        if self.signum == signal.SIGINT:
            return "Ctrl-C (SIGINT)"
        return f"signal {name}" + (" (time limit or preemption)" if self.signum == signal.SIGUSR2 else "")

    def pass_on(self, message: str) -> None:
        """After the stop is recorded: hand SIGUSR2 to submitit's handler (which requeues the job and exits);
        otherwise end the process with `Terminated`."""
        previous = self.previous.get(self.signum)
        if self.signum == signal.SIGUSR2 and callable(previous):
            previous(self.signum, None)
        raise Terminated(message, exit_code=130 if self.signum == signal.SIGINT else Terminated.exit_code)
