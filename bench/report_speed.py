"""ijr-report's speed: 1,000 runs x 2,000 logged steps x 20 metrics into every table (issue 6: <= 15 s on 2 cores).

    python bench/report_speed.py [--dir /tmp/ijr-report-bench] [--runs 1000] [--steps 2000] [--repeats 3]

Generates the synthetic sweep once (tests/synthetic_sweep.py; ~1.5 GB of metrics.jsonl), then, in this one run:
1. the metrics readers side by side on the same 100 files (json.loads per line, pyarrow.json, polars with ijr's
   schema-and-check fast path), ms per file;
2. `ijr-report DIR --no-figures` end to end (a fresh process each time: imports, discovery, YAML, reading,
   runs.parquet/csv, history.parquet, aggregate / correlation tables, index.html), `--repeats` times;
3. the figures alone (`ijr-report DIR`, once), reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def readers(files):
    import pyarrow.json as pj

    from ijr_cli.report import collect

    def by_json(path):
        return [json.loads(line) for line in open(path)]

    def by_pyarrow(path):
        return pj.read_json(path, read_options=pj.ReadOptions(use_threads=False))

    def by_ijr(path):
        return collect.read_metrics(Path(path))

    out = {}
    for name, fn in (
        ("json.loads per line", by_json),
        ("pyarrow.json.read_json", by_pyarrow),
        ("ijr per file (polars, schema + check)", by_ijr),
    ):
        t = time.perf_counter()
        for f in files:
            fn(f)
        out[name] = 1000 * (time.perf_counter() - t) / len(files)
    items = [(i, Path(f)) for i, f in enumerate(files)]
    t = time.perf_counter()
    for k in range(0, len(items), collect.CHUNK_FILES):
        collect.read_chunk(items[k : k + collect.CHUNK_FILES])
    out[f"ijr read_chunk ({collect.CHUNK_FILES} files per polars call)"] = 1000 * (time.perf_counter() - t) / len(files)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ijr-report-bench"))
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sweep = args.dir / "sweep"
    if not (sweep / "sweep.yaml").exists():
        print(f"generating {args.runs} runs x {args.steps} steps in {sweep} ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve().parents[1] / "tests" / "synthetic_sweep.py"),
                str(sweep),
                "--runs",
                str(args.runs),
                "--steps",
                str(args.steps),
            ],
            check=True,
        )
    files = sorted(str(p) for p in sweep.glob("*/metrics.jsonl"))
    size = sum(os.path.getsize(f) for f in files)
    print(
        f"{len(files)} runs, {size / 1e9:.2f} GB of metrics.jsonl; {os.cpu_count()} CPUs, "
        f"{platform.python_version()}, {platform.machine()}"
    )
    for name, ms in readers(files[:100]).items():
        print(f"  reader {name:44s} {ms:6.1f} ms per file (100 files, one Python thread)")
    report = str(Path(sys.executable).with_name("ijr-report"))
    times = []
    for i in range(args.repeats):
        t = time.perf_counter()
        proc = subprocess.run(
            [report, str(sweep), "--no-figures", "--out", str(args.dir / "report")], capture_output=True, text=True
        )
        times.append(time.perf_counter() - t)
        if proc.returncode:
            raise SystemExit(proc.stderr)
        phases = json.loads((args.dir / "report" / "report.json").read_text())["timings_s"]
        print(
            f"  ijr-report --no-figures, run {i + 1}: {times[-1]:.1f} s wall "
            f"({', '.join(f'{k} {v:.1f}' for k, v in phases.items())})",
            flush=True,
        )
    print(
        f"tables: median {statistics.median(times):.1f} s, min {min(times):.1f}, max {max(times):.1f} "
        f"over {len(times)} runs (target <= 15 s)"
    )
    t = time.perf_counter()
    proc = subprocess.run([report, str(sweep), "--out", str(args.dir / "report")], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    phases = json.loads((args.dir / "report" / "report.json").read_text())["timings_s"]
    print(f"with figures: {time.perf_counter() - t:.1f} s wall, of which figures {phases['figures_s']:.1f} s")


if __name__ == "__main__":
    main()
