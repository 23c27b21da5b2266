"""A non-editable install (the normal case on a shared cluster): the wheel carries conf/ and sweeps/, and all four
commands work from a directory outside the repository. No network: the wheel is installed without dependencies
into a fresh venv that sees the dev venv's packages (a .pth line; the dev venv's editable ijr is not seen, since
.pth files of a directory added that way are not run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.timeout(600)


def _run(args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the wheel, the venv's bin folder, a work directory outside the repository)."""
    tmp = tmp_path_factory.mktemp("wheel")
    r = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", ROOT],
        cwd=tmp,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("ijr-*.whl")
    venv = tmp / "venv"
    assert _run([sys.executable, "-m", "venv", venv], cwd=tmp).returncode == 0
    bin_dir = venv / "bin"
    r = _run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    site = Path(
        _run(
            [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp
        ).stdout.strip()
    )
    (site / "dev_venv_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp / "elsewhere"
    work.mkdir()
    return wheel, bin_dir, work


def test_the_wheel_carries_the_configs_and_the_studies(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    conf = sorted(
        p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml") if p.parent.name != "local"
    )
    assert conf and all(f"ijr_cli/conf/{c}" in names for c in conf)
    assert all(f"ijr_cli/sweeps/{p.name}" in names for p in (ROOT / "sweeps").glob("*.yaml"))
    assert not any(n.startswith("ijr_cli/conf/local/") and n.endswith(".yaml") for n in names)  # site files stay
    assert "ijr_cli/report/explorer.js" in names  # the report page's scripts, embedded in every page


@pytest.mark.slow  # (31 s: make test was 12 min after issue 15; test-slow runs it)
def test_the_four_commands_run_from_outside_the_repository(installed):
    _, bin_dir, work = installed
    r = _run([bin_dir / "python", "-c", "import ijr_cli; print(ijr_cli.__file__)"], cwd=work)
    assert str(bin_dir.parent) in r.stdout, r.stdout  # the installed copy, not the source tree
    r = _run([bin_dir / "ijr-train", "trainer.max_steps=5", "trainer.progress=false", "hydra.run.dir=run"], cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((work / "run" / "summary.json").read_text())["status"] == "COMPLETED"
    r = _run([bin_dir / "ijr-sweep", "--list"], cwd=work)
    listed = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
    assert r.returncode == 0 and listed == {p.stem for p in (ROOT / "sweeps").glob("*.yaml")}, r.stdout + r.stderr
    r = _run(
        [bin_dir / "ijr-sweep", "eos_lr", "--tiny", "--sweep-dir", "s", "optimizer.lr=0.1", "trainer.max_steps=3"],
        cwd=work,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    r = _run([bin_dir / "ijr-status", "s"], cwd=work)
    assert r.returncode == 0 and "COMPLETED 1" in r.stdout, r.stdout + r.stderr
    r = _run([bin_dir / "ijr-report", "s", "--no-figures", "--no-slurm"], cwd=work)
    assert r.returncode == 0 and (work / "s" / "report" / "index.html").is_file(), r.stdout + r.stderr
