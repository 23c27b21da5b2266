"""The figure registry: every figure of papers 000 and 002 that a sweep's own runs can draw. No torch.

Each `PaperFigure` names the paper figure it reproduces, the scalar metrics and arrays it needs, and any condition
on the sweep (e.g. "a sweep over regularizer.label_smoothing"); `plan` draws it only when the sweep holds them,
and otherwise lists it as "not drawn: needs metric X; run with metrics=<preset>" (the smallest preset of
conf/metrics that has them). The drawings are in `paper000` and `paper002`; `SweepData` is what they read: the
sweep's runs table, its wide history and each run's arrays (`core.arrays.read_arrays`, read once per run).

Files: figures/paper000_figNN_<what>.{png,pdf}, figures/paper002_figN_<what>.* (with `_<sweep>` appended when a
report holds several sweeps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pandas as pd

from ijr_cli.core import arrays as array_store
from ijr_cli.core import metric_names as M
from ijr_cli.core.resources import conf_dir

SEED = "seed"


@dataclass
class SweepData:
    """One sweep's runs as the paper figures read them."""

    name: str
    runs: pd.DataFrame  # this sweep's rows of the runs table (index: run index)
    history: pd.DataFrame  # wide: run, step, every logged metric column (pandas)
    swept: List[str]  # swept keys without the seed
    _arrays: Dict[int, dict] = field(default_factory=dict)

    _names: Dict[int, set] = field(default_factory=dict)

    def arrays(self, run: int) -> Dict[str, array_store.ArraySeries]:
        """The run's array metrics (read once)."""
        if run not in self._arrays:
            path = Path(self.runs.loc[run, "path"])
            self._arrays[run] = array_store.read_arrays(path) if self.array_names(run) else {}
        return self._arrays[run]

    def array_names(self, run: int) -> set:
        """The names in the run's arrays.jsonl (its index only: cheap)."""
        if run not in self._names:
            index = Path(self.runs.loc[run, "path"]) / array_store.INDEX_NAME
            names = set()
            try:
                for line in index.read_text(errors="replace").splitlines():
                    start = line.find('"name": "')
                    if start >= 0:
                        names.add(line[start + 9 : line.find('"', start + 9)])
            except OSError:
                pass
            self._names[run] = names
        return self._names[run]

    def logged(self, metric: str) -> bool:
        return metric in self.history and self.history[metric].notna().any()

    def runs_with(self, metrics: Sequence[str] = (), arrays: Sequence[str] = ()) -> List[int]:
        """Runs that logged every metric and array named."""
        runs = list(self.runs.index)
        if metrics:
            if any(m not in self.history for m in metrics):
                return []
            counts = self.history.groupby("run")[list(metrics)].count()
            have = set(counts.index[(counts > 0).all(axis=1)])
            runs = [r for r in runs if r in have]
        return [r for r in runs if set(arrays) <= self.array_names(r)]

    def representatives(self, candidates: Sequence[int], limit: int = 3) -> List[int]:
        """Up to `limit` runs: the first seed of each setting of the first swept key, in the key's order."""
        runs = self.runs.loc[list(candidates)]
        if runs.empty:
            return []
        if SEED in runs:
            runs = runs.sort_values(SEED, kind="stable")
        key = next((k for k in self.swept if k in runs), None)
        if key is not None:
            first = runs.drop_duplicates(subset=[key])
            order = pd.to_numeric(first[key], errors="coerce")
            first = first.iloc[order.argsort(kind="stable")] if order.notna().all() else first
            runs = pd.concat([first, runs.drop(first.index)])
        return list(runs.index[:limit])

    def history_of(self, run: int) -> pd.DataFrame:
        return self.history[self.history["run"] == run].sort_values("step")

    def run_id(self, run: int) -> str:
        return str(self.runs.loc[run, "run"])

    def value(self, run: int, key: str):
        return self.runs.loc[run, key] if key in self.runs else None

    def title(self, run: int) -> str:
        """The run's swept values ('optimizer.lr=0.1, seed=0'), or its id when nothing is swept."""
        from ijr_cli.core.humanize import value as text_of

        parts = [f"{k}={text_of(self.value(run, k))}" for k in self.swept if k in self.runs]
        return ", ".join(parts) or self.run_id(run)

    def lr(self, run: int) -> Optional[float]:
        """The run's learning rate (optimizer.lr), or None."""
        lr = pd.to_numeric(pd.Series([self.value(run, "optimizer.lr")]), errors="coerce").iloc[0]
        return None if pd.isna(lr) else float(lr)


@dataclass(frozen=True)
class PaperFigure:
    key: str  # file stem: paper000_fig03_sharpness_jacobian
    paper: str  # "000" or "002"
    figure: str  # "Fig. 3", "Figs. 8, 27"
    what: str  # one line: what it shows
    metrics: Tuple[str, ...] = ()  # all needed (scalars, in metrics.jsonl)
    any_metrics: Tuple[str, ...] = ()  # at least one needed
    arrays: Tuple[str, ...] = ()  # all needed (arrays.bin)
    condition: Optional[Callable[[SweepData], Optional[str]]] = None  # None, or why the sweep cannot draw it
    draw: Callable = None  # (SweepData, out_dir, name, entry) -> Optional[Figure]


@dataclass
class NotDrawn:
    entry: PaperFigure
    reason: str


def preset_for(metrics: Sequence[str]) -> str:
    """The smallest conf/metrics preset that measures every metric named, as an override (`metrics=full`), else
    the explicit list (`+metrics.names=[...]`)."""
    import yaml

    best = None
    for path in sorted(conf_dir().glob("metrics/*.yaml")):
        try:
            names = (yaml.safe_load(path.read_text()) or {}).get("names") or []
        except (OSError, yaml.YAMLError):
            continue
        if set(metrics) <= set(names) and (best is None or len(names) < best[1]):
            best = (path.stem, len(names))
    return f"metrics={best[0]}" if best else f"metrics.names=[{','.join(metrics)}]"


def missing(entry: PaperFigure, data: SweepData) -> Optional[str]:
    """Why `data` cannot draw `entry` ("needs metric X; run with metrics=..."), or None."""
    need = [m for m in entry.metrics if not data.logged(m)]
    if entry.any_metrics and not any(data.logged(m) for m in entry.any_metrics):
        need.append(" or ".join(entry.any_metrics))
    if entry.arrays and not data.runs_with(arrays=entry.arrays):
        need += list(entry.arrays)
    if need:
        measured = [m for m in (*entry.metrics, *entry.any_metrics[:1], *entry.arrays) if m not in M.EVAL_METRICS]
        wanted = measured or list(need)
        plural = "s" if len(need) > 1 else ""
        if all(m in M.EVAL_METRICS for m in need):  # (evaluation metrics are always logged: evaluate at all)
            return f"needs metric{plural} {', '.join(need)}; evaluate during the run (trainer.eval_every)"
        return f"needs metric{plural} {', '.join(need)}; run with {preset_for(wanted)}"
    if entry.condition is not None:
        return entry.condition(data)
    return None


def swept_over(key: str, what: str = "") -> Callable[[SweepData], Optional[str]]:
    """A condition: the sweep varies `key` (at least two values)."""

    def check(data: SweepData) -> Optional[str]:
        if key in data.runs and data.runs[key].nunique(dropna=True) > 1:
            return None
        return f"needs a sweep over {key}{what}"

    return check


def both(*conditions) -> Callable[[SweepData], Optional[str]]:
    def check(data: SweepData) -> Optional[str]:
        return next((r for r in (c(data) for c in conditions) if r), None)

    return check


def registry() -> List[PaperFigure]:
    """Every paper figure, in the papers' order."""
    from ijr_cli.report import paper000, paper002

    return [*paper000.FIGURES, *paper002.FIGURES]


def plan(data: SweepData, several_sweeps: bool, slug: str) -> Tuple[List[tuple], List[NotDrawn]]:
    """(name, entry) for the figures `data` can draw, and the others with their reasons."""
    drawable, skipped = [], []
    for entry in registry():
        reason = missing(entry, data)
        if reason:
            skipped.append(NotDrawn(entry, reason))
        else:
            drawable.append((f"{entry.key}_{slug}" if several_sweeps else entry.key, entry))
    return drawable, skipped


def caption_runs(data: SweepData, runs: Sequence[int], limit: int = 4) -> str:
    """'from runs a, b and 3 more of sweep s'."""
    ids = [data.run_id(r) for r in runs]
    shown = ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
    return f"From {len(ids)} run(s) of sweep {data.name}: {shown}."
