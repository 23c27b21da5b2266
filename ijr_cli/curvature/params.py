"""Flat parameter vectors: the order of `model.parameters()`, one tensor of length m (the parameter count)."""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn


class ParameterVector:
    """Flat views of a model's parameters: `flatten(dict or list) -> (m,)`, `unflatten((m,)) -> dict`."""

    def __init__(self, model: nn.Module):
        self.names = [n for n, _ in model.named_parameters()]
        self.params = [p for _, p in model.named_parameters()]
        self.shapes = [p.shape for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.dim = sum(self.sizes)

    def flatten(self, tensors) -> torch.Tensor:
        if isinstance(tensors, dict):
            tensors = [tensors[n] for n in self.names]
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, v: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, v.split(self.sizes), self.shapes)}

    def detached(self) -> Dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in zip(self.names, self.params)}

    def flat_values(self) -> torch.Tensor:
        return self.flatten([p.detach() for p in self.params])


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """theta as one detached vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])
