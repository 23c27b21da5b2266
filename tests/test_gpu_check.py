"""bench/gpu_check.sh, the one-command GPU check, run as a CPU smoke test (GPU_CHECK_DEVICE=cpu, tiny sizes):
every step runs and the JSON holds the pytest summary and each benchmark's table rows."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_gpu_check_writes_one_json_of_figures(tmp_path):
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "PYTHON": sys.executable}
    r = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    facts = json.loads((tmp_path / "gpu_check.json").read_text())
    assert facts["device"] == "cpu" and facts["torch"]
    assert facts["pytest"]["exit"] == 0 and "skipped" in facts["pytest"]["summary"]  # (CUDA tests skip here)
    for bench in ("sharpness", "throughput"):
        assert facts[bench]["exit"] == 0 and facts[bench]["rows"], bench
    assert any(row["method"] == "ijr" for row in facts["sharpness"]["rows"])


def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert r.returncode == 2 and "no CUDA device here" in r.stderr
