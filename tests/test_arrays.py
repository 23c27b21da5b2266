"""Array-valued metrics: arrays.bin + arrays.jsonl (append, read without parsing data, resume truncation, torn
writes)."""

import json

import numpy as np

from ijr_cli.core.arrays import Array, ArrayLog, read_arrays, split_arrays


def _log(tmp_path, steps):
    with ArrayLog(tmp_path).open() as log:
        for s in steps:
            log.write_row(s, {"m": Array(np.full((2, 3), s, dtype=np.float64)), "h": Array(np.arange(4) + s, ["a"])})


def test_records_come_back_stacked_by_step_with_their_labels(tmp_path):
    _log(tmp_path, [0, 10, 20])
    got = read_arrays(tmp_path)
    assert got["m"].steps.tolist() == [0, 10, 20] and got["m"].values.shape == (3, 2, 3)
    assert np.array_equal(got["m"].values[:, 0, 0], [0, 10, 20]) and got["m"].values.dtype == np.float64
    assert got["h"].values[2].tolist() == [20, 21, 22, 23] and got["h"].labels == ["a"]
    assert set(read_arrays(tmp_path, ["h"])) == {"h"} and read_arrays(tmp_path / "nothing") == {}


def test_resume_truncation_and_torn_writes(tmp_path):
    _log(tmp_path, [0, 10, 20])
    ArrayLog(tmp_path).truncate_after(10)
    assert read_arrays(tmp_path)["m"].steps.tolist() == [0, 10]
    size = (tmp_path / "arrays.bin").stat().st_size
    assert size == 2 * (6 * 8 + 4 * 8)  # nothing past the kept records
    _log(tmp_path, [20])  # the resumed run writes step 20 again
    assert read_arrays(tmp_path)["m"].steps.tolist() == [0, 10, 20]
    with open(tmp_path / "arrays.bin", "ab") as f:  # a killed writer: bytes without an index line ...
        f.write(b"\0" * 7)
    with open(tmp_path / "arrays.jsonl", "a") as f:  # ... and an index line whose bytes never came
        f.write(json.dumps({"step": 30, "name": "m", "dtype": "<f8", "shape": [2, 3], "offset": 10**6}) + "\n{torn")
    assert read_arrays(tmp_path)["m"].steps.tolist() == [0, 10, 20]
    ArrayLog(tmp_path).truncate_after(20)
    assert (tmp_path / "arrays.bin").stat().st_size == 3 * (6 * 8 + 4 * 8)


def test_split_arrays_keeps_scalars_for_the_jsonl():
    row = {"step": 3, "sharpness": 1.5, "q": Array(np.eye(2))}
    scalars, arrays = split_arrays(row)
    assert scalars == {"step": 3, "sharpness": 1.5} and list(arrays) == ["q"]
