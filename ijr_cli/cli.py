"""Entry points; the only code that sees Hydra's config.

`ijr-train` is a plain Hydra 1.3 app (`--help`, `--cfg job`, `-m` work as usual) with one addition: bad input
ends with ONE line on stderr and exit code 2. Hydra reports composition errors (unknown option, wrong type,
unknown key) itself, over several lines, with exit code 1; so stderr is held back until the task starts, and
if Hydra gives up before that, its report is folded into one line. `HYDRA_FULL_ERROR=1` turns all this off.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import List

import hydra
from omegaconf import DictConfig, OmegaConf

from ijr_cli.config import register_configs
from ijr_cli.errors import Terminated, UserError

PROG = "ijr-train"
# conf/ sits at the top of the repository (design card); the package is installed editable (`make install`).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


class _HeldStderr(io.TextIOBase):
    """Stands in for sys.stderr: holds what is written until `release()`, then passes everything through."""

    def __init__(self, real):
        self.real, self.held, self.released = real, [], False

    def write(self, s: str) -> int:
        if self.released:
            return self.real.write(s)
        self.held.append(s)
        return len(s)

    def flush(self) -> None:
        if self.released:
            self.real.flush()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.real.write("".join(self.held))
            self.held.clear()

    def isatty(self) -> bool:
        return self.real.isatty()

    def fileno(self) -> int:
        return self.real.fileno()

    @property
    def encoding(self):
        return getattr(self.real, "encoding", "utf-8")


def one_line(report: str) -> str:
    """Fold Hydra's multi-line error report into one line, with a hint at the fix."""
    lines = [ln.strip() for ln in report.splitlines() if ln.strip()]
    lines = [ln for ln in lines if "HYDRA_FULL_ERROR" not in ln]
    if any(ln.startswith("Traceback") for ln in lines):
        last = lines[-1] if lines else "unknown error"
        if any(err in last for err in ("NotADirectoryError", "PermissionError", "FileExistsError", "OSError")):
            return f"cannot create the run directory ({last}); choose a writable hydra.run.dir or hydra.sweep.dir"
        return last
    keep, options = [], []
    in_options = False
    for ln in lines:
        if ln.startswith(("full_key:", "reference_type=", "object_type=", "To append to your config")):
            continue
        if ln.startswith("Config search path"):
            break
        if ln.startswith("Available options in"):
            in_options = True
            keep.append(ln.rstrip(":") + ":")
            continue
        (options if in_options else keep).append(ln)
    text = ""
    for ln in keep:
        text += ln if not text else ((" " if text.endswith((".", ":")) else ": ") + ln)
    if options:
        text += " " + ", ".join(options)
    if text.startswith(("Error merging override", "Could not override")):
        text += " (ijr-train --cfg job lists every field with its value)"
    return text or "unknown error"


def _fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.__stderr__ if sys.stderr is None else sys.stderr, flush=True)
    raise SystemExit(UserError.exit_code)


def _remove_fresh_run_dir(run_dir: Path) -> None:
    """A run directory that Hydra made for this call and that holds no run is removed (nothing half-written)."""
    if not run_dir.is_dir() or (run_dir / "status.json").exists():
        return
    if all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _train_task(cfg: DictConfig) -> None:
    if isinstance(sys.stderr, _HeldStderr):
        sys.stderr.release()
    from hydra.core.hydra_config import HydraConfig

    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides: List[str] = list(hc.overrides.task)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        from ijr_cli.experiment import run  # heavy imports (torch) only once composition succeeded

        typed = OmegaConf.to_object(cfg)
        code = run(typed, run_dir=run_dir, config_yaml=OmegaConf.to_yaml(cfg, resolve=True), overrides=overrides)
    except UserError as e:
        _remove_fresh_run_dir(run_dir)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if not multirun:
            _fail(str(e))
        _job_failed(overrides, str(e))
        return
    except Exception as e:  # noqa: BLE001 - in a multirun, one job's crash must not stop the others
        if not multirun or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        import traceback

        traceback.print_exc()
        where = f" (traceback also in {run_dir / 'status.json'})" if (run_dir / "status.json").exists() else ""
        _job_failed(overrides, f"{type(e).__name__}: {e}{where}")
        return
    if code:
        raise SystemExit(code)


FAILED_JOBS: List[str] = []  # a multirun's failed jobs, reported when it ends (exit code 1)


def _job_failed(overrides: List[str], message: str) -> None:
    line = f"{PROG}: job failed: {' '.join(overrides)}: {message}"
    FAILED_JOBS.append(line)
    print(line, file=sys.stderr, flush=True)


def train() -> None:
    """Console script `ijr-train`."""
    register_configs()
    # torch.func's internals call the deprecated torch.jit.script on first use: not the user's concern
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        _train_task()
        return
    real = sys.stderr
    held = _HeldStderr(real)
    sys.stderr = held
    try:
        _train_task()
        if FAILED_JOBS:
            print(f"{PROG}: {len(FAILED_JOBS)} job(s) of the multirun failed; the others ran:", file=sys.stderr)
            for line in FAILED_JOBS:
                print("  " + line, file=sys.stderr)
            raise SystemExit(1)
    except (KeyboardInterrupt, Terminated) as e:
        held.release()
        sys.stderr = real
        what = str(e) if isinstance(e, Terminated) else "interrupted"
        print(f"{PROG}: {what}; the run is marked FAILED and the same command (same hydra.run.dir) resumes it "
              f"from its last checkpoint", file=sys.stderr, flush=True)
        raise SystemExit(Terminated.exit_code if isinstance(e, Terminated) else 130) from None
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


# ---------------------------------------------------------------------------------------------- ijr-sweep
SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"


def preflight(jobs: List[List[str]], fixed: List[str], check_files: bool = True) -> None:
    """Compose and validate every job's config before anything is launched; the first bad job is named.
    With `check_files`, an npz dataset's file must exist too (the one data check that needs no loading)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ijr_cli.config import validate

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        for job in jobs:
            try:
                cfg = compose(config_name="train", overrides=fixed + job)
                typed = OmegaConf.to_object(cfg)
                validate(typed)
                path = typed.dataset.path
                if check_files and typed.dataset.name == "npz" and path and not Path(path).is_file():
                    raise UserError(f"dataset.path={path}: no such file; copy the .npz there or pass "
                                    f"dataset.path=FILE")
            except UserError as e:
                raise UserError(f"job {' '.join(job)}: {e}") from None
            except Exception as e:  # noqa: BLE001 - Hydra's composition errors, folded into one line
                raise UserError(f"job {' '.join(job)}: {one_line(str(e))}") from None
    GlobalHydra.instance().clear()


def sweep(argv: List[str] = None) -> None:
    """Console script `ijr-sweep`: run a named study from sweeps/ as Hydra multiruns of ijr-train."""
    import argparse
    import subprocess

    from ijr_cli import sweeps

    parser = argparse.ArgumentParser(
        prog="ijr-sweep", description="Run a named sweep (sweeps/NAME.yaml) as Hydra multiruns of ijr-train. "
        "Every job runs in SWEEP_DIR/<its swept overrides>; running the sweep again skips COMPLETED jobs and "
        "resumes the others from their checkpoints.")
    parser.add_argument("name", nargs="?", help="a sweep in sweeps/ (e.g. table1_simplecnn) or a path to a .yaml")
    parser.add_argument("overrides", nargs="*", help="extra ijr-train overrides (key=value); one of a swept key "
                        "replaces that dimension (optimizer.lr=0.01,0.1; seed=0)")
    parser.add_argument("--tiny", action="store_true", help="the sweep's CPU version (its 'tiny' section)")
    parser.add_argument("--dry-run", action="store_true", help="print the jobs and check their configs; run nothing")
    parser.add_argument("--sweep-dir", help="where the jobs' run directories go (default outputs/sweeps/NAME)")
    parser.add_argument("--list", action="store_true", help="list the named sweeps")
    args = parser.parse_intermixed_args(argv)
    prog = "ijr-sweep"
    try:
        if args.list or not args.name:
            for path in sorted(SWEEPS_DIR.glob("*.yaml")):
                study = sweeps.load_study(path)
                print(f"{path.stem:32} {len(study.jobs()):4d} jobs  {study.description}")
            if not args.name:
                return
        bad = [o for o in args.overrides if "=" not in o]
        if bad:
            raise UserError(f"overrides must be key=value, got {' '.join(bad)}")
        study = sweeps.load_study(sweeps.find_study(args.name, SWEEPS_DIR), tiny=args.tiny)
        study = study.with_overrides(list(args.overrides))
        sweep_dir = Path(args.sweep_dir or Path("outputs") / "sweeps" / study.name)
        jobs = study.jobs()
        print(sweeps.describe(study, sweep_dir))
        preflight(jobs, study.fixed)
        if args.dry_run:
            for job in jobs:
                print(f"  {sweep_dir / sweeps.job_directory_name(job)}")
            print(f"{prog}: dry run: {len(jobs)} job(s) composed and validated; nothing launched")
            return
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(UserError.exit_code) from None
    exe = str(Path(sys.executable).with_name("ijr-train"))
    failed = 0
    for cmd in sweeps.multirun_commands(study, sweep_dir):
        rc = subprocess.call([exe, *cmd])
        failed += rc != 0
    if failed:
        print(f"{prog}: {failed} of {len(study.grids)} multirun(s) ended with an error (see above)", file=sys.stderr)
        raise SystemExit(1)
