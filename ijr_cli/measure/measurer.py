"""The Measurer: the probe set, the Lanczos warm starts and this row's shared work, and `measure`, which runs the
requested metric groups of the registry that are due at a step.

A run asks for metric NAMES (`metrics.names`); a group is computed when any of its requested names is due, and
only the requested names (with their companions, e.g. sharpness_resid, and the bookkeeping) go into the row. Every
group adds its wall time `<group>_s`; groups over the probe set add `probe_n` and `probe_bn_mode`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ijr_cli.core.metric_names import COMPANIONS, GROUP_OF, MEASURE_SKIPPED, PROBE_BN_MODE, PROBE_N, SECONDS
from ijr_cli.curvature.params import flat_parameters
from ijr_cli.data import Dataset
from ijr_cli.measure.registry import REGISTRY
from ijr_cli.objectives import Objective


@dataclass
class Measurer:
    """Computes the requested groups on the current model; owns the probe set and the Lanczos warm starts.
    The settings come from the run's config (`run.build`): metrics.* and probe.*."""

    model: nn.Module
    data: Dataset
    objective: Objective
    names: List[str]
    init_params: torch.Tensor
    probe_n: int
    probe_chunk: Optional[int]
    probe_bn_mode: str
    probe_cache_graph: bool
    sharpness_k: object  # int, or "auto" (track_fraction, track_cap)
    track_fraction: float
    track_cap: int
    lanczos_tol: float
    lanczos_max_iters: int
    lanczos_block_extra: int
    lanczos_min_depth: int
    n_input_jac: int
    n_per_example: int
    batch_size: Optional[int]  # the training batch size (None: full batch): batch_sharpness's minibatches
    batch_sharpness_batches: int
    momentum: float
    nesterov: bool
    seed: int
    trajectory_dim: int
    warm: Dict[str, torch.Tensor] = field(default_factory=dict)  # checkpointed: exact resume of estimates
    sketch: object = None  # the trajectory's ParameterSketch, built on first use (from the seed, not checkpointed)

    def __post_init__(self):
        n = min(self.probe_n, self.data.n_train)
        self.x_probe, self.y_probe = self.data.x_train[:n], self.data.y_train[:n]
        self.wanted = set(self.names).union(*(COMPANIONS.get(n, ()) for n in self.names))
        self.groups = {GROUP_OF[n] for n in self.names}
        self.row_cache: Dict[str, object] = {}  # work shared within one row (the probe gradient, the impurity)
        self.step = 0  # the step of the row being measured

    def measure(
        self,
        groups: Sequence[str],
        lr: float,
        step: int = 0,
        computed: Optional[Dict[str, Tuple[Dict[str, object], float]]] = None,
        cache: Optional[Dict[str, object]] = None,
    ) -> Dict[str, object]:
        """The requested metrics of the given (non-eval) groups at training step `step` (it seeds the minibatch
        draws of batch_sharpness), each group with its cost `<group>_s`. `computed` holds groups already computed
        for this model elsewhere (a pack's batched measurement: `measure.packed`) as (values, seconds), and `cache`
        that work's shared results (the top eigenvector): the other groups use them as they would their own."""
        row: Dict[str, object] = {}
        self.row_cache = dict(cache or {})
        self.step = step
        if any(g in self.groups for g in groups) and not bool(torch.isfinite(flat_parameters(self.model)).all()):
            return {MEASURE_SKIPPED: "non-finite parameters"}
        for name in groups:
            if name not in self.groups:
                continue
            group = REGISTRY[name]
            if computed and name in computed:
                values, seconds = computed[name]
            else:
                t0 = time.perf_counter()
                values = group.compute(self, lr)
                if self.x_probe.is_cuda:
                    torch.cuda.synchronize(self.x_probe.device)  # (the wall time of the group, not of its launch)
                seconds = time.perf_counter() - t0
            self.row_cache[name] = values
            row.update({k: v for k, v in values.items() if k in self.wanted or k not in GROUP_OF})
            row[SECONDS[name]] = seconds
            if group.over_probe:
                row[PROBE_N], row[PROBE_BN_MODE] = int(self.x_probe.shape[0]), self.probe_bn_mode
        return row
