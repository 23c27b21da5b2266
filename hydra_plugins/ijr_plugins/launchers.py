"""ijr's launchers, built on hydra-submitit-launcher. Hydra instantiates plugin classes only from the
`hydra_plugins` package, which is why this file is not in `ijr_cli/`; Hydra imports it at every start (its plugin
scan): keep imports light.

- `hydra/launcher=ijr_slurm`: hydra-submitit-launcher's SLURM launcher, except that `launch` returns once the
  jobs are queued. Upstream waits for every job's result, so a sweep of a thousand jobs would hold a login-node
  process for days and die with it; the jobs themselves never needed it (their results are their run
  directories). The SLURM job ids go to `<sweep dir>/submissions.jsonl` for `ijr-status`.
- `hydra/launcher=ijr_local_parallel`: submitit's local executor with at most `max_parallel` jobs at a time
  (submitit's own local executor starts every job at once), each pinned to one GPU of `gpus` when given.
"""

import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from hydra_plugins.ijr_plugins.sweeper import member_run_dirs, progress_line, run_dir_name

log = logging.getLogger(__name__)


def _slurm_params(params: Dict[str, Any]) -> Dict[str, Any]:
    """hydra-submitit-launcher's mapping of its config to AutoExecutor's names (SLURM-only keys get the
    `slurm_` prefix), as in its `launch`."""
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    return {
        k if k in base else f"slurm_{k}": v
        for k, v in params.items()
        if k not in ("submitit_folder", "max_num_timeout")
    }


def _job_args(overrides: Sequence[str], idx: int) -> tuple:
    return (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())


@dataclass
class NonBlockingSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.ijr_plugins.launchers.NonBlockingSlurmLauncher"


class NonBlockingSlurmLauncher(BaseSubmititLauncher):
    """hydra-submitit-launcher's SLURM launcher that returns once the jobs are queued (see the module doc).
    `__call__` (what runs in the job) and `checkpoint` (requeue on SLURM's signal) are upstream's."""

    _EXECUTOR = "slurm"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from ijr_cli.sweep import state as sweep_state

        assert self.config is not None and job_overrides
        executor = submitit.AutoExecutor(
            folder=self.params["submitit_folder"], cluster="slurm", slurm_max_num_timeout=self.params["max_num_timeout"]
        )
        executor.update_parameters(**_slurm_params(self.params))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        args = [_job_args(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        jobs = executor.map_array(self, *zip(*args))
        sweep_state.record_submissions(
            sweep_dir,
            [
                {"job_id": job.job_id, "run_dir": name, "overrides": list(filter_overrides(o))}
                for job, o in zip(jobs, job_overrides)
                for name in member_run_dirs(o)
            ],
        )
        first = jobs[0].job_id.split("_")[0]
        log.info(f"submitted {len(jobs)} job(s) to SLURM as array {first}; follow with: ijr-status {sweep_dir}")
        return [
            JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=job.job_id)
            for o, job in zip(job_overrides, jobs)
        ]


@dataclass
class LocalParallelConf(LocalQueueConf):
    _target_: str = "hydra_plugins.ijr_plugins.launchers.LocalParallelLauncher"
    # jobs at a time; with GPUs, at most one job per GPU
    max_parallel: int = 2
    # GPU indices to hand out, one per running job; null: those in CUDA_VISIBLE_DEVICES or listed by nvidia-smi
    # (none: CPU jobs, which should set trainer.num_threads so that max_parallel jobs share the cores)
    gpus: Optional[List[int]] = None
    timeout_min: int = 60 * 24 * 7
    poll_s: float = 0.5


def _visible_gpus() -> List[int]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [int(g) for g in env.split(",") if g.strip().isdigit()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return list(range(sum(line.startswith("GPU ") for line in out.splitlines())))


class _StopForwarding:
    """While the local jobs run: SIGTERM, SIGINT or SIGUSR2 sent to the launcher (by ijr-sweep, or PR_SET_PDEATHSIG
    when ijr-sweep died) is passed to every running job as SIGTERM (submitit's controller hands it to the job,
    which stops at a step boundary with a checkpoint), and no further job starts."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)

    def __init__(self, running: Dict[int, tuple]):
        self.running, self.signum, self.previous = running, None, {}

    def __enter__(self) -> "_StopForwarding":
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handler(self, signum, frame) -> None:
        self.signum = self.signum or signum
        for _, _, job in self.running.values():
            process = getattr(job, "_process", None)  # submitit's LocalJob keeps its controller's Popen here
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)


class LocalParallelLauncher(BaseSubmititLauncher):
    """Runs a multirun's jobs as submitit local jobs, `max_parallel` at a time (one per GPU when there are
    GPUs), and waits for them: a workstation's sweep."""

    _EXECUTOR = "local"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        p = self.params
        gpus = list(p["gpus"]) if p.get("gpus") is not None else _visible_gpus()
        slots = min(p["max_parallel"], len(gpus)) if gpus else p["max_parallel"]
        if slots < 1:
            raise ValueError("hydra.launcher.max_parallel must be at least 1")
        # submitit's LocalExecutor takes the generic names and ignores what does not apply locally
        params = {
            k: v
            for k, v in p.items()
            if k not in ("submitit_folder", "max_parallel", "gpus", "poll_s", "gpus_per_node")
        }
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        todo = list(enumerate(job_overrides, start=initial_job_idx))
        running: Dict[int, tuple] = {}
        returns: Dict[int, JobReturn] = {}
        log.info(f"running {len(todo)} job(s), {slots} at a time" + (f" on GPUs {gpus[:slots]}" if gpus else ""))
        started = time.perf_counter()
        with _StopForwarding(running) as stop:
            while (todo and stop.signum is None) or running:
                for slot in [s for s in range(slots) if s not in running]:
                    if not todo or stop.signum is not None:
                        break
                    idx, overrides = todo.pop(0)
                    number = len(job_overrides) - len(todo)
                    print(progress_line(number, len(job_overrides), len(returns), started, run_dir_name(overrides)))
                    executor = submitit.LocalExecutor(folder=p["submitit_folder"])
                    one_gpu = {"gpus_per_node": 1, "visible_gpus": [gpus[slot]]} if gpus else {}
                    executor.update_parameters(**params, **one_gpu)
                    running[slot] = (idx, overrides, executor.submit(self, *_job_args(overrides, idx)))
                time.sleep(p.get("poll_s", 0.5))
                for slot, (idx, overrides, job) in list(running.items()):
                    if job.done():
                        del running[slot]
                        if stop.signum is None:
                            returns[idx] = self._collect(job, overrides)
        if stop.signum is not None:
            from ijr_cli.core.errors import Terminated

            name = signal.Signals(stop.signum).name
            raise Terminated(
                f"stopped by {name}: the running jobs checkpointed, {len(todo)} job(s) not started",
                exit_code=130 if stop.signum == signal.SIGINT else Terminated.exit_code,
            )
        return [returns[i] for i in sorted(returns)]

    @staticmethod
    def _collect(job, overrides: Sequence[str]) -> JobReturn:
        """The job's result. A job that failed (its task returned a JobFailure) or died is added to this process's
        FAILED_JOBS and printed, so the multirun ends with the failure list and exit code 1 as with the basic
        launcher; its JobReturn stays COMPLETED (a FAILED one makes Hydra's sweeper raise, stopping the report)."""
        from ijr_cli.core.errors import FAILED_JOBS, JobFailure, report_failure

        try:
            ret = job.results()[0]
        except Exception as e:  # noqa: BLE001 - a job that died is reported, the others go on
            message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            failure = JobFailure(list(filter_overrides(overrides)), f"{message} (log: {job.paths.stderr})")
            ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=failure)
        if ret.status == JobStatus.FAILED:  # the task raised past ijr's own handling
            error = ret._return_value
            failure = JobFailure(list(filter_overrides(overrides)), f"{type(error).__name__}: {error}")
            ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=failure)
        failure = ret._return_value
        if isinstance(failure, JobFailure):
            print(report_failure(failure, FAILED_JOBS), flush=True)
        return ret


cs = ConfigStore.instance()
cs.store(group="hydra/launcher", name="ijr_slurm", node=NonBlockingSlurmConf, provider="ijr")
cs.store(group="hydra/launcher", name="ijr_local_parallel", node=LocalParallelConf, provider="ijr")
