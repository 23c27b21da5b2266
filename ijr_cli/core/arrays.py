"""Array-valued metrics (matrices, histograms, per-layer norms, the trajectory sketch) in a run directory. No torch.

Scalars stay in metrics.jsonl; an array would be megabytes of JSON over a run, so each one is appended as raw bytes
to `arrays.bin` and described by one line of `arrays.jsonl`:

    {"step": 100, "name": "q_lambda_sqrt", "dtype": "float64", "shape": [10, 10], "offset": 8000, "labels": null}

(`labels`: what the first axis means where it is not an index, e.g. layer names or histogram bin edges; written
when they change, null after that: a record's labels are the last non-null ones of its name). The bytes
are written and flushed before their index line, so an index line never points past the data; a killed writer
leaves at most a torn last line or trailing bytes, which `truncate_after` (resume) and `read_arrays` drop.
`read_arrays` returns each name's steps and stacked values without parsing the data (np.fromfile per record).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import numpy as np

from ijr_cli.core.records import storage_errors, write_atomic

DATA_NAME, INDEX_NAME = "arrays.bin", "arrays.jsonl"


@dataclass
class Array:
    """An array-valued metric as a row carries it: its values and, optionally, labels for its first axis."""

    values: np.ndarray
    labels: Optional[List[Any]] = None


@dataclass
class ArraySeries:
    """One name's records: steps (T,), values (T, *shape), the labels (the last ones written for the name)."""

    steps: np.ndarray
    values: np.ndarray
    labels: Optional[List[Any]] = field(default=None)


class ArrayLog:
    """Append-only array records of one run directory (see the module docstring)."""

    def __init__(self, directory: Path):
        self.data_path = Path(directory) / DATA_NAME
        self.index_path = Path(directory) / INDEX_NAME
        self._data = self._index = None
        self._labels: Dict[str, Any] = {}  # the labels last written per name (written again only when they change)

    def open(self) -> "ArrayLog":
        with storage_errors(self.data_path):
            self._data = open(self.data_path, "ab")
            self._index = open(self.index_path, "a", buffering=1)
        return self

    def write(self, step: int, name: str, array: Array) -> None:
        values = np.ascontiguousarray(array.values)
        with storage_errors(self.data_path):
            offset = self._data.seek(0, os.SEEK_END)
            self._data.write(values.tobytes())
            self._data.flush()
            entry = {
                "step": int(step),
                "name": name,
                "dtype": values.dtype.str,
                "shape": list(values.shape),
                "offset": offset,
                "labels": array.labels if self._labels.get(name) != array.labels else None,
            }
            self._labels[name] = array.labels
            self._index.write(json.dumps(entry) + "\n")
            self._index.flush()

    def write_row(self, step: int, arrays: Dict[str, Array]) -> None:
        for name, array in arrays.items():
            self.write(step, name, array)

    def __enter__(self) -> "ArrayLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for f in (self._data, self._index):
            if f is not None:
                with contextlib.suppress(OSError):  # (a write that could not be flushed was reported by `write`)
                    f.close()
        self._data = self._index = None

    def truncate_after(self, step: int) -> None:
        """Keep the records with step <= `step` (and drop torn lines and unindexed bytes): the resume rule of
        metrics.jsonl. The index is rewritten (atomically) before the data is cut, so it never points past it."""
        if not self.index_path.exists() and not self.data_path.exists():
            return
        kept = [e for e in _entries(self.index_path, self.data_path) if e["step"] <= step]
        end = max((e["offset"] + _nbytes(e) for e in kept), default=0)
        write_atomic(self.index_path, "".join(json.dumps(e) + "\n" for e in kept))
        with storage_errors(self.data_path):
            if self.data_path.exists():
                os.truncate(self.data_path, end)


def split_arrays(row: Dict[str, Any]) -> tuple:
    """(the row without its Array values, {name: Array}): what goes to metrics.jsonl and what to arrays.bin."""
    arrays = {k: v for k, v in row.items() if isinstance(v, Array)}
    return {k: v for k, v in row.items() if k not in arrays}, arrays


def _nbytes(entry: dict) -> int:
    return int(np.dtype(entry["dtype"]).itemsize * np.prod(entry["shape"], dtype=np.int64))


def _entries(index_path: Path, data_path: Path) -> List[dict]:
    """The complete records of an index: parsable lines whose bytes are all in the data file."""
    try:
        size = data_path.stat().st_size
        lines = index_path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            e = json.loads(line)
            if e["offset"] + _nbytes(e) <= size:
                out.append(e)
        except (ValueError, KeyError, TypeError):
            continue
    return out


def read_arrays(directory: Path, names: Optional[Iterable[str]] = None) -> Dict[str, ArraySeries]:
    """Every array metric of a run directory (or those in `names`): name -> ArraySeries, records in step order.
    Records of one name whose shape changed (a resumed run with other settings) keep the last shape's records."""
    directory = Path(directory)
    wanted = set(names) if names is not None else None
    by_name: Dict[str, List[dict]] = {}
    for e in _entries(directory / INDEX_NAME, directory / DATA_NAME):
        if wanted is None or e["name"] in wanted:
            by_name.setdefault(e["name"], []).append(e)
    out: Dict[str, ArraySeries] = {}
    with open(directory / DATA_NAME, "rb") if by_name else contextlib.nullcontext() as f:
        for name, entries in by_name.items():
            shape = entries[-1]["shape"]
            entries = sorted((e for e in entries if e["shape"] == shape), key=lambda e: e["step"])
            values = []
            for e in entries:
                f.seek(e["offset"])
                values.append(np.fromfile(f, dtype=np.dtype(e["dtype"]), count=int(np.prod(shape, dtype=np.int64))))
            labels = [e["labels"] for e in by_name[name] if e.get("labels") is not None]
            out[name] = ArraySeries(
                steps=np.array([e["step"] for e in entries], dtype=np.int64),
                values=np.stack(values).reshape(len(entries), *shape),
                labels=labels[-1] if labels else None,
            )
    return out
