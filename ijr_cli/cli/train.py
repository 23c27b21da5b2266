"""`ijr-train`: the Hydra app (with cli/ the only code that sees Hydra's app or argparse).

`ijr-train` is a plain Hydra 1.3 app (`--help`, `--cfg job`, `-m` work as usual) with one addition: bad input
ends with ONE line on stderr and exit code 2. Hydra reports composition errors (unknown option, wrong type,
unknown key) itself, over several lines, with exit code 1; so stderr is held back until the task starts, and
if Hydra gives up before that, its report is folded into one line. `HYDRA_FULL_ERROR=1` turns all this off.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import hydra
from omegaconf import DictConfig, OmegaConf

from ijr_cli.cli.compose import check_group_lists, register
from ijr_cli.cli.hydra_errors import HeldStderr, one_line
from ijr_cli.core import errors
from ijr_cli.core.config import check_known_keys
from ijr_cli.core.errors import Terminated, UserError
from ijr_cli.core.resources import conf_dir
from ijr_cli.sweep.packing import PACK_KEY, read_pack

PROG = "ijr-train"


CONF_DIR = str(conf_dir())


def _fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.__stderr__ if sys.stderr is None else sys.stderr, flush=True)
    raise SystemExit(UserError.exit_code)


def _remove_fresh_run_dir(run_dir: Path) -> None:
    """A run directory that Hydra made for this call and that holds no run is removed (nothing half-written)."""
    if not run_dir.is_dir() or (run_dir / "status.json").exists():
        return
    if all(p.name in (".hydra", ".lock") or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _train_task(cfg: DictConfig) -> Optional[errors.JobFailure]:
    if isinstance(sys.stderr, HeldStderr):
        sys.stderr.release()
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides: List[str] = list(hc.overrides.task)
    multirun = hc.mode == RunMode.MULTIRUN
    if PACK_KEY in cfg:  # a pack of ijr-sweep --pack: its members' runs, trained together
        return _pack_task(str(cfg[PACK_KEY]), Path(hc.sweep.dir), overrides, multirun)
    try:
        check_group_lists(overrides)
        check_known_keys(OmegaConf.to_container(cfg, resolve=False))
        from ijr_cli.run.experiment import run  # heavy imports (torch) only once composition succeeded

        typed = OmegaConf.to_object(cfg)
        code = run(typed, run_dir=run_dir, config_yaml=OmegaConf.to_yaml(cfg, resolve=True), overrides=overrides)
    except UserError as e:
        in_use = isinstance(e, errors.RunDirectoryInUse)  # (that directory is another process's: left alone)
        if not in_use:
            _remove_fresh_run_dir(run_dir)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if not multirun:
            _fail(str(e))
        if not in_use:
            _record_failed_job(run_dir, overrides, str(e))
        return _job_failed(overrides, str(e))
    except errors.StorageError as e:
        message = f"{e}; free space or fix the directory, then the same command resumes from the last checkpoint"
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if not multirun:
            print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(errors.StorageError.exit_code) from None
        return _job_failed(overrides, message)
    except Exception as e:  # noqa: BLE001 - in a multirun, one job's crash must not stop the others
        if not multirun or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        import traceback

        traceback.print_exc()
        where = f" (traceback also in {run_dir / 'status.json'})" if (run_dir / "status.json").exists() else ""
        _record_failed_job(run_dir, overrides, f"{type(e).__name__}: {e}")
        return _job_failed(overrides, f"{type(e).__name__}: {e}{where}")
    if code:
        raise SystemExit(code)


def _pack_task(ref: str, sweep_dir: Path, overrides: List[str], multirun: bool) -> Optional[errors.JobFailure]:
    """Run pack FILE:INDEX (`sweep.packing.read_pack`): each member's config as ijr-sweep resolved it, its run
    directory below the sweep directory. A member refused at pre-flight fails alone (a FAILED status.json, as a
    refused job of a multirun); a crash of the pack fails every member still running (their status.json say so)."""
    from ijr_cli.core.config import TrainConfig
    from ijr_cli.run.pack import PackJob, run_pack

    try:
        entry = read_pack(ref)
        jobs = []
        for member in entry["members"]:
            typed = OmegaConf.to_object(
                OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.create(member["config"]))
            )
            jobs.append(PackJob(typed, sweep_dir / member["name"], member["config"], list(member["overrides"])))
        failures = run_pack(jobs, entry["name"], size=entry.get("size"))
    except UserError as e:
        if not multirun:
            _fail(str(e))
        return _job_failed(overrides, str(e))
    except Exception as e:  # noqa: BLE001 - as for one job: a pack's crash must not stop the multirun's other packs
        if not multirun or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        import traceback

        traceback.print_exc()  # (each member still running recorded FAILED with the traceback in its status.json)
        return _job_failed(overrides, f"{type(e).__name__}: {e}")
    failure = None
    for i, message in failures.items():
        _record_failed_job(jobs[i].run_dir, jobs[i].overrides, message)
        failure = _job_failed(jobs[i].overrides, message)
    return failure


def _record_failed_job(run_dir: Path, overrides: List[str], message: str) -> None:
    """A multirun job that failed before its run wrote anything (bad input, or a crash while building) leaves a
    FAILED status.json with the reason, and its overrides, so that `ijr-status` reports it; a directory that
    holds a run is left alone."""
    import yaml

    from ijr_cli.core.status import Status, write_status

    if (run_dir / "status.json").exists():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_status(run_dir / "status.json", Status(status="FAILED", error=message))
    (run_dir / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))


FAILED_JOBS = errors.FAILED_JOBS  # a multirun's failed jobs, reported when it ends (exit code 1)


def _job_failed(overrides: List[str], message: str) -> errors.JobFailure:
    """Record and print a failed job; the task returns it (a local_parallel launcher reads it from the job)."""
    failure = errors.JobFailure(list(overrides), message)
    print(errors.report_failure(failure, FAILED_JOBS), file=sys.stderr, flush=True)
    return failure


def train() -> None:
    """Console script `ijr-train`."""
    register()
    # torch.func's internals call the deprecated torch.jit.script on first use: not the user's concern
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        _train_task()
        return
    real = sys.stderr
    held = HeldStderr(real)
    sys.stderr = held
    try:
        _train_task()
        if FAILED_JOBS:
            held.release()  # (a launcher that ran the jobs elsewhere never started a task here)
            print(f"{PROG}: {len(FAILED_JOBS)} job(s) of the multirun failed; the others ran:", file=sys.stderr)
            for line in errors.failure_summary(FAILED_JOBS):
                print("  " + line, file=sys.stderr)
            raise SystemExit(1)
    except (KeyboardInterrupt, Terminated) as e:
        held.release()
        sys.stderr = real
        what = str(e) if isinstance(e, Terminated) else "interrupted"
        print(
            f"{PROG}: {what}; the same command (same hydra.run.dir) resumes it from its last checkpoint",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(e.exit_code if isinstance(e, Terminated) else 130) from None
    except SystemExit as e:
        if not held.released and e.code not in (0, None):
            report = "".join(held.held)
            sys.stderr = real
            _fail(one_line(report))
        raise
    finally:
        if sys.stderr is held:
            held.release()
            sys.stderr = real


if __name__ == "__main__":
    train()
