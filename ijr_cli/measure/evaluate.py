"""Evaluation on the full training and test sets: the loss as trained, plain cross-entropy, accuracy, the gaps."""

from __future__ import annotations

import math
from typing import Dict

import torch
from torch import nn

from ijr_cli.core.metric_names import (
    GEN_GAP_ACC,
    GEN_GAP_LOSS,
    TEST_ACC,
    TEST_CE,
    TEST_LOSS,
    TRAIN_ACC,
    TRAIN_CE,
    TRAIN_LOSS,
)
from ijr_cli.curvature.probe import chunk_sum
from ijr_cli.data import Dataset
from ijr_cli.objectives import Objective, cross_entropy_sum


@torch.no_grad()
def evaluate_split(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective, batch_size: int
) -> Dict[str, float]:
    """Mean loss as trained, mean plain cross-entropy and accuracy over (x, y), in eval mode (the model's mode
    restored afterwards); sums in float64, one host sync."""
    n = x.shape[0]
    if n == 0:
        return {"loss": math.nan, "ce": math.nan, "acc": math.nan}

    def sums(sl: slice) -> torch.Tensor:
        z = model(x[sl])
        correct = (z.argmax(dim=1) == y[sl]).sum()
        return torch.stack([objective.sum(z, y[sl]).double(), cross_entropy_sum(z, y[sl]).double(), correct.double()])

    loss, ce, correct = (chunk_sum(model, n, batch_size, "eval", sums) / n).tolist()
    return {"loss": loss, "ce": ce, "acc": correct}


def evaluate(model: nn.Module, data: Dataset, objective: Objective, batch_size: int) -> Dict[str, float]:
    """train/test loss (as trained, e.g. label-smoothed or MSE), ce (hard labels), accuracy, and the gaps."""
    tr = evaluate_split(model, data.x_train, data.y_train, objective, batch_size)
    te = evaluate_split(model, data.x_test, data.y_test, objective, batch_size)
    return gaps(tr, te)


def gaps(tr: Dict[str, float], te: Dict[str, float]) -> Dict[str, float]:
    """The eval row from the two splits' loss/ce/acc: gen_gap_loss = test_ce - train_ce, gen_gap_acc = train_acc -
    test_acc."""
    return {
        TRAIN_LOSS: tr["loss"],
        TRAIN_ACC: tr["acc"],
        TRAIN_CE: tr["ce"],
        TEST_LOSS: te["loss"],
        TEST_ACC: te["acc"],
        TEST_CE: te["ce"],
        GEN_GAP_LOSS: te["ce"] - tr["ce"],
        GEN_GAP_ACC: tr["acc"] - te["acc"],
    }
