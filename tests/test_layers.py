"""The layers stay one-way and the torch-free half stays torch-free: import-linter's contracts (pyproject.toml,
`make lint`) hold for the package, cover every part of it, and break on the imports they exist to stop."""

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import ROOT

import ijr_cli

LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _lint(root: Path, env=None):
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_the_contracts_hold():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in r.stdout


def test_every_part_of_the_package_is_in_a_layer():
    layers = next(c for c in CONTRACTS if c["type"] == "layers")["layers"]
    named = {part.strip() for layer in layers for part in layer.split("|")}
    parts = {f"ijr_cli.{m.name}" for m in pkgutil.iter_modules(ijr_cli.__path__)}
    assert parts == named, "add new modules and subpackages to the layers contract (and README's code map)"


@pytest.mark.parametrize(
    "module,line,broken",
    [
        ("report/tables.py", "import torch", "no torch"),
        ("report/tables.py", "from ijr_cli.measure import evaluate", "no torch"),  # torch, indirectly
        ("cli/report.py", "from ijr_cli.track import tensorboard", "no torch"),  # (only --to's export is ignored)
        ("cli/sweep.py", "from ijr_cli.track import live", "no torch"),
        ("sweep/state.py", "from ijr_cli.run import build", "layers"),
        ("data.py", "from ijr_cli.measure import schedule", "layers"),
        ("core/records.py", "from ijr_cli.curvature import lanczos", "layers"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, broken):
    for package in ("ijr_cli", "hydra_plugins"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "ijr_cli" / module, "a") as f:
        f.write(f"\n{line}  # noqa\n")
    r = _lint(tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 1 and "broken" in r.stdout, r.stdout[-3000:] + r.stderr
    assert f"{broken}:" in r.stdout.split("Broken contracts")[1]  # (an import may break more than one)
