"""A real one-node SLURM for the tests: Debian's slurm-wlm daemons, started as root without systemd.

`LocalSlurm.start()` installs slurmctld, slurmd, slurm-client and munge with apt-get when they are missing,
writes a configuration for this machine (daemons on 127.0.0.1 only, free ports, no cgroups, a private munge
key and socket), starts munged, slurmctld and slurmd in the foreground of their own processes, and waits until
the node is idle. `stop()` cancels every job, kills what is left of them, and stops the daemons by PID
(SIGTERM, then SIGKILL: a slurmd that lost its controller ignores SIGTERM). Everything but the packages lives in
one temporary directory, removed afterwards. Clients find the cluster through SLURM_CONF only.

Config lines that matter (measured on these machines):
  CommunicationParameters=NoCtldInAddrAny,NoInAddrAny   bind 127.0.0.1 only
  ProctrackType=proctrack/linuxproc, TaskPlugin=task/none   no cgroups in a container
  AuthInfo=...,cred_expire=10   a requeued job may start again after ~11 s instead of ~121 s
  MinJobAge=3600   finished jobs stay visible to squeue (ijr-status and the tests read states from it)
There is no accounting (sacct fails): ijr never waits on submitit's job objects, which poll sacct.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "munged"]


class SlurmUnavailable(Exception):
    """This machine cannot run the cluster (not root and SLURM missing, no apt, ...): the tests skip."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_packages(log: Path) -> None:
    """apt-get install the daemons (services are not started: policy-rc.d forbids it; there is no systemd)."""
    if all(shutil.which(b) for b in BINARIES):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(
            f"SLURM is not installed ({', '.join(b for b in BINARIES if not shutil.which(b))} "
            f"missing) and installing it needs root"
        )
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("SLURM is not installed and there is no apt-get to install Debian's slurm-wlm")
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    try:
        with open(log, "w") as f:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=900)
            if rc != 0:  # a fresh machine may have no package lists yet
                subprocess.call(["apt-get", "update", "-q"], stdout=f, stderr=subprocess.STDOUT, env=env, timeout=900)
                rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=900)
    finally:
        if made_policy:
            policy.unlink()
    if rc != 0:  # no package repository reachable: the machine cannot have a SLURM (the skip reason says why)
        tail = " | ".join(line.strip() for line in log.read_text().splitlines()[-4:])
        raise SlurmUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {tail}")


class LocalSlurm:
    def __init__(self):
        self.dir: Optional[Path] = None
        self.procs: Dict[str, subprocess.Popen] = {}
        self.node = socket.gethostname().split(".")[0]
        self.env: Dict[str, str] = {}

    # ------------------------------------------------------------------ helpers for tests
    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        out = subprocess.run(list(cmd), capture_output=True, text=True, env={**os.environ, **self.env}, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def job_state(self, job_id: str) -> Optional[str]:
        out = self.run("squeue", "-h", "-r", "-t", "all", "-j", job_id, "-o", "%T", check=False).strip()
        return out.splitlines()[0] if out else None

    def diagnose(self, job_id: str) -> str:
        """What a timed-out wait needs to be understood: the job's state and reason, the node's, the daemons' logs."""
        job = self.run("scontrol", "show", "job", job_id, check=False)
        fields = [
            t
            for t in job.split()
            if t.split("=", 1)[0]
            in ("JobState", "Reason", "Restarts", "RunTime", "TimeLimit", "SubmitTime", "StartTime", "EndTime")
        ]
        node = self.run("sinfo", "-N", "-h", "-o", "%N %T %E", check=False).strip()
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((self.dir / "log").glob("slurm*.log"))
        )
        return f"job {job_id}: {' '.join(fields)}; node: {node}\n{logs}"

    def job_ids(self) -> List[str]:
        return self.run("squeue", "-h", "-r", "-t", "all", "-o", "%i").split()

    def field(self, job_id: str, name: str) -> Optional[str]:
        for token in self.run("scontrol", "show", "job", job_id).split():
            if token.startswith(name + "="):
                return token.split("=", 1)[1]
        return None

    # ------------------------------------------------------------------ life cycle
    def start(self) -> "LocalSlurm":
        install_packages(Path(tempfile.gettempdir()) / "ijr-slurm-apt.log")
        self.dir = Path(tempfile.mkdtemp(prefix="ijr-slurm-", dir="/tmp"))
        d = self.dir
        for sub in ("munge", "state", "spool", "log"):
            (d / sub).mkdir()
        os.chmod(d, 0o755)  # munged insists on o+x for its socket directory and the parents
        os.chmod(d / "munge", 0o755)
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = d / "munge" / "munge.socket"
        self._spawn(
            "munged",
            [
                "munged",
                "-F",
                f"--key-file={key}",
                f"--socket={sock}",
                f"--pid-file={d / 'munge/munged.pid'}",
                f"--log-file={d / 'log/munged.log'}",
                f"--seed-file={d / 'munge/munged.seed'}",
            ],
        )
        self._wait(lambda: sock.exists(), 15, "munged did not create its socket")
        mem = "1000"
        probe = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout
        for token in probe.split():
            if token.startswith("RealMemory="):
                mem = token.split("=", 1)[1]
        conf = d / "slurm.conf"
        conf.write_text(f"""# written by the ijr test fixture (tests/slurm_cluster.py)
ClusterName=ijrtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock},cred_expire=10
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation={d / "state"}
SlurmdSpoolDir={d / "spool"}
SlurmctldPidFile={d / "slurmctld.pid"}
SlurmdPidFile={d / "slurmd.pid"}
SlurmctldLogFile={d / "log/slurmctld.log"}
SlurmdLogFile={d / "log/slurmd.log"}
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
InactiveLimit=0
KillWait=10
MinJobAge=3600
NodeName={self.node} NodeAddr=127.0.0.1 NodeHostname={self.node} CPUs={os.cpu_count()} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        self.env = {"SLURM_CONF": str(conf)}
        env = {**os.environ, **self.env}
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(conf)], env)
        self._wait(lambda: "UP" in self.run("scontrol", "ping", check=False), 30, "slurmctld did not come up")
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(conf)], env)
        self._wait(
            lambda: self.run("sinfo", "-h", "-n", self.node, "-o", "%t", check=False).strip() == "idle",
            60,
            "the node never became idle",
        )
        return self

    def _spawn(self, name: str, cmd: List[str], env=None) -> None:
        out = open(self.dir / "log" / f"{name}.stdout", "w")
        self.procs[name] = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env or os.environ, start_new_session=True
        )

    def _wait(self, ready, timeout: float, message: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
            if dead:
                message += f" ({', '.join(dead)} exited)"
                break
            time.sleep(0.25)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((self.dir / "log").glob("*")))
        self.stop()
        raise RuntimeError(f"{message}\n{logs}")

    def stop(self) -> None:
        if self.dir is None:
            return
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            ids = self.run("squeue", "-h", "-o", "%i", check=False).split()
            if ids:
                self.run("scancel", *ids, check=False)
                deadline = time.time() + 20
                while time.time() < deadline and self.run("squeue", "-h", "-o", "%i", check=False).strip():
                    time.sleep(0.5)
        self._kill_leftover_job_processes()
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def _kill_leftover_job_processes(self) -> None:
        """Processes of this cluster's jobs (their environment holds our SLURM_CONF), normally none."""
        mark = f"SLURM_CONF={self.env.get('SLURM_CONF')}".encode()
        for proc_dir in Path("/proc").glob("[0-9]*"):
            pid = int(proc_dir.name)
            if pid == os.getpid():
                continue
            try:
                environ = (proc_dir / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if mark in environ and any(e.startswith(b"SLURM_JOB_ID=") for e in environ):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
