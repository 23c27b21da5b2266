"""Named sweeps: one YAML file per study in `sweeps/`, expanded into Hydra multiruns of `ijr-train`.

A study file holds

    description: one line
    reference: the paper's figure or table it reproduces
    fixed: [override, ...]          # shared by every job
    grids:                          # the study is the UNION of these Cartesian products
      - {key: [value, ...], ...}    # a scalar value is a one-value dimension
    seeds: [0, 1, 2]                # a dimension of every grid
    tiny:                           # a CPU version that runs in seconds: its `fixed` overrides replace
      fixed: [...]                  # those of the same key (or are added); `grids`, `seeds` replace the full ones
      grids: [...]
      seeds: [...]

`ijr-sweep` launches the jobs with ijr's job-list sweeper (one `ijr-train -m` call for the whole study). Every
job's run directory is `<sweep dir>/<its swept overrides>` (`job_directory_name`), a stable function of what
varies, so running a sweep again skips COMPLETED runs and resumes the others.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from ijr_cli.core.errors import UserError, did_you_mean

STUDY_KEYS = {"description", "reference", "fixed", "grids", "seeds", "tiny", "notes"}
TINY_KEYS = {"fixed", "grids", "seeds"}


def format_value(value: Any) -> str:
    """A Python/YAML value as Hydra override text (null, true/false, numbers as written, strings as given)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


@dataclass
class Study:
    name: str
    description: str
    reference: str
    fixed: List[str]
    grids: List[Dict[str, List[str]]]  # key -> override values (text)
    seeds: List[int]
    path: Optional[Path] = None
    notes: str = ""
    tiny: bool = False

    def dimensions(self, grid: Dict[str, List[str]]) -> Dict[str, List[str]]:
        """One grid's dimensions with the seeds added (unless the grid sweeps `seed` itself)."""
        dims = dict(grid)
        dims.setdefault("seed", [str(s) for s in self.seeds])
        return dims

    def grid_overrides(self, grid: Dict[str, List[str]]) -> List[str]:
        """The swept part of one `ijr-train -m` call: `key=v1,v2,...` per dimension (seed included)."""
        return [f"{k}={','.join(v)}" for k, v in self.dimensions(grid).items()]

    def swept_keys(self) -> List[str]:
        keys = {k for g in self.grids for k in g} | {"seed"}
        return sorted(keys)

    def with_overrides(self, extra: List[str]) -> "Study":
        """Extra command-line overrides: one of a swept key replaces that dimension (`optimizer.lr=0.1` or
        `optimizer.lr=0.01,0.1`; `seed=0,1` replaces the seeds); the others are added to `fixed` (replacing
        a fixed override of the same key)."""
        grids = [dict(g) for g in self.grids]
        seeds, fixed = list(self.seeds), list(self.fixed)
        for override in extra:
            key, _, value = override.partition("=")
            key = key.lstrip("+~")
            if key == "seed":
                try:
                    seeds = [int(v) for v in value.split(",")]
                except ValueError:
                    raise UserError(f"seed must be integers (seed=0,1,2), got {value!r}") from None
            elif any(key in g for g in grids):
                values = [value] if value.startswith("[") else value.split(",")
                for g in grids:
                    if key in g:
                        g[key] = values
            else:
                fixed = [o for o in fixed if _key(o) != key] + [override]
        return Study(
            name=self.name,
            description=self.description,
            reference=self.reference,
            fixed=fixed,
            grids=grids,
            seeds=seeds,
            path=self.path,
            notes=self.notes,
            tiny=self.tiny,
        )

    def jobs(self) -> List[List[str]]:
        """Every job's own overrides (the fixed ones excluded), grid by grid, in Hydra's launch order."""
        out = []
        for grid in self.grids:
            dims = self.dimensions(grid)
            for combo in itertools.product(*dims.values()):
                out.append([f"{k}={v}" for k, v in zip(dims, combo)])
        return out


def _values(value: Any) -> List[str]:
    """A dimension's values as override text. A list is a list of sweep values; a group list such as
    regularizer=[augment,ejr] is written as a string "[augment,ejr]" or nested: [[augment, ejr]]."""
    return [format_value(v) for v in value] if isinstance(value, list) else [format_value(value)]


def _grids(raw: Any, where: str) -> List[Dict[str, List[str]]]:
    if not isinstance(raw, list) or not raw or not all(isinstance(g, dict) and g for g in raw):
        raise UserError(f"{where}: 'grids' must be a non-empty list of mappings (key: [values])")
    for g in raw:
        empty = [k for k, v in g.items() if v == []]
        if empty:
            raise UserError(f"{where}: {', '.join(map(str, empty))} has an empty list of values; give at least one")
    return [{str(k): _values(v) for k, v in g.items()} for g in raw]


def _seeds(raw: Any, where: str) -> List[int]:
    if not isinstance(raw, list) or not raw or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        raise UserError(f"{where}: 'seeds' must be a non-empty list of integers, got {raw!r}")
    return list(raw)


def _fixed(raw: Any, where: str) -> List[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(o, str) and "=" in o for o in raw):
        raise UserError(f"{where}: 'fixed' must be a list of key=value overrides")
    return list(raw)


def load_study(path: Path, tiny: bool = False) -> Study:
    """Read and check a study file (one clear UserError naming the file and the problem)."""
    path = Path(path)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no sweep file {path}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{where} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{where}: a sweep file is a mapping with fixed / grids / seeds")
    unknown = set(raw) - STUDY_KEYS
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(STUDY_KEYS))}"
        )
    fixed, grids, seeds = (
        _fixed(raw.get("fixed"), where),
        _grids(raw.get("grids"), where),
        _seeds(raw.get("seeds"), where),
    )
    if tiny:
        t = raw.get("tiny")
        if not isinstance(t, dict):
            raise UserError(f"{where} has no 'tiny' section; run the full sweep or add one")
        unknown = set(t) - TINY_KEYS
        if unknown:
            raise UserError(f"{where}: unknown key(s) in tiny: {', '.join(sorted(unknown))}")
        tiny_fixed = _fixed(t.get("fixed"), where + " (tiny)")
        replaced = {_key(o) for o in tiny_fixed}
        fixed = [o for o in fixed if _key(o) not in replaced] + tiny_fixed
        if "grids" in t:
            grids = _grids(t["grids"], where + " (tiny)")
        if "seeds" in t:
            seeds = _seeds(t["seeds"], where + " (tiny)")
    swept = {k for g in grids for k in g} | {"seed"}
    clash = sorted(swept & {_key(o) for o in fixed})
    if clash:
        raise UserError(f"{where}: {', '.join(clash)} is both fixed and swept; keep it in one place")
    name = path.stem + ("-tiny" if tiny else "")
    return Study(
        name=name,
        description=str(raw.get("description", "")),
        reference=str(raw.get("reference", "")),
        fixed=fixed,
        grids=grids,
        seeds=seeds,
        path=path,
        notes=str(raw.get("notes", "")),
        tiny=tiny,
    )


def find_study(name: str, sweeps_dir: Path) -> Path:
    """`name` is a file path or the stem of a file in `sweeps_dir`."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.exists():
        return as_path
    path = sweeps_dir / f"{name}.yaml"
    if not path.exists():
        stems = sorted(p.stem for p in sweeps_dir.glob("*.yaml"))
        raise UserError(
            f"no sweep named {name!r} in {sweeps_dir}{did_you_mean(name, stems)}; known sweeps: "
            f"{', '.join(stems) or 'none'}"
        )
    return path


def job_directory_name(job: List[str]) -> str:
    """The name of a job's run directory below the sweep directory: its swept overrides, sorted and comma-joined
    (`optimizer.lr=0.1,seed=0`), a function of what varies and of nothing else (not the launcher, not the time).
    The one place this name is computed: ijr-sweep's plan, the job-list sweeper (which hands it to Hydra as the
    job's hydra.sweep.subdir) and the SLURM ledger all take it from here."""
    return ",".join(sorted(job))


def describe(study: Study, sweep_dir: Path) -> str:
    lines = [f"sweep {study.name}: {len(study.jobs())} jobs in {len(study.grids)} grid(s) -> {sweep_dir}"]
    if study.description:
        lines.append(f"  {study.description}")
    if study.reference:
        lines.append(f"  reference: {study.reference}")
    lines.append(f"  fixed: {' '.join(study.fixed) or '(none)'}")
    for i, grid in enumerate(study.grids):
        lines.append(f"  grid {i + 1}: " + "  ".join(study.grid_overrides(grid)))
    return "\n".join(lines)
