"""Cost of the live loggers: the same tiny run with logger=none, tensorboard, mlflow, wandb and all three, in one
session, each as its own `ijr-train` process (the loggers' imports and start-up included, as a user pays them).

    python bench/loggers.py                    # 1,000 and 3,000 steps, an evaluation (a logged row) every 10 steps
    python bench/loggers.py --steps 2000 6000 --repeats 3

Reported per setting: the median over repeats of the run's training time as ijr-train prints it ("COMPLETED ...
in X s": the attempt, the loggers' start and finish included) at each length, and from the two lengths the
logger's fixed cost (start and finish) and its cost per logged row, against logger=none. "mlflow, new store" is
the first MLflow run into a fresh outputs/ (it creates the sqlite store's tables); every other MLflow run finds
the store there.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import TINY  # noqa: E402 (the tests' tiny run: synthetic Gaussian mixture, fcn3 16, SGD batch 32)

RUN = [*TINY, "metrics=light", "trainer.checkpoint_every=500"]  # (TINY checkpoints every 20 steps; the default here)
SETTINGS = ["none", "tensorboard", "mlflow, new store", "mlflow", "wandb", "[tensorboard,mlflow,wandb]"]
IJR_TRAIN = str(Path(sys.executable).with_name("ijr-train"))


def one(setting: str, steps: int, every: int, root: Path, i: int):
    logger = setting.split(",")[0] if setting.endswith("new store") else setting
    if setting.endswith("new store"):
        root = root / "fresh"
        root.mkdir()
    args = [*RUN, f"trainer.max_steps={steps}", f"trainer.eval_every={every}", f"logger={logger}"]
    t0 = time.perf_counter()
    r = subprocess.run(
        [IJR_TRAIN, *args, f"hydra.run.dir={root / 'outputs' / 'runs' / f'{i}-{steps}-{len(setting)}'}"],
        capture_output=True,
        text=True,
        cwd=root,
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0 or "warning" in r.stderr:
        sys.exit(f"logger={logger}: {r.stderr[-2000:]}")
    train = float(re.search(r"COMPLETED \(max_steps\) after \d+ steps in ([0-9.]+) s", r.stdout).group(1))
    return train, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs=2, default=[1000, 3000], metavar=("SHORT", "LONG"))
    ap.add_argument("--every", type=int, default=10, help="trainer.eval_every: steps between logged rows")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = [n // args.every + 1 for n in args.steps]
    times = {(s, n): [] for s in SETTINGS for n in args.steps}
    with tempfile.TemporaryDirectory(prefix="ijr-bench-loggers-") as tmp:
        for i in range(args.repeats):
            for n in args.steps:
                root = Path(tmp) / f"{i}-{n}"
                root.mkdir()
                for s in SETTINGS:
                    times[(s, n)].append(one(s, n, args.every, root, i)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    short, long = args.steps
    print(f"{short} and {long} steps ({rows[0]} and {rows[1]} logged rows), median of {args.repeats} repeat(s)\n")
    print(f"| logger | training, {short} steps (s) | training, {long} steps (s) | fixed cost (s) | per row (ms) |")
    print("|---|---|---|---|---|")
    for s in SETTINGS:
        extra = [med[(s, n)] - med[("none", n)] for n in args.steps]
        per_row = (extra[1] - extra[0]) / (rows[1] - rows[0])
        fixed = extra[0] - per_row * rows[0]
        print(f"| {s} | {med[(s, short)]:.1f} | {med[(s, long)]:.1f} | {fixed:+.1f} | {1000 * per_row:+.1f} |")


if __name__ == "__main__":
    main()
