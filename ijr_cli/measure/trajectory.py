"""The optimisation trajectory theta(t) as a fixed low-dimensional sketch (paper 000 Figs 4, 26: PCA and UMAP of the
iterates, drawn by the report), one record per due step in arrays.bin (`trajectory`, float32, length
`metrics.trajectory_dim`): every step of the first `metrics.trajectory_steps`, then on the group's cadence.

The sketch is a seeded Johnson-Lindenstrauss embedding S = G C: C a count sketch of the m parameters into
D = min(m, 16 d) signed buckets (for m <= 16 d, C is the identity), G a Gaussian D -> d matrix with N(0, 1/d)
entries. Why not a dense d x m Gaussian: it would hold d m numbers (2 GB for cnn6 at d = 1,024) or regenerate them at
every step; S costs O(m + d D) per step, keeps pairwise distances of the iterates to within the usual JL error, and is
regenerated identically from the run's seed on resume (nothing is checkpointed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

import torch

from ijr_cli.core.arrays import Array
from ijr_cli.core.metric_names import TRAJECTORY
from ijr_cli.curvature.params import flat_parameters

if TYPE_CHECKING:
    from ijr_cli.measure.measurer import Measurer

BUCKETS_PER_DIM = 16
STREAM = 0x7A1EC7  # separates the sketch's generator from the run's other seeded streams


class ParameterSketch:
    """theta (m,) -> S theta (d,): the count sketch then the Gaussian, on theta's device, from `seed`."""

    def __init__(self, m: int, d: int, seed: int, device: torch.device, dtype: torch.dtype = torch.float32):
        g = torch.Generator().manual_seed(seed ^ STREAM)
        self.buckets = min(m, BUCKETS_PER_DIM * d)
        if self.buckets == m:
            self.index, self.sign = None, None
        else:
            self.index = torch.randint(0, self.buckets, (m,), generator=g).to(device)
            self.sign = (torch.randint(0, 2, (m,), generator=g) * 2 - 1).to(device=device, dtype=dtype)
        self.gaussian = (torch.randn(d, self.buckets, generator=g, dtype=torch.float64) / d**0.5).to(device, dtype)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        theta = theta.to(self.gaussian.dtype)
        if self.index is not None:
            theta = torch.zeros(self.buckets, dtype=theta.dtype, device=theta.device).index_add_(
                0, self.index, theta * self.sign
            )
        return self.gaussian @ theta


def trajectory(m: "Measurer", lr: float) -> Dict[str, object]:
    """The sketch of the current parameters (one pass over them and a d x D product)."""
    theta = flat_parameters(m.model).detach()
    if m.sketch is None:  # built once per process (from the seed: the same after a resume)
        m.sketch = ParameterSketch(theta.numel(), m.trajectory_dim, m.seed, theta.device)
    return {TRAJECTORY: Array(m.sketch(theta).cpu().numpy())}
