"""Turn a run directory's metrics.jsonl into the small CSV kept next to the science-check account.

python docs/science/extract.py RUN_DIR OUT.csv [COLUMN,COLUMN,...]
"""

import csv
import json
import sys
from pathlib import Path

COLUMNS = [
    "step",
    "sharpness",
    "threshold",
    "sharpness_matvecs",
    "impurity_mean",
    "impurity_q25",
    "impurity_q75",
    "train_loss",
    "train_acc",
    "test_acc",
]


def main(run_dir: str, out: str, columns: str = "") -> None:
    cols = columns.split(",") if columns else COLUMNS
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])


if __name__ == "__main__":
    main(*sys.argv[1:4])
