"""`ijr-sweep` (launch a named study) and `ijr-status` (what a sweep directory holds).

`ijr-sweep NAME` expands sweeps/NAME.yaml into jobs, composes and validates every job's config (the
pre-flight), looks at the sweep directory, and launches only the jobs that still need to run, all in one
`ijr-train -m` call with ijr's job-list sweeper and the launcher chosen by `launcher=local|local_parallel|slurm`.
With `launcher=slurm` it returns once SLURM has queued the jobs; `ijr-status SWEEP_DIR` follows them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml
from omegaconf import OmegaConf

from ijr_cli.cli.compose import check_group_lists, composer
from ijr_cli.cli.hydra_errors import one_line
from ijr_cli.core import records
from ijr_cli.core.config import DatasetName, check_data_files, check_known_keys, validate
from ijr_cli.core.errors import UserError
from ijr_cli.core.resources import sweeps_dir
from ijr_cli.sweep import packing
from ijr_cli.sweep import state as sweep_state
from ijr_cli.sweep import study as sweeps
from ijr_cli.track.base import check_installed, selected

SWEEPS_DIR = sweeps_dir()
# launcher class -> the name of its conf/launcher option
LAUNCHERS = {"BasicLauncher": "local", "LocalParallelLauncher": "local_parallel", "NonBlockingSlurmLauncher": "slurm"}


def _error(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(UserError.exit_code)


def _is_launch_override(override: str) -> bool:
    """Overrides that choose how jobs run, not what they compute: kept out of the jobs' identity."""
    key = override.lstrip("+~").split("=", 1)[0]
    return key == "launcher" or key.startswith(("hydra.", "hydra/"))


def preflight(
    jobs: List[List[str]], fixed: List[str], check_files: bool = True, torchvision_files: bool = True
) -> List[str]:
    """Compose every job's config and validate it exactly as `ijr-train` does, before anything is launched; the
    first bad job is named. With `check_files` the data files must exist too: an npz dataset's file, and with
    `torchvision_files` torchvision's (for local launches; a cluster's data may live elsewhere). Returns each job's
    resolved config as YAML (what its run directory's config.yaml will hold)."""
    resolved = []
    with composer() as compose:
        for job in jobs:
            try:
                check_group_lists(fixed + job)
                cfg = compose(config_name="train", overrides=fixed + job)
                check_known_keys(OmegaConf.to_container(cfg, resolve=False))
                typed = OmegaConf.to_object(cfg)
                validate(typed)
                check_installed(selected(typed.logger))
                d = typed.dataset
                if check_files and (torchvision_files or d.name == DatasetName.npz):
                    check_data_files(d.name, d.data_dir, d.download, d.path)
                resolved.append(OmegaConf.to_yaml(cfg, resolve=True))
            except UserError as e:
                raise UserError(f"job {' '.join(job)}: {e}") from None
            except Exception as e:  # noqa: BLE001 - Hydra's composition errors, folded into one line
                raise UserError(f"job {' '.join(job)}: {one_line(_with_causes(e))}") from None
    return resolved


def _with_causes(error: BaseException) -> str:
    """The error and the errors that caused it, one per line, as Hydra reports them on stderr (where the cause
    holds the reason: "Error merging override x=y" / "Invalid value 'y', expected one of ...")."""
    lines, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        lines.append(str(error))
        error = error.__cause__
    return "\n".join(lines)


def _chosen_launcher(launch: List[str]) -> str:
    """The conf/launcher option that the launch overrides choose (local when none does)."""
    return next((o.split("=", 1)[1] for o in launch if o.lstrip("+~").split("=", 1)[0] == "launcher"), "local")


def launcher_settings(fixed: List[str], launch: List[str]) -> Tuple[str, Dict[str, object]]:
    """The launcher a launch would use (local / local_parallel / slurm) and its resolved settings."""
    try:
        with composer() as compose:
            cfg = compose(config_name="train", overrides=fixed + launch, return_hydra_config=True)
            node = cfg.hydra.launcher
            target = str(node.get("_target_", "")).rsplit(".", 1)[-1]
            name = LAUNCHERS.get(target, target)
            settings = {k: node[k] for k in node if k not in ("_target_", "submitit_folder")}
            settings = json.loads(json.dumps(OmegaConf.to_container(OmegaConf.create(settings), resolve=True)))
    except Exception as e:  # noqa: BLE001 - a bad launcher override or site file, in one line
        message = one_line(str(e))
        unknown = [
            o.split("=", 1)[0]
            for o in launch
            if o.startswith("hydra.launcher.") and f"Could not override '{o.split('=', 1)[0]}'" in message
        ]
        if unknown:
            chosen = _chosen_launcher(launch)
            message = (
                f"{unknown[0]} is not a setting of launcher={chosen} (ijr-train launcher={chosen} --cfg hydra "
                f"lists them under hydra.launcher; SLURM settings need launcher=slurm)"
            )
        raise UserError(f"launcher settings: {message}") from None
    return name, settings


def describe_launcher(name: str, settings: Dict[str, object]) -> str:
    if name == "local":
        return "launcher local: one job after another in this process"
    if name == "local_parallel":
        return (
            f"launcher local_parallel: {settings.get('max_parallel')} job(s) at a time, GPUs "
            f"{settings.get('gpus') if settings.get('gpus') is not None else 'auto (one job each)'}"
        )
    keys = (
        "partition",
        "account",
        "qos",
        "gres",
        "gpus_per_node",
        "cpus_per_task",
        "mem_gb",
        "timeout_min",
        "array_parallelism",
        "signal_delay_s",
        "max_num_timeout",
        "setup",
        "additional_parameters",
    )
    shown = ", ".join(f"{k}={settings.get(k)}" for k in keys if settings.get(k) not in (None, [], {}))
    return f"launcher {name}: each job asks for {shown}"


def _action(state: Optional[sweep_state.JobState]) -> str:
    """What a launch does with a job: run (new or MISSING), resume (FAILED or stopped), or skip (finished or
    running/queued)."""
    bucket = state.bucket if state else "MISSING"
    return {"MISSING": "run", "FAILED": "resume"}.get(bucket, f"skip ({bucket})")


def _plan_line(states: Dict[str, sweep_state.JobState], names: List[str]) -> Tuple[List[str], str]:
    """The jobs to launch and a one-line account of them and of the others."""
    actions = [_action(states.get(name)) for name in names]
    to_run = [name for name, a in zip(names, actions) if not a.startswith("skip")]
    resume = actions.count("resume")
    skipped = [
        f"{actions.count(f'skip ({b})')} {b}" for b in ("COMPLETED", "DIVERGED", "RUNNING") if f"skip ({b})" in actions
    ]
    line = f"{len(names)} job(s): {len(to_run)} to run ({len(to_run) - resume} new, {resume} to resume)" + (
        f"; skipped: {', '.join(skipped)}" if skipped else ""
    )
    return to_run, line


def _check_writable_directory(path: Path) -> None:
    """The sweep directory is a directory, or can be made one, and can be written (checked without writing)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--sweep-dir {path} is a file, not a directory; choose a directory")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--sweep-dir {path}: {existing} is not a writable directory; choose a writable place")


def _check_same_configs(sweep_dir: Path, names: List[str], resolved: List[str]) -> None:
    for name, new in zip(names, resolved):
        conflict = records.config_conflict(sweep_dir / name / "config.yaml", new)
        if conflict:
            raise UserError(
                f"{sweep_dir / name} holds a run with a different config ({conflict}); "
                f"choose another --sweep-dir to keep both, or move that directory away"
            )


def sweep(argv: Optional[List[str]] = None) -> None:
    """Console script `ijr-sweep`."""
    parser = argparse.ArgumentParser(
        prog="ijr-sweep",
        description="Launch a named sweep (sweeps/NAME.yaml): every job's config is checked "
        "first, jobs already COMPLETED, DIVERGED or running are skipped, the others start or resume in "
        "SWEEP_DIR/<their swept overrides>. launcher=local (default) | local_parallel | slurm.",
    )
    parser.add_argument("name", nargs="?", help="a sweep in sweeps/ (e.g. lr_bs) or a path to a .yaml")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="extra overrides (key=value) for every job; one of a swept "
        "key replaces that dimension (optimizer.lr=0.01,0.1; seed=0); launcher=slurm and "
        "hydra.launcher.KEY=VALUE choose how the jobs run",
    )
    parser.add_argument("--tiny", action="store_true", help="the sweep's CPU version (its 'tiny' section)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check every job's config, print the jobs, their state and resources; launch nothing",
    )
    parser.add_argument("--sweep-dir", help="where the jobs' run directories go (default outputs/sweeps/NAME)")
    parser.add_argument(
        "--pack",
        metavar="K",
        help="train up to K jobs that differ only in seed and hyperparameters (lr, momentum, weight decay, "
        "label smoothing, mixup, SAM/EJR strengths, ...) together in one process, vmapped over their stacked "
        "parameters; auto: as many as fit the device's free memory. Each job keeps its own run directory",
    )
    parser.add_argument("--list", action="store_true", help="list the named sweeps")
    args = parser.parse_intermixed_args(argv)
    prog = "ijr-sweep"
    try:
        if args.list or not args.name:
            for path in sorted(SWEEPS_DIR.glob("*.yaml")):
                study = sweeps.load_study(path)
                print(f"{path.stem:28} {len(study.jobs()):4d} jobs  {study.description}")
            if not args.name:
                return
        pack_size = packing.parse_pack_option(args.pack) if args.pack is not None else None
        bad = [o for o in args.overrides if "=" not in o]
        if bad:
            raise UserError(f"overrides must be key=value, got {' '.join(bad)}")
        launch = [o for o in args.overrides if _is_launch_override(o)]
        study = sweeps.load_study(sweeps.find_study(args.name, SWEEPS_DIR), tiny=args.tiny)
        study = study.with_overrides([o for o in args.overrides if not _is_launch_override(o)])
        sweep_dir = Path(args.sweep_dir or Path("outputs") / "sweeps" / study.name)
        _check_writable_directory(sweep_dir)
        jobs = study.jobs()
        names = [sweeps.job_directory_name(j) for j in jobs]
        print(sweeps.describe(study, sweep_dir))
        resolved = preflight(jobs, study.fixed, torchvision_files=_chosen_launcher(launch) != "slurm")
        launcher, settings = launcher_settings(study.fixed, launch)
        print("  " + describe_launcher(launcher, settings))
        states = {s.name: s for s in sweep_state.sweep_states(sweep_dir)} if sweep_dir.is_dir() else {}
        _check_same_configs(sweep_dir, names, resolved)
        to_run, line = _plan_line(states, names)
        print("  " + line)
        packs: List[packing.Pack] = []
        if args.pack is not None:
            index = {n: i for i, n in enumerate(names)}
            run_idx = [index[n] for n in to_run]
            packs, differing = packing.plan_packs([resolved[i] for i in run_idx], pack_size)
            packs = [packing.Pack(p.name, [run_idx[i] for i in p.members], p.reason_alone) for p in packs]
            lines = packing.describe_packs(packs, differing, names)
            print("\n".join("  " + line for line in (lines if args.dry_run else lines[:2])))
        if args.dry_run:
            for name in names:
                print(f"  {_action(states.get(name)):18} {sweep_dir / name}")
            print(f"{prog}: dry run: {len(jobs)} job(s) composed and validated; nothing launched")
            return
        if launcher == "slurm" and not shutil.which("sbatch"):
            raise UserError(
                "launcher=slurm needs SLURM's sbatch on PATH (and SLURM_CONF if the cluster's config "
                "is not in the default place); run where jobs can be submitted, or use launcher=local"
            )
    except UserError as e:
        _error(prog, str(e))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y-%m-%dT%H-%M-%S-%f")
    sweep_state.write_plan(
        sweep_dir,
        {
            "study": study.name,
            "file": str(study.path),
            "tiny": study.tiny,
            "launched": records.now_iso(),
            "command": ["ijr-sweep", *(argv if argv is not None else sys.argv[1:])],
            "launcher": launcher,
            "fixed": study.fixed,
            "jobs": [{"name": n, "overrides": j} for n, j in zip(names, jobs)],
        },
    )
    if not to_run:
        print(f"{prog}: nothing to launch: every job is COMPLETED, DIVERGED or running (ijr-status {sweep_dir})")
        return
    launch_dir = sweep_dir / ".launch"
    launch_dir.mkdir(exist_ok=True)
    jobs_file = launch_dir / f"jobs-{stamp}.yaml"
    by_name = dict(zip(names, jobs))
    entries = [{"name": n, "overrides": by_name[n]} for n in to_run]
    if args.pack is not None:
        entries = _pack_entries(launch_dir / f"packs-{stamp}.yaml", packs, names, jobs, resolved, args.pack)
    jobs_file.write_text(OmegaConf.to_yaml(OmegaConf.create(entries)))
    cmd = [
        str(Path(sys.executable).with_name("ijr-train")),
        "-m",
        "hydra/sweeper=ijr_jobs",
        f"hydra.sweeper.jobs_file={jobs_file}",
        "hydra.sweeper.validate=false",
        *study.fixed,
        *launch,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    rc, stopped_by = run_owned_child(cmd)
    if stopped_by is not None:
        print(
            f"{prog}: stopped by {signal.Signals(stopped_by).name}; the running job checkpointed; ijr-status "
            f"{sweep_dir} shows where each job is, and the same command resumes the sweep",
            file=sys.stderr,
        )
        raise SystemExit(130 if stopped_by == signal.SIGINT else 143)
    if launcher == "slurm":
        if rc == 0:
            as_packs = f" as {len(entries)} array task(s) (packs)" if args.pack is not None else ""
            print(f"{prog}: {len(to_run)} job(s) queued on SLURM{as_packs}; follow them with: ijr-status {sweep_dir}")
        raise SystemExit(rc)
    states = sweep_state.sweep_states(sweep_dir)
    print(status_report(sweep_dir, states, show_all=False))
    failed = [s for s in states if s.name in set(to_run) and s.bucket in ("FAILED", "MISSING")]
    if rc or failed:
        raise SystemExit(1)


def _pack_entries(
    packs_file: Path, packs: List[packing.Pack], names: List[str], jobs: List[List[str]], resolved: List[str], size: str
) -> List[dict]:
    """The launch's jobs with --pack: one job per pack (its members in `packs_file`, read by the pack's process:
    `ijr-train +ijr_pack=FILE:INDEX`), and the jobs that cannot be packed as they are."""
    listed, entries = [], []
    for pack in packs:
        if pack.reason_alone:
            entries.extend({"name": names[i], "overrides": jobs[i]} for i in pack.members)
            continue
        members = [{"name": names[i], "overrides": jobs[i], "config": resolved[i]} for i in pack.members]
        listed.append({"name": pack.name, "size": size if size == "auto" else int(size), "members": members})
        ref = f"{packs_file.absolute()}:{len(listed) - 1}".replace("'", "\\'")
        entries.append({"name": f"{packing.PACK_DIR}/{pack.name}", "overrides": [f"+{packing.PACK_KEY}='{ref}'"]})
    records.write_atomic(packs_file, yaml.safe_dump(listed, sort_keys=False, width=120))
    return entries


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


def _child_setup(parent: int) -> None:
    """In the child, before it runs: its own process group (a terminal's Ctrl-C reaches only ijr-sweep, which
    forwards it once), and SIGTERM when ijr-sweep dies, even by kill -9 (Linux's PR_SET_PDEATHSIG)."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(143)


def run_owned_child(cmd: List[str]) -> Tuple[int, Optional[int]]:
    """Run the sweep's `ijr-train -m` as a child that cannot outlive ijr-sweep; returns its exit code and the
    signal that stopped the sweep (None when none did). SIGINT, SIGTERM and SIGUSR2 sent to ijr-sweep reach the
    child as SIGTERM (SIGUSR2 as itself), which stops the running job at a step boundary with a checkpoint and
    ends the multirun; a second one stops the job at once."""
    parent = os.getpid()
    child = subprocess.Popen(cmd, preexec_fn=lambda: _child_setup(parent))
    received: List[int] = []

    def forward(signum, frame) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGUSR2 if signum == signal.SIGUSR2 else signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        rc = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return rc, (received[0] if received else None)


# ------------------------------------------------------------------------------------------------ ijr-status
def status_report(sweep_dir: Path, states: List[sweep_state.JobState], show_all: bool) -> str:
    plan = sweep_state.read_plan(sweep_dir) or {}
    counts = sweep_state.counts(states)
    head = f"{sweep_dir}: {len(states)} job(s)"
    if plan.get("study"):
        head += f" of sweep {plan['study']} (launched {plan.get('launched', '?')} with {plan.get('launcher', '?')})"
    lines = [head, "  " + "  ".join(f"{b} {counts[b]}" for b in sweep_state.BUCKETS)]
    order = {b: i for i, b in enumerate(("FAILED", "MISSING", "RUNNING", "DIVERGED", "COMPLETED"))}
    for st in sorted(states, key=lambda s: (order[s.bucket], s.name)):
        if st.bucket == "COMPLETED" and not show_all:
            continue
        measures = st.measures()
        label = " ".join(st.overrides) if st.bucket in ("FAILED", "MISSING") and st.overrides else st.name
        lines.append(f"  {st.label:9} {label}  {measures + '  ' if measures else ''}{st.detail}".rstrip())
    return "\n".join(lines)


def status(argv: Optional[List[str]] = None) -> None:
    """Console script `ijr-status`."""
    parser = argparse.ArgumentParser(
        prog="ijr-status",
        description="Count a sweep directory's jobs as COMPLETED / RUNNING (or queued) / "
        "FAILED / DIVERGED / MISSING and list every job that is not COMPLETED, failures with their overrides. "
        "Reads the run directories' status.json, the sweep's plan (sweep.yaml) and, for SLURM sweeps, squeue.",
    )
    parser.add_argument("sweep_dir", help="a sweep directory (outputs/sweeps/NAME or a multirun directory)")
    parser.add_argument("--all", action="store_true", help="list the COMPLETED jobs too")
    parser.add_argument("--json", action="store_true", help="print one JSON object (counts and jobs)")
    parser.add_argument("--no-slurm", action="store_true", help="do not ask SLURM (squeue) about queued jobs")
    parser.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=10.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 10) until no job is running: a live table on a terminal, a line per "
        "refresh (counts and the jobs that changed) elsewhere",
    )
    args = parser.parse_args(argv)
    sweep_dir = Path(args.sweep_dir)
    if args.watch is not None and not args.watch > 0:
        _error("ijr-status", f"--watch {args.watch:g}: give the seconds between refreshes, > 0")
    if not sweep_dir.is_dir():
        hint = sweep_state.tiny_hint(sweep_dir) or "; give a sweep directory such as outputs/sweeps/NAME"
        _error("ijr-status", f"{sweep_dir} is not a directory{hint}")
    states = sweep_state.sweep_states(sweep_dir, query_slurm=not args.no_slurm)
    if not states:
        _error(
            "ijr-status",
            f"{sweep_dir} holds no runs and no sweep plan (sweep.yaml); give the directory that "
            f"ijr-sweep or ijr-train -m wrote (the parent of the run directories)",
        )
    if args.watch is not None:
        from ijr_cli.sweep import watch

        try:
            watch.watch(
                sweep_dir,
                args.watch,
                sys.stdout,
                sys.stdout.isatty(),
                lambda: sweep_state.sweep_states(sweep_dir, query_slurm=not args.no_slurm),
            )
        except KeyboardInterrupt:
            print("ijr-status: stopped watching", file=sys.stderr)
        return
    if args.json:
        print(
            json.dumps(
                {
                    "sweep_dir": str(sweep_dir),
                    "counts": sweep_state.counts(states),
                    "jobs": [s.as_dict() for s in states],
                },
                indent=1,
            )
        )
    else:
        print(status_report(sweep_dir, states, show_all=args.all))
