"""Where the package's configuration (`conf/`) and study files (`sweeps/`) are, installed or not.

In the source tree both folders sit at the top of the repository (the design card); a wheel carries them as
package data inside `ijr_cli/` (pyproject.toml maps them there), so a non-editable install finds them too.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # ijr_cli/


def _folder(name: str) -> Path:
    packaged = _PACKAGE / name  # a wheel: site-packages/ijr_cli/<name>
    return packaged if packaged.is_dir() else _PACKAGE.parent / name  # the source tree: <repo>/<name>


def conf_dir() -> Path:
    """The Hydra config folder of `ijr-train` (train.yaml and one folder per config group)."""
    return _folder("conf")


def sweeps_dir() -> Path:
    """The named studies (one YAML file each) of `ijr-sweep`."""
    return _folder("sweeps")
