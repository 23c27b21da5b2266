"""`hydra/sweeper=ijr_jobs`: a sweeper that runs an explicit list of jobs (`hydra.sweeper.jobs_file`, a YAML list of
override lists) instead of a Cartesian product. `ijr-sweep` uses it to launch exactly the jobs that still need
to run (a study is a union of grids, and a partly finished grid is no longer a product), all in one launch (one
SLURM array). Hydra imports this module at every start (its plugin scan): keep imports light.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from ijr_cli.core.humanize import duration


@dataclass
class JobListSweeperConf:
    _target_: str = "hydra_plugins.ijr_plugins.sweeper.JobListSweeper"
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
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def jobs(self, arguments: List[str]) -> List[List[str]]:
        import yaml
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if not self.jobs_file:
            raise ValueError(
                "hydra/sweeper=ijr_jobs needs hydra.sweeper.jobs_file=FILE (a YAML list of override lists)"
            )
        overrides = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(arguments)
        swept = [o.input_line for o in overrides if o.is_sweep_override()]
        if swept:
            raise ValueError(
                f"hydra/sweeper=ijr_jobs takes its jobs from {self.jobs_file}; the command line "
                f"may not sweep too ({' '.join(swept)})"
            )
        try:
            jobs = yaml.safe_load(Path(self.jobs_file).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read hydra.sweeper.jobs_file={self.jobs_file} ({e})") from None
        if not isinstance(jobs, list) or not jobs or not all(_is_job(j) for j in jobs):
            raise ValueError(f"{self.jobs_file} must be a non-empty YAML list of lists of key=value overrides")
        return [list(arguments) + _job_overrides(job) for job in jobs]

    def sweep(self, arguments: List[str]) -> Any:
        jobs = self.jobs(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        # the basic launcher runs the jobs here one after another: one at a time, each announced as "job i/N"
        one_by_one = type(self.launcher).__name__ == "BasicLauncher"
        size = self.max_batch_size or (1 if one_by_one else len(jobs))
        returns, first, started = [], 0, time.perf_counter()
        for batch in (jobs[i : i + size] for i in range(0, len(jobs), size)):
            if self.validate:
                self.validate_batch_is_legal(batch)
            if one_by_one:
                print(progress_line(first + 1, len(jobs), first, started, run_dir_name(batch[0])), flush=True)
            returns.append(self.launcher.launch(batch, initial_job_idx=first))
            first += len(batch)
        return returns


ConfigStore.instance().store(group="hydra/sweeper", name="ijr_jobs", node=JobListSweeperConf, provider="ijr")


@dataclass
class NamedGridSweeperConf:
    _target_: str = "hydra_plugins.ijr_plugins.sweeper.NamedGridSweeper"
    validate: bool = True
    max_batch_size: Optional[int] = None


class NamedGridSweeper(JobListSweeper):
    """`ijr-train -m`'s sweeper (conf/train.yaml): Hydra's grid (the product of the swept overrides, expanded by
    Hydra's own BasicSweeper.split_arguments), with each job's run directory named by its swept overrides, as
    ijr-sweep names them (`optimizer.lr=0.1,seed=0`), not 0..N-1, so that ijr-status and ijr-report can say what
    each job is. A hydra.sweep.subdir given on the command line is respected."""

    def __init__(self, validate: bool = True, max_batch_size: Optional[int] = None):
        super().__init__(jobs_file=None, validate=validate, max_batch_size=max_batch_size)

    def jobs(self, arguments: List[str]) -> List[List[str]]:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from ijr_cli.sweep.study import job_directory_name

        overrides = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(arguments)
        swept = {o.get_key_element() for o in overrides if o.is_sweep_override()}
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        if not swept or any(a.startswith("hydra.sweep.subdir=") for a in arguments):
            return jobs
        named = []
        for job in jobs:
            name = job_directory_name([o for o in job if o.split("=", 1)[0] in swept])
            named.append(_job_overrides({"name": name, "overrides": job}))
        return named


ConfigStore.instance().store(group="hydra/sweeper", name="ijr_grid", node=NamedGridSweeperConf, provider="ijr")


def _is_job(job) -> bool:
    """A list of overrides, or {name: its run directory below hydra.sweep.dir, overrides: [...]}."""
    if isinstance(job, dict):
        return isinstance(job.get("name"), str) and bool(job["name"]) and _is_job(job.get("overrides"))
    return isinstance(job, list) and all(isinstance(o, str) for o in job)


def _job_overrides(job) -> List[str]:
    """A named job runs in hydra.sweep.dir/<name>: its name is given to Hydra as that job's hydra.sweep.subdir
    (quoted, since a name holds ',' and '='). ijr-sweep names its jobs with `ijr_cli.sweep.study.job_directory_name`,
    the one place that name is computed."""
    if isinstance(job, list):
        return list(job)
    quoted = "'" + job["name"].replace("\\", "\\\\").replace("'", "\\'") + "'"
    return list(job["overrides"]) + [f"hydra.sweep.subdir={quoted}"]


def progress_line(number: int, total: int, done: int, started: float, name: Optional[str]) -> str:
    """`ijr-sweep: job 3/12 NAME (2 done in 1m10s; sweep ETA 5m50s)`: the ETA is the mean wall time per finished
    job times the jobs left (with parallel jobs, the mean time between completions)."""
    elapsed = time.perf_counter() - started
    text = f"ijr-train -m: job {number}/{total}" + (f" {name}" if name else "")
    if done:
        eta = elapsed / done * (total - done)
        text += f" ({done} done in {duration(elapsed)}; sweep ETA {duration(eta)})"
    return text


def run_dir_name(job_overrides) -> Optional[str]:
    """The run directory name a named job was given (its hydra.sweep.subdir override), or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for text in job_overrides:
        if text.startswith("hydra.sweep.subdir="):
            return str(OverridesParser.create().parse_override(text).value())
    return None


def member_run_dirs(job_overrides) -> List[Optional[str]]:
    """The run directories a job writes: a pack's members (`ijr-sweep --pack`, its `+ijr_pack=FILE:INDEX`), or the
    job's own run directory name."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ijr_cli.sweep.packing import PACK_KEY, read_pack

    for text in job_overrides:
        if text.lstrip("+").startswith(f"{PACK_KEY}="):
            ref = str(OverridesParser.create().parse_override(text).value())
            return [m["name"] for m in read_pack(ref)["members"]]
    return [run_dir_name(job_overrides)]
