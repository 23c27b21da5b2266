"""Run directories → two tables: one row per run (`runs`) and the logged history in long form. No torch.

Finds every run directory below the given paths (a directory holding `status.json` or `metrics.jsonl`), reads its
small files (config, overrides, status, summary) and its `metrics.jsonl`: polars' JSON-lines reader, 50 files per
call in worker threads beside the YAML (faster than `json.loads` or pyarrow's reader here, BENCHMARKS.md); a file
it cannot read, such as one with a torn last line, is read again line by line and the bad lines are skipped with a
warning. `write_history` writes the long form (run, step, metric, value) as history.parquet.

The `runs` table holds, per run: `sweep`, `run` (its directory name), `run_id` (`sweep/run`), `path`, `status`
(the sweep-state bucket of `ijr_cli.sweep_state`: COMPLETED / RUNNING / FAILED / DIVERGED), `status_detail`, one
column per swept hyperparameter (the dotted override key, e.g. `optimizer.lr`), the key config values
(CONFIG_COLUMNS), `family` (the regularisers in force), the final value of every logged metric, `best_test_acc`,
`eos_onset_step` (first logged step with sharpness ≥ 90 % of the stability threshold), the phases of
`ijr_cli.report.phases` (`active_reg_start_step`, `active_reg_end_step`, `catapults`, `first_catapult_step`),
`last_step` and `wall_time_s`. A list metric (`sharpness_k`, the tracked top eigenvalues) becomes columns
`sharpness_k_1` …. A warning names each file that was skipped or only partly read; nothing here raises on bad
files.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import yaml

from ijr_cli.core import metric_names as M
from ijr_cli.core import records
from ijr_cli.core.config import family
from ijr_cli.core.status import read_status
from ijr_cli.report.phases import EOS_FRACTION, phase_columns
from ijr_cli.sweep import state as sweep_state

RUN_FILES = ("status.json", "metrics.jsonl")  # a directory holding either is taken for a run directory
SKIP_DIRS = {".hydra", ".launch", ".submitit", "report", "__pycache__", ".git"}
# config values every runs table carries (dotted keys of the resolved config)
CONFIG_COLUMNS = (
    "dataset.name",
    "dataset.n_train",
    "model.name",
    "loss.name",
    "optimizer.name",
    "optimizer.lr",
    "optimizer.batch_size",
    "optimizer.momentum",
    "optimizer.weight_decay",
    "optimizer.rho",
    "regularizer.label_smoothing",
    "regularizer.mixup_alpha",
    "regularizer.augment",
    "regularizer.jacobian",
    "regularizer.lambda_reg",
    "regularizer.rho_reg",
    "regularizer.mu_reg",
    "schedule.name",
    "trainer.max_steps",
    "trainer.epochs",
    "seed",
)
NOT_SWEPT = ("hydra", "launcher")  # override keys that never define a job (where and how it ran)


@dataclass
class Collection:
    runs: pd.DataFrame  # one row per run directory
    wide: object  # polars DataFrame: run (index into runs), step, one column per logged metric; or None
    swept: Dict[str, List[str]]  # sweep -> its swept hyperparameter columns (seed included)
    states: Dict[str, List[sweep_state.JobState]]  # sweep -> every job's state (missing ones included)
    sweep_dirs: Dict[str, Path]
    warnings: List[str] = field(default_factory=list)
    single_runs: List[str] = field(default_factory=list)  # run_ids given as paths themselves (a report of runs)
    configs: Dict[int, dict] = field(default_factory=dict)  # run index -> its flattened resolved config

    @property
    def title(self) -> str:
        """The runs' ids for a report of run directories, else the sweeps' names."""
        return ", ".join(self.single_runs) if self.single_runs else ", ".join(self.sweep_dirs)


# ------------------------------------------------------------------------------------------ discovery
def find_run_dirs(paths: Sequence[Path]) -> Dict[Path, Tuple[str, Path]]:
    """Every run directory below `paths` -> (its sweep's name, the sweep directory)."""
    found: Dict[Path, Tuple[str, Path]] = {}
    for root in paths:
        root = Path(root).resolve()
        if _is_run_dir(root):
            found[root] = (root.parent.name, root.parent)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".report"))
            if any(f in filenames for f in RUN_FILES) and Path(dirpath) != root:
                run = Path(dirpath)
                rel = run.parent.relative_to(root)
                found[run] = (str(Path(root.name) / rel) if str(rel) != "." else root.name, run.parent)
                dirnames[:] = []  # a run directory holds no runs
    return _distinct_names(found)


def _distinct_names(found: Dict[Path, Tuple[str, Path]]) -> Dict[Path, Tuple[str, Path]]:
    """Two sweep directories of the same name (a/multirun, b/multirun) get their parents' names in front until
    the names differ: each sweep keeps its own section, never a merged one."""
    dirs: Dict[str, set] = {}
    for name, sweep_dir in found.values():
        dirs.setdefault(name, set()).add(sweep_dir)
    renamed: Dict[Path, str] = {}
    for name, sweep_dirs in dirs.items():
        if len(sweep_dirs) < 2:
            continue
        depth = 1
        while depth < 8:
            labels = {d: "/".join(d.parts[-1 - depth : -1]) + "/" + name for d in sweep_dirs}
            if len(set(labels.values())) == len(sweep_dirs):
                break
            depth += 1
        renamed.update(labels)
    return {run: (renamed.get(d, name), d) for run, (name, d) in found.items()}


def _is_run_dir(path: Path) -> bool:
    return any((path / f).is_file() for f in RUN_FILES)


def _read_yaml(path: Path):
    try:  # libyaml's loader: 10x faster than PyYAML's, which matters at 1,000 runs
        return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None


# ------------------------------------------------------------------------------------------ metrics.jsonl
# Keys ijr writes that are not plain numbers (everything else in a row is read as float64, `step` as int64).
TEXT_KEYS = (M.SHARPNESS_PATH, M.PROBE_BN_MODE)
LIST_KEYS = M.LIST_METRICS


def _dtype(key: str, value=None):
    import polars as pl

    if key == "step":
        return pl.Int64
    if key in TEXT_KEYS or isinstance(value, str):
        return pl.String
    if key in LIST_KEYS or isinstance(value, list):
        return pl.List(pl.Float64)
    return pl.Float64


def _edge_schema(data: bytes) -> dict:
    """key -> polars dtype from the first and the last complete rows (every metric group is measured at step 0 and
    at the last step); the first row's type wins."""
    import json

    first_end = data.find(b"\n")
    candidates = [data[: first_end if first_end >= 0 else len(data)]]
    stop = len(data)
    while stop and data[stop - 1] in b"\r\n":  # (no rstrip: it would copy the whole file)
        stop -= 1
    start = data.rfind(b"\n", 0, stop) + 1
    candidates.append(data[start:stop])
    if not data.endswith(b"\n") and start:  # a torn last line: the one before it
        candidates.append(data[data.rfind(b"\n", 0, start - 1) + 1 : start - 1])
    schema: dict = {}
    for line in candidates:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            schema.update({k: _dtype(k, v) for k, v in row.items() if k not in schema})
    return schema


def _lines_and_colons(data: bytes) -> Tuple[int, int]:
    """The newline and ':' bytes of a JSON-lines text, in numpy: its comparisons release the GIL, so the reader
    threads count in parallel (bytes.count held it for 4 ms per 1.5 MB file, the largest serial part of a
    1,000-run report)."""
    a = np.frombuffer(data, np.uint8)
    return int(np.count_nonzero(a == ord("\n"))), int(np.count_nonzero(a == ord(":")))


def _explicit_nulls(data: bytes) -> int:
    """The `": null` values of a JSON-lines text."""
    a = np.frombuffer(data, np.uint8)
    ell = a == ord("l")
    at = np.flatnonzero(ell[5:-1] & ell[6:]) + 5  # the first 'l' of each "ll"
    return int(
        np.count_nonzero(
            (a[at - 1] == ord("u"))
            & (a[at - 2] == ord("n"))
            & (a[at - 3] == ord(" "))
            & (a[at - 4] == ord(":"))
            & (a[at - 5] == ord('"'))
        )
    )


def _lost_nothing(data: bytes, colons: int, read: int, cells: int) -> bool:
    """Whether a reader with a fixed schema dropped no key: every `"key": value` pair of the text must be a value
    read or an explicit null. The pairs are counted as ':' bytes, which in JSON are key separators or sit inside
    strings, so a ':' in a string makes the check fail (the file is then read the slow way), never pass wrongly
    (a `": null` inside a string brings its own ':'). `read` values of `cells` (rows x schema columns): when every
    cell was a value there is no null to count."""
    return read == colons or (read < cells and read + _explicit_nulls(data) == colons)


def _values_read(frame, columns) -> np.ndarray:
    """Non-null values per row of `frame` over `columns`."""
    import polars as pl

    return frame.select(pl.sum_horizontal([pl.col(c).is_not_null() for c in columns])).to_series().to_numpy()


def read_metrics(path: Path):
    """One metrics.jsonl as a polars frame of its numeric columns (step int64, the rest float64), and a warning.

    Fast path: polars with the schema of the first and last rows (ijr measures every metric group at step 0 and at
    the last step), then the check that it lost nothing (`_lost_nothing`). Otherwise the file is read again with
    full schema inference (3x slower), and if even that fails (a torn or corrupt line) line by line, skipping the
    bad lines with a warning."""
    import io

    import polars as pl

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, f"{path}: unreadable ({exc.strerror}); skipped"
    frame, warning = None, None
    schema = _edge_schema(data)
    try:
        frame = pl.read_ndjson(io.BytesIO(data), schema=schema)
        read = int(_values_read(frame, schema).sum())
        if not _lost_nothing(data, _lines_and_colons(data)[1], read, frame.height * len(schema)):
            frame = None
    except pl.exceptions.PolarsError:
        frame = None
    if frame is None:
        try:
            frame = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
        except pl.exceptions.PolarsError:
            rows, bad = records.read_rows_counted(path)
            if bad:
                warning = f"{path}: {bad} unreadable line(s) skipped (truncated or corrupt)"
            rows = [_expand_row(r) for r in rows]
            frame = (
                pl.from_pandas(pd.DataFrame.from_records(rows).apply(pd.to_numeric, errors="coerce")) if rows else None
            )
    if frame is None or frame.height == 0:
        return None, warning or f"{path}: no rows; skipped"
    if "step" not in frame.columns:
        return None, f"{path}: no 'step' column; not an ijr metrics file, skipped"
    frame = expand_lists(frame)
    numeric = [c for c, t in frame.schema.items() if t.is_numeric() or t == pl.Boolean]
    frame = frame.select([pl.col(c).cast(pl.Int64 if c == "step" else pl.Float64) for c in numeric])
    if frame["step"].null_count():
        frame = frame.filter(pl.col("step").is_not_null())
    return frame, warning


CHUNK_FILES = 50  # metrics files per polars call


list_column = M.list_column  # (the report's columns are the live loggers' tags: core.metric_names)


def expand_lists(frame):
    """Each list metric of LIST_KEYS (sharpness_k: the tracked top eigenvalues) as numeric columns key_1 … key_K
    (K the longest list; a shorter list leaves nulls), beside the other columns."""
    import polars as pl

    lists = [c for c in LIST_KEYS if c in frame.columns and isinstance(frame.schema[c], pl.List)]
    for c in lists:
        longest = frame.select(pl.col(c).list.len().max()).item() or 0
        frame = frame.with_columns(
            [pl.col(c).list.get(i, null_on_oob=True).alias(list_column(c, i + 1)) for i in range(longest)]
        )
    return frame


def _expand_row(row: dict) -> dict:
    """`expand_lists` for one parsed row (the line-by-line reader)."""
    for c in LIST_KEYS:
        if isinstance(row.get(c), list):
            row.update({list_column(c, i + 1): v for i, v in enumerate(row[c])})
    return row


def _numeric(frame):
    import polars as pl

    frame = expand_lists(frame)
    numeric = [c for c, t in frame.schema.items() if t.is_numeric() or t == pl.Boolean]
    return frame.select(
        [pl.col(c).cast(pl.Int32 if c == "run" else pl.Int64 if c == "step" else pl.Float64) for c in numeric]
    )


def read_chunk(items: List[Tuple[int, Path]]):
    """Several metrics files in one polars call (2x faster than one call per file: polars spreads the files over
    its threads), with the union of their first/last rows' schemas and, per file, the same `_lost_nothing` check as
    `read_metrics` (the rows of each file located by its line count). A file that fails a check (or has a torn last
    line, or a key whose type differs from another file's) goes through `read_metrics`; so does every file of a
    chunk whose row count is not its line count (a blank line). Returns (frame with a `run` column,
    [(run index, warning)])."""
    import io

    import polars as pl

    schema: dict = {}
    probes, slow = [], []
    for index, path in items:
        try:
            data = Path(path).read_bytes()
        except OSError:
            slow.append((index, path))
            continue
        types = _edge_schema(data)
        if not data.endswith(b"\n") or "step" not in types or any(schema.get(k, t) != t for k, t in types.items()):
            slow.append((index, path))
            continue
        schema.update(types)
        probes.append((index, path, data, *_lines_and_colons(data)))
    frames, warnings = [], []
    if probes:
        lines = np.array([p[3] for p in probes])
        try:
            frame = pl.read_ndjson([io.BytesIO(p[2]) for p in probes], schema=schema)  # 20 % faster than paths
            if frame.height != lines.sum():
                raise ValueError("a blank line")
            ends = np.cumsum(lines)
            read = np.add.reduceat(_values_read(frame, schema), ends - lines) if frame.height else np.zeros(0)
            good = np.array(
                [_lost_nothing(p[2], p[4], r, n * len(schema)) for r, n, p in zip(read, lines, probes)], dtype=bool
            )
            slow += [(p[0], p[1]) for p, ok in zip(probes, good) if not ok]
            run = np.repeat(np.array([p[0] for p in probes], dtype=np.int32), lines)
            frame = frame.with_columns(pl.Series("run", run))
            frames.append(_numeric(frame if good.all() else frame.filter(pl.Series(np.repeat(good, lines)))))
        except (pl.exceptions.PolarsError, ValueError):
            slow += [(p[0], p[1]) for p in probes]
    for index, path in slow:
        frame, warning = read_metrics(path)
        if warning:
            warnings.append((index, warning))
        if frame is not None:
            frames.append(frame.with_columns(pl.lit(index, dtype=pl.Int32).alias("run")))
    frames = [f for f in frames if f.height]
    return (pl.concat(frames, how="diagonal_relaxed") if frames else None), warnings


def concat_histories(results, keep) -> Tuple[object, List[Tuple[int, str]]]:
    """`read_chunk` results -> one wide polars frame (run index, step, metric columns) of the runs in `keep`, and
    their warnings as (run index, text)."""
    import polars as pl

    results = list(results)
    warnings = [(i, w) for _, ws in results for i, w in ws if i in keep]
    frames = [f for f, _ in results if f is not None]
    if not frames:
        return None, warnings
    wide = pl.concat(frames, how="diagonal_relaxed")
    if set(wide["run"].unique().to_list()) - set(keep):  # (a copy of every value: only when needed)
        wide = wide.filter(pl.col("run").is_in(list(keep)))
    return wide, warnings


# ------------------------------------------------------------------------------------------ per-run facts
def run_facts(wide) -> pd.DataFrame:
    """Per run index: the last logged value of every metric, the best test accuracy, the edge-of-stability onset
    step (first step with sharpness ≥ EOS_FRACTION · threshold, the threshold carried forward) and the last step."""
    import polars as pl

    run, step = pl.col("run").diff(), pl.col("step").diff()
    if not wide.select(((run > 0) | ((run == 0) & (step > 0))).fill_null(True).all()).item():
        wide = wide.sort(["run", "step"])  # (a copy of every value: only when the rows are out of order)
    metrics = [c for c in wide.columns if c not in ("run", "step")]
    aggs = [pl.col(c).drop_nulls().last() for c in metrics] + [pl.col("step").max().alias("last_step")]
    if M.TEST_ACC in metrics:
        aggs.append(pl.col(M.TEST_ACC).max().alias("history_best_test_acc"))
    if M.SHARPNESS in metrics and M.THRESHOLD in metrics:
        reached = pl.col(M.SHARPNESS) >= EOS_FRACTION * pl.col(M.THRESHOLD).forward_fill()
        aggs.append(pl.col("step").filter(reached).min().alias("eos_onset_step"))
    facts = wide.group_by("run").agg(aggs).sort("run").to_pandas().set_index("run")
    if "eos_onset_step" not in facts:
        facts["eos_onset_step"] = np.nan
    return facts


def write_history(wide, run_ids: Dict[int, str], path: Path) -> int:
    """history.parquet: the long form (run, step, metric, value) of the wide frame, one row per logged value
    (nulls dropped); run and metric are dictionary-encoded (polars Enums). Returns the number of rows.
    Built one metric at a time with literal Enum columns: 2x faster than `unpivot` + casting 40 M strings."""
    import polars as pl

    metrics = [] if wide is None else [c for c in wide.columns if c not in ("run", "step")]
    if not metrics or not run_ids:
        empty = pl.DataFrame(schema={"run": pl.String, "step": pl.Int64, "metric": pl.String, "value": pl.Float64})
        empty.write_parquet(path)
        return 0
    positions = sorted(run_ids)
    run_enum = pl.Enum([run_ids[i] for i in positions])
    lookup = np.full(max(positions) + 1, 0, dtype=np.uint32)
    lookup[positions] = np.arange(len(positions), dtype=np.uint32)
    names = pl.Series([run_ids[i] for i in positions], dtype=run_enum)
    run = names.gather(pl.Series(lookup[wide["run"].to_numpy()]))
    metric_enum = pl.Enum(metrics)
    wide = wide.lazy().with_columns(run.alias("run"))
    long = pl.concat(
        [
            wide.select(
                "run", "step", pl.lit(m, dtype=metric_enum).alias("metric"), pl.col(m).alias("value")
            ).drop_nulls("value")
            for m in metrics
        ]
    )
    # streamed (never materialised: 3x faster than building the 46 M-row frame, then writing it); lz4: zstd is
    # 2x slower to write at 40 M rows and 15 % smaller
    long.sink_parquet(path, compression="lz4")
    return sum(wide.select([pl.col(m).count() for m in metrics]).collect().row(0))


# ------------------------------------------------------------------------------------------ swept keys, families
def _override_pairs(overrides: List[str]) -> Dict[str, str]:
    out = {}
    for o in overrides:
        if "=" not in str(o):
            continue
        key, value = str(o).split("=", 1)
        key = key.lstrip("+~")
        if key.split(".", 1)[0] in NOT_SWEPT or key.split("/", 1)[0] in NOT_SWEPT:
            continue
        out[key] = value
    return out


def swept_columns(pairs: List[Dict[str, str]]) -> List[str]:
    """The override keys whose value differs between the runs of one sweep (in first-seen order)."""
    keys = list(dict.fromkeys(k for p in pairs for k in p))
    return [k for k in keys if len({p.get(k) for p in pairs}) > 1]


def swept_value(key: str, config: dict, pairs: Dict[str, str]):
    """A swept key's value: the resolved config's (typed) when the key is a config value, `key.name` for a
    config group chosen by name (`optimizer=sam`), else the override text (`regularizer=mixup`)."""
    if key in config:
        return config[key]
    if f"{key}.name" in config and key in pairs:
        return config[f"{key}.name"]
    return pairs.get(key)


# ------------------------------------------------------------------------------------------ the whole collection
def collect(paths: Sequence[Path], jobs: int = 0, query_slurm: bool = True) -> Collection:
    """Read every run below `paths`. `jobs` threads read the metrics files (0: one per CPU) while this thread
    reads the small files."""
    warnings: List[str] = []
    found = sorted(find_run_dirs(paths).items(), key=lambda kv: (kv[1][0], kv[0].name))
    jobs = jobs or os.cpu_count() or 1
    items = [
        (i, run_dir / "metrics.jsonl") for i, (run_dir, _) in enumerate(found) if (run_dir / "metrics.jsonl").is_file()
    ]
    chunks = [items[k : k + CHUNK_FILES] for k in range(0, len(items), CHUNK_FILES)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending = pool.map(read_chunk, chunks)  # polars parses without the GIL, beside the YAML below
        metas: Dict[int, dict] = {}
        sweep_dirs: Dict[str, Path] = {}
        for i, (run_dir, (sweep, sweep_dir)) in enumerate(found):
            meta = _read_run_meta(run_dir, sweep, warnings)
            if meta is not None:
                metas[i] = meta
                sweep_dirs.setdefault(sweep, sweep_dir)
        wide, read_warnings = concat_histories(pending, keep=metas)
    warnings += [w for _, w in read_warnings]
    with ThreadPoolExecutor(1) as pool:  # the phases (numpy, mostly off the GIL) beside the status files
        detected = pool.submit(phase_columns, wide) if wide is not None else None
        states = {
            s: sweep_state.sweep_states(d, query_slurm=query_slurm, finished_tails=False) for s, d in sweep_dirs.items()
        }
        detected = detected.result() if detected is not None else None
    single = _single_runs(paths, found, metas)
    for sweep, names in single.items():  # a report of run directories: their states only, not their folder's
        states[sweep] = [st for st in states[sweep] if st.name in names]
    swept = {s: swept_columns([m["pairs"] for m in metas.values() if m["sweep"] == s]) for s in sweep_dirs}
    runs = _runs_table(metas, states, swept)
    if wide is not None:
        facts = run_facts(wide)
        facts.index = facts.index.astype(int)
        runs = runs.join(facts.drop(columns=[c for c in facts if c in runs or c == "elapsed_s"]), how="left")
        runs = runs.join(detected, how="left")
    logged = set(runs.index[runs["last_step"].notna()]) if "last_step" in runs else set()
    damaged = {i for i, _ in read_warnings} | (set(metas) - logged)  # bad lines skipped, or no history at all
    runs = finals_from_summaries(runs, metas, damaged, warnings)
    runs = _finish(runs)
    return Collection(
        runs=runs,
        wide=wide,
        swept=swept,
        states=states,
        sweep_dirs=sweep_dirs,
        warnings=warnings,
        single_runs=[f"{s}/{n}" for s, names in single.items() for n in sorted(names)],
        configs={i: m["config"] for i, m in metas.items()},
    )


def _single_runs(paths: Sequence[Path], found, metas: Dict[int, dict]) -> Dict[str, set]:
    """sweep -> the names of its runs that were given as paths themselves, for the sweeps no path covers whole."""
    given = {Path(p).resolve() for p in paths}
    by_sweep: Dict[str, set] = {}
    whole = set()
    for i, (run_dir, (sweep, _)) in enumerate(found):
        if i not in metas:
            continue
        if run_dir in given:
            by_sweep.setdefault(sweep, set()).add(run_dir.name)
        else:
            whole.add(sweep)
    return {s: names for s, names in by_sweep.items() if s not in whole}


# bookkeeping keys of summary.json that are not a metric's final value
SUMMARY_FACTS = (
    "status",
    "stop_reason",
    "steps",
    "epochs",
    "best_test_acc",
    "diverged_at_step",
    "num_params",
    "wall_time_s",
    M.STEP,
    M.LR,
    M.ELAPSED_S,
)


def finals_from_summaries(runs: pd.DataFrame, metas: Dict[int, dict], damaged: set, warnings: List[str]):
    """A COMPLETED run whose metrics.jsonl is damaged (bad lines skipped, or unreadable) takes its final values
    from summary.json (the last logged row, written when the run finished), with a warning naming the file."""
    for i in sorted(damaged):
        meta = metas.get(i)
        if meta is None or runs.at[i, "status"] != "COMPLETED" or not meta["summary"]:
            continue
        summary = dict(meta["summary"])
        for key in LIST_KEYS:
            if isinstance(summary.get(key), list):
                summary.update({list_column(key, k + 1): v for k, v in enumerate(summary[key])})
        finals = {
            k: float(v)
            for k, v in summary.items()
            if k not in SUMMARY_FACTS and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if not finals:
            continue
        for k, v in finals.items():
            if k not in runs:
                runs[k] = np.nan
            runs.at[i, k] = v
        if isinstance(summary.get("steps"), int):
            runs.at[i, "last_step"] = summary["steps"]
        warnings.append(
            f"{Path(meta['path']) / 'metrics.jsonl'}: damaged or unreadable; the COMPLETED run's final values are "
            "taken from its summary.json"
        )
    return runs


def _read_run_meta(run_dir: Path, sweep: str, warnings: List[str]) -> Optional[dict]:
    status = read_status(run_dir / "status.json")
    config_raw = _read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else None
    ours_status = status is not None
    ours_config = isinstance(config_raw, dict) and {"optimizer", "model", "dataset"} <= set(config_raw)
    if not (ours_status or ours_config):
        what = "status.json" if (run_dir / "status.json").exists() else "metrics.jsonl"
        warnings.append(f"{run_dir / what}: not an ijr run directory (no ijr status.json or config.yaml); skipped")
        return None
    if (run_dir / "status.json").exists() and not ours_status:
        warnings.append(f"{run_dir / 'status.json'}: unreadable; the run's status is taken as FAILED")
    overrides = _read_yaml(run_dir / "overrides.yaml")
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    summary = records.read_json(run_dir / "summary.json") or {}
    return {
        "sweep": sweep,
        "run": run_dir.name,
        "path": str(run_dir),
        "config": records.flatten(config_raw or {}),
        "pairs": _override_pairs(overrides),
        "overrides": overrides,
        "summary": summary,
        "status": status.status if status else None,
    }


def _runs_table(
    metas: Dict[int, dict], states: Dict[str, List[sweep_state.JobState]], swept: Dict[str, List[str]]
) -> pd.DataFrame:
    buckets = {(s, st.name): st for s, sts in states.items() for st in sts}
    rows = []
    for m in metas.values():
        st = buckets.get((m["sweep"], m["run"]))
        row = {
            "sweep": m["sweep"],
            "run": m["run"],
            "run_id": f"{m['sweep']}/{m['run']}",
            "path": m["path"],
            "status": st.bucket if st else (m["status"] or "FAILED"),
            "status_detail": st.detail if st else "",
            "overrides": " ".join(m["overrides"]),
        }
        row.update({k: swept_value(k, m["config"], m["pairs"]) for k in swept[m["sweep"]]})
        row.update({c: m["config"].get(c) for c in CONFIG_COLUMNS if c not in row})
        row["family"] = family(m["config"]) if m["config"] else None
        row["best_test_acc"] = m["summary"].get("best_test_acc")
        row["wall_time_s"] = m["summary"].get("wall_time_s")
        row["num_params"] = m["summary"].get("num_params")
        rows.append(row)
    runs = pd.DataFrame(rows, index=pd.Index(list(metas), dtype=int))
    for k in dict.fromkeys(k for keys in swept.values() for k in keys):  # numbers when every value is one
        values = runs[k].dropna()
        if len(values) and values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
            runs[k] = pd.to_numeric(runs[k])
    return runs


def present(runs: pd.DataFrame, names: Sequence[str]) -> List[str]:
    """The names that are columns of `runs` with at least one numeric value."""
    return [n for n in names if n in runs and pd.to_numeric(runs[n], errors="coerce").notna().any()]


def _finish(runs: pd.DataFrame) -> pd.DataFrame:
    """Best test accuracy from the summary, else from the history; the generalisation gaps recomputed per run
    from the final train/test values (SCIENCE.md: per run, then aggregated)."""
    if runs.empty:
        return runs
    if "history_best_test_acc" in runs:
        runs["best_test_acc"] = pd.to_numeric(runs["best_test_acc"], errors="coerce").fillna(
            runs["history_best_test_acc"]
        )
        runs = runs.drop(columns=["history_best_test_acc"])
    if M.TRAIN_CE in runs and M.TEST_CE in runs:
        runs[M.GEN_GAP_LOSS] = runs[M.TEST_CE] - runs[M.TRAIN_CE]
    if M.TRAIN_ACC in runs and M.TEST_ACC in runs:
        runs[M.GEN_GAP_ACC] = runs[M.TRAIN_ACC] - runs[M.TEST_ACC]
    return runs
