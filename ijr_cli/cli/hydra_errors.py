"""Hydra's error reports as ijr's one line: bad input ends with ONE line on stderr and exit code 2.

Hydra reports composition errors (unknown option, wrong type, unknown key) itself, over several lines, with exit
code 1; so stderr is held back until the task starts (`HeldStderr`), and if Hydra gives up before that, its report
is folded into one line (`one_line`).
"""

from __future__ import annotations

import io
import re

from ijr_cli.core.config import fields_at
from ijr_cli.core.errors import did_you_mean
from ijr_cli.core.resources import conf_dir

# the config groups that are not sections of the schema (they choose how jobs run, or a preset of many fields)
OTHER_GROUPS = ("launcher", "experiment")


class HeldStderr(io.TextIOBase):
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
    append_hint = ""
    for ln in lines:
        if ln.startswith("To append to your config use "):
            append_hint = ln.removeprefix("To append to your config use ").strip()
            continue
        if ln.startswith(("full_key:", "reference_type=", "object_type=")):
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
        missing = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
        if missing:
            text += did_you_mean(missing.group(2), options)
    unloadable = re.search(r"Could not load '([^'/]+)/([^']+)'", text)  # an unknown option in a list: group=[a,b]
    if unloadable and not options:
        group, option = unloadable.groups()
        known = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
        if known:
            text = f"Could not find '{group}/{option}': available options in '{group}': {', '.join(known)}"
            text += did_you_mean(option, known)
    unknown = re.search(r"Could not override '([^']+)'", text)
    fields = None
    if unknown:
        parent, _, key = unknown.group(1).rpartition(".")
        fields = fields_at(parent)
    if unknown and fields is not None:
        # a typed section: adding the key with + would be refused too, so name the closest field instead
        candidates = [*fields, *OTHER_GROUPS] if not parent else fields
        prefix = f"{parent}." if parent else ""
        close = did_you_mean(key, candidates).replace("mean ", "mean " + prefix)
        text += close or " (ijr-train --cfg job lists every field with its value)"
    elif append_hint:
        text += f" (the key is not in the config: {append_hint} adds it)"
    elif text.startswith(("Error merging override", "Could not override")):
        text += " (ijr-train --cfg job lists every field with its value)"
    return text or "unknown error"
