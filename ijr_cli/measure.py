"""The named metrics of SCIENCE.md that this version computes, and the metric names as constants.

Evaluation (always on, every `trainer.eval_every` steps): the first two rows of SCIENCE.md's table on the full
train and test sets, in eval mode, in chunks whose summed losses are divided by the set size exactly once.
Extra measurements (`metrics.names`) come from `EXTRA_METRICS`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ijr_cli.data import Dataset, chunks
from ijr_cli.errors import UserError
from ijr_cli.objectives import Objective, cross_entropy_sum

TRAIN_LOSS, TRAIN_ACC, TRAIN_CE = "train_loss", "train_acc", "train_ce"
TEST_LOSS, TEST_ACC, TEST_CE = "test_loss", "test_acc", "test_ce"
GEN_GAP_LOSS, GEN_GAP_ACC = "gen_gap_loss", "gen_gap_acc"
WEIGHT_NORM, DIST_INIT = "weight_norm", "dist_init"
EVAL_METRICS = (TRAIN_LOSS, TRAIN_ACC, TRAIN_CE, TEST_LOSS, TEST_ACC, TEST_CE, GEN_GAP_LOSS, GEN_GAP_ACC)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode inside, the previous mode restored on exit (measurements never leave the model changed)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_split(model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective,
                   batch_size: int) -> Dict[str, float]:
    """Mean loss as trained, mean plain cross-entropy and accuracy over (x, y), in eval mode; one host sync."""
    n = x.shape[0]
    if n == 0:
        return {"loss": math.nan, "ce": math.nan, "acc": math.nan}
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)
    with eval_mode(model):
        for sl in chunks(n, batch_size):
            z = model(x[sl])
            sums[0] += objective.sum(z, y[sl]).double()
            sums[1] += cross_entropy_sum(z, y[sl]).double()
            sums[2] += (z.argmax(dim=1) == y[sl]).sum()
    loss, ce, correct = (sums / n).tolist()
    return {"loss": loss, "ce": ce, "acc": correct}


def evaluate(model: nn.Module, data: Dataset, objective: Objective, batch_size: int) -> Dict[str, float]:
    """train/test loss (as trained, e.g. label-smoothed or MSE), ce (hard labels), accuracy, and the gaps:
    gen_gap_loss = test_ce - train_ce, gen_gap_acc = train_acc - test_acc."""
    tr = evaluate_split(model, data.x_train, data.y_train, objective, batch_size)
    te = evaluate_split(model, data.x_test, data.y_test, objective, batch_size)
    return {TRAIN_LOSS: tr["loss"], TRAIN_ACC: tr["acc"], TRAIN_CE: tr["ce"],
            TEST_LOSS: te["loss"], TEST_ACC: te["acc"], TEST_CE: te["ce"],
            GEN_GAP_LOSS: te["ce"] - tr["ce"], GEN_GAP_ACC: tr["acc"] - te["acc"]}


def flat_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _weight_norm(model: nn.Module, init: torch.Tensor) -> float:
    """||theta||, the Euclidean norm of all parameters."""
    return float(torch.linalg.vector_norm(flat_parameters(model)))


def _dist_init(model: nn.Module, init: torch.Tensor) -> float:
    """||theta - theta_0||, distance from the initial parameters."""
    return float(torch.linalg.vector_norm(flat_parameters(model) - init))


EXTRA_METRICS: Dict[str, Callable[[nn.Module, torch.Tensor], float]] = {
    WEIGHT_NORM: _weight_norm,
    DIST_INIT: _dist_init,
}


def check_metric_names(names: Sequence[str]) -> List[str]:
    """The requested extra metrics, or a UserError naming the unknown ones and the known ones."""
    unknown = [n for n in names if n not in EXTRA_METRICS]
    if unknown:
        evaluated = [n for n in unknown if n in EVAL_METRICS]
        hint = f" ({', '.join(evaluated)} are always evaluated; drop them)" if evaluated else ""
        raise UserError(f"unknown metric name(s) in metrics.names: {', '.join(unknown)}{hint}; "
                        f"known: {', '.join(EXTRA_METRICS)}")
    return list(dict.fromkeys(names))


def measure_extra(names: Sequence[str], model: nn.Module, init: Optional[torch.Tensor]) -> Dict[str, float]:
    return {n: EXTRA_METRICS[n](model, init) for n in names}
