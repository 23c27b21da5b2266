"""`ModelStack`: K models of one architecture as one, their parameters stacked along a new leading dimension and one
vmapped forward (torch.func's model ensembling: `stack_module_state` + `vmap(functional_call)`).

The members' own modules stay usable: each member parameter becomes a view of its slice of the stack, so an
in-place update of the stack is an update of every member model (their `state_dict`, their sequential
measurements) with no copy. Members are independent: the stacked loss sum_k L_k(theta_k) has the block-diagonal
Hessian diag(H_1, ..., H_K), so one backward (or double backward) of it gives every member's own gradient (or
Hessian-vector product) at once.

Modules with buffers that a forward mutates (BatchNorm in train mode) or with randomness (dropout) are not stacked:
`unstackable_reason` says why, and such runs are trained one at a time.
"""

from __future__ import annotations

import copy
from typing import List, Optional

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def unstackable_reason(model: nn.Module) -> Optional[str]:
    """Why this model cannot be trained as a member of a stack (None: it can)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return "BatchNorm (running statistics updated by every forward in train mode)"
        if isinstance(module, nn.Dropout) and module.p > 0:
            return "dropout (per-member random masks would not repeat the sequential runs)"
    return None


class ModelStack:
    """K models with the same parameter names and shapes. `params`: leaf tensors (K, *shape), in the order of
    `model.parameters()`; `forward(x)`: logits (K, B, C) for inputs shared by all members ((B, ...)) or one batch
    per member ((K, B, ...), `per_member=True`)."""

    def __init__(self, models: List[nn.Module]):
        for model in models:
            reason = unstackable_reason(model)
            if reason:
                raise ValueError(f"cannot stack a model with {reason}")
        self.models = models
        self.k = len(models)
        stacked, buffers = stack_module_state(models)
        self.names = [n for n, _ in models[0].named_parameters()]
        self.params = [stacked[n] for n in self.names]
        self.buffers = buffers
        self.shapes = [p.shape[1:] for p in self.params]
        self.sizes = [int(p[0].numel()) for p in self.params]
        self.dim = sum(self.sizes)
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture only: its tensors hold no memory
        for k, model in enumerate(models):  # member k's parameters become views of the stack's slice k
            for name, p in model.named_parameters():
                p.data = stacked[name][k]
        self._vmapped = {in_dim: vmap(self._member_forward, in_dims=(0, 0, in_dim)) for in_dim in (0, None)}

    def _member_forward(self, params, buffers, x):
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        return self.forward_with(self.params, x, per_member)

    def forward_with(self, params, x: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        """The forward at other stacked parameters (one (K, *shape) tensor per parameter: torch.func's jvp/vjp)."""
        if self.k == 1:  # one member: its own forward on the stack's slice, without vmap's batching overhead
            own = {n: p.squeeze(0) for n, p in zip(self.names, params)}  # (a view: a free backward)
            buffers = {n: b.squeeze(0) for n, b in self.buffers.items()}
            return self._member_forward(own, buffers, x[0] if per_member else x)[None]
        return self._vmapped[0 if per_member else None](dict(zip(self.names, params)), self.buffers, x)

    __call__ = forward

    def flat(self, tensors=None) -> torch.Tensor:
        """(K, dim): each member's tensors (default: its parameters) flattened in parameter order."""
        tensors = self.params if tensors is None else tensors
        return torch.cat([t.detach().reshape(self.k, -1) for t in tensors], dim=1)

    def unflatten(self, v: torch.Tensor) -> List[torch.Tensor]:
        """(K, dim) -> one (K, *shape) tensor per parameter."""
        return [t.reshape(self.k, *s) for t, s in zip(v.split(self.sizes, dim=1), self.shapes)]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
