"""The probe set's passes: the model in the probe's BatchNorm mode, its state restored afterwards.

`bn_mode` "eval" uses the running statistics; "train" normalises each chunk with its own batch statistics
(Cohen et al.'s "ghost BN") and leaves the running statistics untouched.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from ijr_cli.models import frozen_batchnorm_statistics


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@contextlib.contextmanager
def probe_mode(model: nn.Module, bn_mode: str):
    """Eval mode (bn_mode="eval"), or train mode with BatchNorm running statistics restored on exit."""
    was_training = model.training
    model.train(bn_mode == "train")
    try:
        with frozen_batchnorm_statistics(model):
            yield
    finally:
        model.train(was_training)


def functional_model(model: nn.Module, bn_mode: str) -> nn.Module:
    """The module to call through torch.func: the model itself, or for BatchNorm in train mode a copy whose BN
    layers use batch statistics only (no running buffers to mutate inside a transform, which torch.func
    forbids). Same parameter names, same values: ghost BN per chunk, as on the autograd paths."""
    if bn_mode != "train" or not has_batchnorm(model):
        return model
    ghost = copy.deepcopy(model)
    torch.func.replace_all_batch_norm_modules_(ghost)
    return ghost.train()
