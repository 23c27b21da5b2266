"""CUDA runs agree with CPU runs (skipped where there is no CUDA, as on CI)."""

import json

import pytest
import torch
from conftest import TINY
from helpers import run_in_process

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _summary(compose, tmp, device, extra):
    over = TINY + ["trainer.dtype=float64", f"trainer.device={device}", *extra]
    run_in_process(compose, tmp / device, over)
    return json.loads((tmp / device / "summary.json").read_text())


# Full batch: no random draws, so both devices follow the same trajectory up to float64 rounding.
@pytest.mark.parametrize(
    "extra",
    [
        ("optimizer=gd",),
        ("optimizer=sam", "optimizer.momentum=0.9"),
        ("optimizer=gd", "loss=mse", "regularizer=label_smoothing"),
    ],
)
def test_cuda_matches_cpu_full_batch_float64(compose, tmp_path, extra):
    extra = (*extra, "optimizer.batch_size=null")
    cpu, gpu = _summary(compose, tmp_path, "cpu", extra), _summary(compose, tmp_path, "cuda", extra)
    for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-6, abs=1e-9), key


@pytest.mark.parametrize("regularizers", ["[mixup,augment]", "[augment,ejr]", "[augment,ejr_sam]", "[mixup,ejr_v2]"])
def test_random_regularizers_run_on_cuda(compose, tmp_path, regularizers):
    """Permutations, crops, mixup draws and EJR's u come from CUDA generators there (other numbers, same laws)."""
    s = _summary(compose, tmp_path, "cuda", (f"regularizer={regularizers}", "dataset.input_shape=[1,4,4]"))
    assert s["status"] == "COMPLETED" and s["steps"] == 40
