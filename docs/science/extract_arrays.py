"""Print an array metric of a run directory (arrays.bin) at a step as a Markdown table.

python docs/science/extract_arrays.py RUN_DIR NAME [STEP]      # STEP: the last record when omitted
"""

import sys

import numpy as np

from ijr_cli.core.arrays import read_arrays


def main(run_dir: str, name: str, step: str = "") -> None:
    series = read_arrays(run_dir, [name])[name]
    i = int(np.flatnonzero(series.steps == int(step))[0]) if step else -1
    values = np.atleast_2d(series.values[i])
    print(f"{name} at step {int(series.steps[i])}\n")
    print("| | " + " | ".join(str(j + 1) for j in range(values.shape[1])) + " |")
    print("|---|" + "---|" * values.shape[1])
    for r, row in enumerate(values):
        print(f"| {r + 1} | " + " | ".join("—" if np.isnan(v) else f"{v:.2f}" for v in row) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
