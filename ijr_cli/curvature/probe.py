"""The probe set's passes: the model in the probe's BatchNorm mode, its state restored afterwards.

`bn_mode` "eval" uses the running statistics; "train" normalises each chunk with its own batch statistics
(Cohen et al.'s "ghost BN") and leaves the running statistics untouched.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

from ijr_cli.data import chunks
from ijr_cli.models import temporary_mode


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def probe_mode(model: nn.Module, bn_mode: str):
    """Eval mode (bn_mode="eval"), or train mode with BatchNorm running statistics restored on exit."""
    return temporary_mode(model, train=bn_mode == "train")


@contextlib.contextmanager
def probe_chunks(model: nn.Module, n: int, chunk: Optional[int], bn_mode: str) -> Iterator[List[slice]]:
    """The probe set's passes: consecutive slices of range(n), at most `chunk` long (None: one), with the model in
    the probe's mode for the whole pass and its mode and BatchNorm statistics restored on exit (an exception
    included). The one chunk loop of the measurements:

        with probe_chunks(model, n, chunk, bn_mode) as slices:
            for sl in slices:
                ... model(x[sl]) ...
    """
    with probe_mode(model, bn_mode):
        yield list(chunks(n, chunk))


def chunk_sum(
    model: nn.Module,
    n: int,
    chunk: Optional[int],
    bn_mode: str,
    term: Callable[[slice], Union[torch.Tensor, Sequence[torch.Tensor]]],
):
    """sum over the probe set's chunks of `term(slice)`: a tensor, or a list of tensors summed elementwise. Every
    term is a SUM over its examples, and the caller divides by n once, so the result does not depend on how the set
    is chunked (pinned by a test)."""
    total = None
    with probe_chunks(model, n, chunk, bn_mode) as slices:
        for sl in slices:
            part = term(sl)
            if total is None:
                total = part if isinstance(part, torch.Tensor) else list(part)
            elif isinstance(total, torch.Tensor):
                total = total + part
            else:
                total = [a + b for a, b in zip(total, part)]
    return total


def functional_model(model: nn.Module, bn_mode: str) -> nn.Module:
    """The module to call through torch.func: the model itself, or for BatchNorm in train mode a copy whose BN
    layers use batch statistics only (no running buffers to mutate inside a transform, which torch.func
    forbids). Same parameter names, same values: ghost BN per chunk, as on the autograd paths."""
    if bn_mode != "train" or not has_batchnorm(model):
        return model
    ghost = copy.deepcopy(model)
    torch.func.replace_all_batch_norm_modules_(ghost)
    return ghost.train()
