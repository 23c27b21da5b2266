"""ijr's Hydra plugins: a sweeper that runs an explicit list of jobs, and two launchers built on
hydra-submitit-launcher. Hydra only instantiates plugin classes that live in the `hydra_plugins` package, which
is why this file is not in `ijr_cli/`. Imported by Hydra's plugin discovery at every start: keep imports light.

- `hydra/sweeper=ijr_jobs`: the jobs come from `hydra.sweeper.jobs_file` (a YAML list of override lists), not
  from a Cartesian product. `ijr-sweep` uses it to launch exactly the jobs that still need to run (a study is
  a union of grids, and a partly finished grid is no longer a product), all in one launch (one SLURM array).
- `hydra/launcher=ijr_slurm`: hydra-submitit-launcher's SLURM launcher, except that `launch` returns once the
  jobs are queued. Upstream waits for every job's result, so a sweep of a thousand jobs would hold a login-node
  process for days and die with it; the jobs themselves never needed it (their results are their run
  directories). The SLURM job ids go to `<sweep dir>/submissions.jsonl` for `ijr-status`.
- `hydra/launcher=ijr_local_parallel`: submitit's local executor with at most `max_parallel` jobs at a time
  (submitit's own local executor starts every job at once), each pinned to one GPU of `gpus` when given.
"""

import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.sweeper import Sweeper
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ sweeper
@dataclass
class JobListSweeperConf:
    _target_: str = "hydra_plugins.ijr_plugins.ijr_plugins.JobListSweeper"
    jobs_file: Optional[str] = None
    # compose every job before launching (Hydra's own check); ijr-sweep has done it already and turns it off
    validate: bool = True
    max_batch_size: Optional[int] = None


class JobListSweeper(Sweeper):
    """Runs the jobs listed in `jobs_file`; the command line's overrides are added to every job. (Not a subclass
    of Hydra's BasicSweeper: Hydra's plugin scan re-executes that module, which breaks its subclasses.)"""

    def __init__(self, jobs_file: Optional[str], validate: bool = True, max_batch_size: Optional[int] = None):
        super().__init__()
        self.jobs_file, self.validate, self.max_batch_size = jobs_file, validate, max_batch_size
        self.config = self.launcher = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def jobs(self, arguments: List[str]) -> List[List[str]]:
        import yaml
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if not self.jobs_file:
            raise ValueError("hydra/sweeper=ijr_jobs needs hydra.sweeper.jobs_file=FILE (a YAML list of override "
                             "lists)")
        overrides = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(arguments)
        swept = [o.input_line for o in overrides if o.is_sweep_override()]
        if swept:
            raise ValueError(f"hydra/sweeper=ijr_jobs takes its jobs from {self.jobs_file}; the command line "
                             f"may not sweep too ({' '.join(swept)})")
        try:
            jobs = yaml.safe_load(Path(self.jobs_file).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read hydra.sweeper.jobs_file={self.jobs_file} ({e})") from None
        if not isinstance(jobs, list) or not jobs or not all(
                isinstance(j, list) and all(isinstance(o, str) for o in j) for j in jobs):
            raise ValueError(f"{self.jobs_file} must be a non-empty YAML list of lists of key=value overrides")
        return [list(arguments) + list(job) for job in jobs]

    def sweep(self, arguments: List[str]) -> Any:
        jobs = self.jobs(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        size = self.max_batch_size or len(jobs)
        returns, first = [], 0
        for batch in (jobs[i:i + size] for i in range(0, len(jobs), size)):
            if self.validate:
                self.validate_batch_is_legal(batch)
            returns.append(self.launcher.launch(batch, initial_job_idx=first))
            first += len(batch)
        return returns


# ------------------------------------------------------------------------------------------------ launchers
def _slurm_params(params: Dict[str, Any]) -> Dict[str, Any]:
    """hydra-submitit-launcher's mapping of its config to AutoExecutor's names (SLURM-only keys get the
    `slurm_` prefix), as in its `launch`."""
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    return {k if k in base else f"slurm_{k}": v for k, v in params.items()
            if k not in ("submitit_folder", "max_num_timeout")}


def _job_args(overrides: Sequence[str], idx: int) -> tuple:
    return (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())


def _run_dir_names(config, job_overrides: Sequence[Sequence[str]]) -> List[Optional[str]]:
    """Each job's run directory name below the sweep dir, when the subdir is Hydra's `override_dirname`."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if subdir != "${hydra.job.override_dirname}":
        return [None] * len(job_overrides)
    od = config.hydra.job.config.override_dirname
    parser = OverridesParser.create()
    return [get_overrides_dirname(parser.parse_overrides(list(o)), exclude_keys=list(od.exclude_keys),
                                  item_sep=od.item_sep, kv_sep=od.kv_sep) for o in job_overrides]


@dataclass
class NonBlockingSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.ijr_plugins.ijr_plugins.NonBlockingSlurmLauncher"


class NonBlockingSlurmLauncher(BaseSubmititLauncher):
    """hydra-submitit-launcher's SLURM launcher that returns once the jobs are queued (see the module doc).
    `__call__` (what runs in the job) and `checkpoint` (requeue on SLURM's signal) are upstream's."""

    _EXECUTOR = "slurm"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from ijr_cli import sweep_state

        assert self.config is not None and job_overrides
        executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster="slurm",
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        executor.update_parameters(**_slurm_params(self.params))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        args = [_job_args(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        jobs = executor.map_array(self, *zip(*args))
        names = _run_dir_names(self.config, job_overrides)
        sweep_state.record_submissions(sweep_dir, [
            {"job_id": job.job_id, "run_dir": name, "overrides": list(filter_overrides(o))}
            for job, name, o in zip(jobs, names, job_overrides)])
        first = jobs[0].job_id.split("_")[0]
        log.info(f"submitted {len(jobs)} job(s) to SLURM as array {first}; follow with: ijr-status {sweep_dir}")
        return [JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=job.job_id)
                for o, job in zip(job_overrides, jobs)]


@dataclass
class LocalParallelConf(LocalQueueConf):
    _target_: str = "hydra_plugins.ijr_plugins.ijr_plugins.LocalParallelLauncher"
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
        params = {k: v for k, v in p.items()
                  if k not in ("submitit_folder", "max_parallel", "gpus", "poll_s", "gpus_per_node")}
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        todo = list(enumerate(job_overrides, start=initial_job_idx))
        running: Dict[int, tuple] = {}
        returns: Dict[int, JobReturn] = {}
        log.info(f"running {len(todo)} job(s), {slots} at a time" + (f" on GPUs {gpus[:slots]}" if gpus else ""))
        while todo or running:
            for slot in [s for s in range(slots) if s not in running]:
                if not todo:
                    break
                idx, overrides = todo.pop(0)
                executor = submitit.LocalExecutor(folder=p["submitit_folder"])
                one_gpu = {"gpus_per_node": 1, "visible_gpus": [gpus[slot]]} if gpus else {}
                executor.update_parameters(**params, **one_gpu)
                running[slot] = (idx, overrides, executor.submit(self, *_job_args(overrides, idx)))
            time.sleep(p.get("poll_s", 0.5))
            for slot, (idx, overrides, job) in list(running.items()):
                if job.done():
                    del running[slot]
                    returns[idx] = self._collect(job, overrides)
        return [returns[i] for i in sorted(returns)]

    @staticmethod
    def _collect(job, overrides: Sequence[str]) -> JobReturn:
        try:
            return job.results()[0]
        except Exception as e:  # noqa: BLE001 - a job that died is reported, the others go on
            message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            print(f"ijr-train: job failed: {' '.join(filter_overrides(overrides))}: {message} "
                  f"(log: {job.paths.stderr})", flush=True)
            return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)


def register() -> None:
    """Make the classes known to Hydra where its plugin scan cannot see this module (an editable install maps
    the module but not the `hydra_plugins` namespace; `ijr-train` calls this before Hydra starts)."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    for clazz in (JobListSweeper, NonBlockingSlurmLauncher, LocalParallelLauncher):
        if f"{clazz.__module__}.{clazz.__name__}" not in plugins.class_name_to_class:
            plugins.register(clazz)


cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="ijr_jobs", node=JobListSweeperConf, provider="ijr")
cs.store(group="hydra/launcher", name="ijr_slurm", node=NonBlockingSlurmConf, provider="ijr")
cs.store(group="hydra/launcher", name="ijr_local_parallel", node=LocalParallelConf, provider="ijr")
