#!/usr/bin/env bash
# The GPU check, in one command: on a CUDA machine, the GPU tests, then the sharpness and training-throughput
# benchmarks at their GPU sizes (and the packed-sweep benchmark once bench/packed.py exists), within 8 minutes.
#
#   bash bench/gpu_check.sh OUT_DIR        # writes OUT_DIR/gpu_check.json, pytest.txt and each benchmark's table
#
# Through the lent machine (../shared/device/README.md): prepare the wheels it lacks, with pytest and the peers,
#   ../shared/device/prepare-wheels.sh .whl pytest==8.4.2 pluggy==1.6.0 iniconfig==2.1.0 pytest-timeout==2.4.0 \
#       pyhessian==0.1 curvlinops-for-pytorch==3.0.1
#   mkdir -p .data && cp ../shared/datasets/cifar10-subset.npz .data/
# then call `run` with carry [".whl", ".data"] and the command
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
#   export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && IJR_DATA=.data bash bench/gpu_check.sh $OUT
# GPU_CHECK_DEVICE=cpu runs the same steps at tiny sizes on a CPU (a smoke test of this script, not a GPU check).
set -uo pipefail
out="${1:?usage: bash bench/gpu_check.sh OUT_DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
device="${GPU_CHECK_DEVICE:-cuda}"
export IJR_DATA="${IJR_DATA:-}"
start=$(date +%s)
if [ "$device" = cuda ]; then
  "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu_check: no CUDA device here (GPU_CHECK_DEVICE=cpu runs a CPU smoke test)" >&2; exit 2; }
  sharp_args=(--device cuda --n fcn3=5000,cnn6=5000 --repeats 3)
  thru_args=(--device cuda --models fcn3,cnn6,vgg11,resnet18 --steps fcn3=200,cnn6=100,vgg11=40,resnet18=30
             --repeats 7 --n-train 5000)
  pytest_sel=(tests/test_gpu.py -m gpu)
else
  sharp_args=(--device cpu --n fcn3=256,cnn6=64 --repeats 1)
  thru_args=(--device cpu --models fcn3 --steps fcn3=5 --repeats 2 --n-train 512)
  pytest_sel=(tests/test_gpu.py)
fi
"$py" -c "import pyhessian, curvlinops" 2>/dev/null || sharp_args+=(--methods ijr)  # peers absent: ijr alone

step() {  # name, seconds, command...: its output in OUT/name.txt, its exit code and time in OUT/name.rc
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  echo "$? $(( $(date +%s) - t0 ))" > "$out/$name.rc"
  echo "gpu_check: $name: exit $(cut -d' ' -f1 "$out/$name.rc") in $(cut -d' ' -f2 "$out/$name.rc") s" >&2
}
step pytest 150 "$py" -m pytest -q -p no:cacheprovider "${pytest_sel[@]}"
step sharpness 150 "$py" bench/sharpness.py "${sharp_args[@]}"
step throughput 150 "$py" bench/train_throughput.py "${thru_args[@]}"
if [ -f bench/packed.py ]; then step packed 90 "$py" bench/packed.py --device "$device"; fi

"$py" - "$out" "$device" "$(( $(date +%s) - start ))" <<'PYEOF'
"""Fold the steps' outputs into one JSON: the device, versions, the pytest summary, each benchmark's table rows."""
import json, platform, re, subprocess, sys
from pathlib import Path

out, device, seconds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def table(text):
    rows = [ln.strip().strip("|").split("|") for ln in text.splitlines() if ln.startswith("|")]
    rows = [[c.strip() for c in r] for r in rows if not set("".join(r)) <= set("-: ")]
    return [dict(zip(rows[0], r)) for r in rows[1:]] if rows else []


facts = {"device": device, "seconds": seconds, "python": platform.python_version()}
try:
    import torch
    facts.update(torch=torch.__version__, cuda=torch.version.cuda,
                 gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
except ImportError:
    pass
try:
    facts["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.TimeoutExpired):
    facts["nvidia_smi"] = None
for rc in sorted(out.glob("*.rc")):
    text = (out / f"{rc.stem}.txt").read_text(errors="replace")
    code, secs = map(int, rc.read_text().split())
    entry = {"exit": code, "seconds": secs, "header": [ln for ln in text.splitlines() if ln.startswith("#")]}
    if rc.stem == "pytest":
        summary = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", ln)]
        entry["summary"] = summary[-1].strip("= ") if summary else text.strip().splitlines()[-1:]
    else:
        entry["rows"] = table(text)
    facts[rc.stem] = entry
(out / "gpu_check.json").write_text(json.dumps(facts, indent=1) + "\n")
print(json.dumps({k: facts[k] for k in ("device", "gpu", "seconds") if k in facts}))
PYEOF
