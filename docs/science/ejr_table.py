"""Paper 000 Table 1 layout from a sweep directory of baseline and EJR runs (until `ijr-report` builds it).

    python docs/science/ejr_table.py SWEEP_DIR [OUT.csv]

Reads every run directory below SWEEP_DIR (config.yaml, summary.json, metrics.jsonl) and prints, per learning
rate: the final test accuracy of the baseline and of the EJR runs (mean ± std over seeds, with the count), the
best test accuracy, ΔAcc in points and ERR = (err_base − err_ejr)/err_base in %, from the means. With OUT.csv it
also writes one row per run.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml


def runs(sweep_dir: Path):
    for summary_path in sorted(sweep_dir.glob("**/summary.json")):
        d = summary_path.parent
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        summary = json.loads(summary_path.read_text())
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        last_jac = next((r for r in reversed(rows) if "jac_fro_sq" in r), {})
        yield {"run": d.name, "lr": cfg["optimizer"]["lr"], "regularizer": cfg["regularizer"]["jacobian"],
               "lambda_reg": cfg["regularizer"]["lambda_reg"], "seed": cfg["seed"], "status": summary["status"],
               "steps": summary["steps"], "train_acc": summary.get("train_acc"), "test_acc": summary.get("test_acc"),
               "best_test_acc": summary.get("best_test_acc"), "gen_gap_acc": summary.get("gen_gap_acc"),
               "jac_fro_sq": last_jac.get("jac_fro_sq"), "jac_op_norm": last_jac.get("jac_op_norm"),
               "wall_time_s": summary.get("wall_time_s")}


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def fmt(values, scale=100.0, digits=2):
    m, s, n = mean_std(values)
    return "–" if m is None else f"{scale * m:.{digits}f} ± {scale * s:.{digits}f} (n={n})"


def main(sweep_dir: str, out: str | None = None) -> None:
    rows = list(runs(Path(sweep_dir)))
    if not rows:
        raise SystemExit(f"no finished runs (summary.json) under {sweep_dir}")
    cells = defaultdict(list)
    for r in rows:
        cells[(r["lr"], r["regularizer"])].append(r)
    print("| lr | baseline test acc (%) | +EJR test acc (%) | ΔAcc (%p) | ERR (%) | best test acc base / EJR | "
          "train acc base / EJR | ‖⟨J⟩‖_F² base / EJR |")
    print("|---|---|---|---|---|---|---|---|")
    for lr in sorted({r["lr"] for r in rows}):
        base, ejr = cells.get((lr, "none"), []), cells.get((lr, "ejr"), [])
        mb, _, _ = mean_std([r["test_acc"] for r in base])
        me, _, _ = mean_std([r["test_acc"] for r in ejr])
        delta = "–" if mb is None or me is None else f"{100 * (me - mb):+.2f}"
        err = "–" if mb is None or me is None else f"{100 * ((1 - mb) - (1 - me)) / (1 - mb):+.2f}"
        best = f"{fmt([r['best_test_acc'] for r in base])} / {fmt([r['best_test_acc'] for r in ejr])}"
        train = f"{fmt([r['train_acc'] for r in base], digits=1)} / {fmt([r['train_acc'] for r in ejr], digits=1)}"
        jac = f"{fmt([r['jac_fro_sq'] for r in base], 1, 1)} / {fmt([r['jac_fro_sq'] for r in ejr], 1, 1)}"
        print(f"| {lr} | {fmt([r['test_acc'] for r in base])} | {fmt([r['test_acc'] for r in ejr])} | {delta} | "
              f"{err} | {best} | {train} | {jac} |")
    if out:
        with open(out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main(*sys.argv[1:3])
