"""Training losses (SCIENCE.md, Notation): cross-entropy with label smoothing, MSE in Cohen et al.'s convention; mixup.

All losses return the SUM over the examples given; callers divide by the total count exactly once, so chunked
evaluation and gradient accumulation give the same number as one big batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ijr_cli.core.config import LossConfig, RegularizerConfig, schema_default


@dataclass(frozen=True)
class Objective:
    """The data loss as trained: `kind` "ce" or "mse", label smoothing eps, MSE target scale s.

    - ce:  -sum_i t_i log softmax(z)_i with t = (1 - eps) e_y + eps/C (eps = 0: plain cross-entropy).
    - mse: 1/2 ||z - s t||^2 summed over classes (NOT torch's MSELoss, which also divides by C).
    Soft targets `t` (rows summing to 1, e.g. from mixup) replace the labels when given; smoothing is then
    already folded into them by `soft_targets`.
    """

    kind: str
    num_classes: int
    label_smoothing: float = schema_default(RegularizerConfig, "label_smoothing")
    target_scale: float = schema_default(LossConfig, "target_scale")

    def soft_targets(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        eps, c = self.label_smoothing, self.num_classes
        t = F.one_hot(y, c).to(dtype)
        return t * (1.0 - eps) + eps / c if eps else t

    def sum(self, logits: torch.Tensor, y: torch.Tensor, targets: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Summed loss over the batch."""
        if self.kind == "ce":
            if targets is None:
                return F.cross_entropy(logits, y, reduction="sum", label_smoothing=self.label_smoothing)
            return -(targets * F.log_softmax(logits, dim=1)).sum()
        if targets is None:
            targets = self.soft_targets(y, logits.dtype)
        return 0.5 * (logits - self.target_scale * targets).square().sum()

    def mean(self, logits: torch.Tensor, y: torch.Tensor, targets: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean loss over the batch (the one-chunk training step: one fused reduction, no extra division)."""
        if self.kind == "ce" and targets is None:
            return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return self.sum(logits, y, targets) / logits.shape[0]


def cross_entropy_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy against hard labels, summed (the `*_ce` metrics, whatever the training loss)."""
    return F.cross_entropy(logits, y, reduction="sum")


def mixup_lambda(alpha: float, seed: int) -> float:
    """lambda ~ Beta(alpha, alpha) for one batch (Zhang et al. 2018), drawn on the host from its own stream."""
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(x: torch.Tensor, targets: torch.Tensor, lam: float, generator: torch.Generator):
    """Convex combination of the batch with a permutation of itself: inputs and soft targets alike."""
    perm = torch.randperm(x.shape[0], generator=generator, device=x.device)
    return lam * x + (1.0 - lam) * x[perm], lam * targets + (1.0 - lam) * targets[perm]


@dataclass(frozen=True)
class MemberObjectives:
    """The objectives of the K members of a pack (`stack.ModelStack`): one loss kind and class count, per-member
    label smoothing eps_k and MSE target scale s_k. `sum`/`mean` take logits (K, B, C), labels (B,) shared or
    (K, B), soft targets (K, B, C) or None, and return each member's loss (K,), as `Objective` defines it."""

    kind: str
    num_classes: int
    label_smoothing: torch.Tensor  # (K,)
    target_scale: torch.Tensor  # (K,)
    smoothed: bool = False  # some eps_k > 0 (known on the host: no device read per step)

    @classmethod
    def of(cls, objectives, device, dtype) -> "MemberObjectives":
        kinds = {(o.kind, o.num_classes) for o in objectives}
        if len(kinds) != 1:
            raise ValueError(f"a pack's members share one loss kind and class count, got {sorted(kinds)}")
        kind, c = kinds.pop()
        as_tensor = lambda values: torch.tensor(values, device=device, dtype=dtype)  # noqa: E731
        eps = [o.label_smoothing for o in objectives]
        return cls(kind, c, as_tensor(eps), as_tensor([o.target_scale for o in objectives]), any(e > 0 for e in eps))

    def soft_targets(self, y: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
        """(K, B, C) smoothed one-hot targets of labels y ((B,) or (K, B))."""
        eps = self.label_smoothing.to(dtype)[:, None, None]
        t = F.one_hot(y, self.num_classes).to(dtype)
        t = t.expand(k, -1, -1) if y.dim() == 1 else t
        return t * (1.0 - eps) + eps / self.num_classes

    def sum(self, logits: torch.Tensor, y: torch.Tensor, targets: Optional[torch.Tensor] = None) -> torch.Tensor:
        k = logits.shape[0]
        if self.kind == "ce":
            if targets is not None:
                return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=(1, 2))
            labels = y.expand(k, -1) if y.dim() == 1 else y
            if not self.smoothed:  # torch's fused cross-entropy, per example, summed per member
                return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(k, -1).sum(1)
            logp = F.log_softmax(logits, dim=-1)
            nll = -logp.gather(-1, labels[..., None]).squeeze(-1).sum(dim=1)
            eps = self.label_smoothing.to(logits.dtype)
            return (1.0 - eps) * nll - eps / self.num_classes * logp.sum(dim=(1, 2))
        if targets is None:
            targets = self.soft_targets(y, k, logits.dtype)
        scale = self.target_scale.to(logits.dtype)[:, None, None]
        return 0.5 * (logits - scale * targets).square().sum(dim=(1, 2))

    def mean(self, logits: torch.Tensor, y: torch.Tensor, targets: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.sum(logits, y, targets) / logits.shape[1]
