"""The named metrics of SCIENCE.md beyond the train/test evaluation: how each group is computed.

Metrics come in groups that share work (one Lanczos run gives sharpness, its residual and the top eigenvector;
one forward pass over the probe set gives the impurity statistics and the logit norms). A run asks for metric
NAMES (`metrics.names`); a group is computed at a step when any of its requested names is due. Every group
adds its wall time as `<group>_s`; curvature groups add their product counts.

Probe set S: the first `probe_n` training examples (no augmentation), processed in chunks of `probe_chunk`,
losses summed over chunks and divided by |S| once. `probe_bn_mode` ("eval" or "train": per-chunk batch
statistics, Cohen et al.'s ghost BN; running statistics never change) is recorded in every row that depends on it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ijr_cli.core.metric_names import (
    COMPANIONS,
    COS_GRAD_TOP_EIG,
    DIST_INIT,
    GN_SHARPNESS,
    GRAD_NORM,
    GROUP_OF,
    GROUPS,
    IJR_PROXY,
    IMPURITY_MEAN,
    JAC_FRO_SQ,
    JAC_OP_NORM,
    JAC_U_NORM_SQ,
    SHARPNESS,
    SHARPNESS_K,
    SHARPNESS_MATVECS,
    SHARPNESS_RESID,
    THRESHOLD,
    WEIGHT_NORM,
)
from ijr_cli.curvature.impurity import gini, top_impurity
from ijr_cli.curvature.jacobians import (
    gram_summaries,
    input_jacobian_norms,
    mean_jacobian_gram,
    mean_jacobian_top_singular,
    mean_jacobian_u_norm_sq,
)
from ijr_cli.curvature.lanczos import lanczos_top
from ijr_cli.curvature.operators import gauss_newton_operator, hessian_operator, loss_gradient
from ijr_cli.curvature.params import flat_parameters
from ijr_cli.curvature.probe import probe_mode
from ijr_cli.data import Dataset, chunks
from ijr_cli.objectives import Objective
from ijr_cli.optim import stability_threshold


@dataclass
class Measurer:
    """Computes the requested groups on the current model; owns the probe set and the Lanczos warm starts."""

    model: nn.Module
    data: Dataset
    objective: Objective
    names: List[str]
    init_params: torch.Tensor
    probe_n: int = 5000
    probe_chunk: Optional[int] = 1000
    probe_bn_mode: str = "eval"
    probe_cache_graph: bool = True
    sharpness_k: int = 1
    lanczos_tol: float = 1e-3
    lanczos_max_iters: int = 100
    n_input_jac: int = 100
    momentum: float = 0.0
    nesterov: bool = False
    seed: int = 0
    warm: Dict[str, torch.Tensor] = field(default_factory=dict)  # checkpointed: exact resume of estimates

    def __post_init__(self):
        n = min(self.probe_n, self.data.n_train)
        self.x_probe, self.y_probe = self.data.x_train[:n], self.data.y_train[:n]
        self.wanted = set(self.names).union(*(COMPANIONS.get(n, ()) for n in self.names))
        self.groups = {GROUP_OF[n] for n in self.names}

    # each group: returns its metrics (only those requested are kept by `measure`)
    def _weights(self, lr):
        theta = flat_parameters(self.model)
        return {
            WEIGHT_NORM: float(torch.linalg.vector_norm(theta)),
            DIST_INIT: float(torch.linalg.vector_norm(theta - self.init_params)),
        }

    def _threshold(self, lr):
        return {THRESHOLD: stability_threshold(lr, self.momentum, self.nesterov)}

    @torch.no_grad()
    def _probe_outputs(self, lr):
        """Impurity lambda_(1)(x) (Theorem 1, exact), Gini, p_(1), logit norms over S (paper 000 App. F)."""
        lams, ginis, p1s, norms, sums = [], [], [], [], []
        with probe_mode(self.model, self.probe_bn_mode):
            for sl in chunks(self.x_probe.shape[0], self.probe_chunk):
                z = self.model(self.x_probe[sl]).double()
                p = torch.softmax(z, dim=1)
                lams.append(top_impurity(p))
                ginis.append(gini(p))
                p1s.append(p.max(dim=1).values)
                norms.append(torch.linalg.vector_norm(z, dim=1))
                sums.append(z.sum(dim=1).abs())
        lam = torch.cat(lams)
        q = torch.quantile(lam, torch.tensor([0.25, 0.5, 0.75], dtype=lam.dtype, device=lam.device))
        vals = torch.stack(
            [
                lam.mean(),
                q[0],
                q[1],
                q[2],
                torch.cat(ginis).mean(),
                torch.cat(p1s).mean(),
                torch.cat(norms).mean(),
                torch.cat(sums).mean(),
            ]
        ).tolist()
        return dict(zip(GROUPS["probe_outputs"], vals))

    def _probe_gradient(self) -> torch.Tensor:
        """grad L_S, computed once per row (grad_norm and cos_grad_top_eig share it)."""
        if "gradient" not in self._row_cache:
            self._row_cache["gradient"] = loss_gradient(
                self.model, self.x_probe, self.y_probe, self.objective, self.probe_chunk, self.probe_bn_mode
            )
        return self._row_cache["gradient"]

    def _grad(self, lr):
        return {GRAD_NORM: float(torch.linalg.vector_norm(self._probe_gradient()))}

    def _lanczos(self, op, key):
        gen = torch.Generator().manual_seed(self.seed)
        r = lanczos_top(
            op,
            op.dim,
            k=self.sharpness_k,
            max_iters=self.lanczos_max_iters,
            tol=self.lanczos_tol,
            v0=self.warm.get(key),
            generator=gen,
            device=self.x_probe.device,
            dtype=self.x_probe.dtype,
        )
        self.warm[key] = r.eigenvectors[:, 0].detach().clone()
        return r

    def _sharpness(self, lr):
        """Largest ALGEBRAIC eigenvalue of H = grad^2 L_S by Lanczos on Hessian-vector products."""
        op = hessian_operator(
            self.model,
            self.x_probe,
            self.y_probe,
            self.objective,
            self.probe_chunk,
            self.probe_bn_mode,
            cache_graph=self.probe_cache_graph,
        )
        r = self._lanczos(op, "sharpness")
        out = {
            SHARPNESS: float(r.eigenvalues[0]),
            SHARPNESS_K: [float(v) for v in r.eigenvalues],
            SHARPNESS_RESID: float(r.residuals[0]),
            SHARPNESS_MATVECS: op.num_products,
            "sharpness_path": op.path,
        }
        if COS_GRAD_TOP_EIG in self.wanted:
            g = self._probe_gradient()
            v = r.eigenvectors[:, 0]
            out[COS_GRAD_TOP_EIG] = float(
                torch.dot(g, v) / (torch.linalg.vector_norm(g) * torch.linalg.vector_norm(v)).clamp_min(1e-30)
            )
        return out

    def _gn_sharpness(self, lr):
        op = gauss_newton_operator(
            self.model, self.x_probe, self.y_probe, self.objective, self.probe_chunk, self.probe_bn_mode
        )
        r = self._lanczos(op, "gn_sharpness")
        return {
            GN_SHARPNESS: float(r.eigenvalues[0]),
            "gn_sharpness_resid": float(r.residuals[0]),
            "gn_sharpness_matvecs": op.num_products,
        }

    def _jacobian(self, lr):
        """<J> through its C x C Gram matrix (C <= 100); for C > 100, paper 000's Algorithm 2 for ||<J>||_2 and
        one backward for ||<J> u||^2, while ||<J>||_F^2 (C backward passes and C x m memory) is not computed."""
        c = self.data.num_classes
        if c <= 100:
            k, passes = mean_jacobian_gram(self.model, self.x_probe, self.probe_chunk, self.probe_bn_mode)
            out = gram_summaries(k)
        else:
            norm, passes = mean_jacobian_top_singular(
                self.model,
                self.x_probe,
                self.probe_chunk,
                self.probe_bn_mode,
                generator=torch.Generator().manual_seed(self.seed),
            )
            u_norm_sq, u_passes = mean_jacobian_u_norm_sq(
                self.model, self.x_probe, self.probe_chunk, self.probe_bn_mode
            )
            out = {JAC_OP_NORM: norm, JAC_FRO_SQ: math.nan, JAC_U_NORM_SQ: u_norm_sq}
            passes += u_passes
        if IJR_PROXY in self.wanted:  # reuse this row's impurity when that group already ran
            imp = (self._row_cache.get("probe_outputs") or self._probe_outputs(lr))[IMPURITY_MEAN]
            out[IJR_PROXY] = imp * out[JAC_U_NORM_SQ]
        out["jacobian_passes"] = passes
        return out

    def _input_jacobian(self, lr):
        """Per-example spectral norms of d softmax / dx on the first n_input_jac of S and of the test set."""
        out = {}
        for prefix, x in (("", self.x_probe), ("test_", self.data.x_test)):
            norms = input_jacobian_norms(self.model, x[: self.n_input_jac], self.probe_chunk)
            out[f"{prefix}input_jac_max"] = float(norms.max()) if len(norms) else math.nan
            out[f"{prefix}input_jac_mean"] = float(norms.mean()) if len(norms) else math.nan
        return out

    def measure(self, groups: Sequence[str], lr: float) -> Dict[str, object]:
        """The requested metrics of the given (non-eval) groups, each group with its cost `<group>_s`."""
        row: Dict[str, object] = {}
        self._row_cache: Dict[str, dict] = {}
        if any(g in self.groups for g in groups) and not bool(torch.isfinite(flat_parameters(self.model)).all()):
            return {"measure_skipped": "non-finite parameters"}
        for group in groups:
            if group not in self.groups:
                continue
            t0 = time.perf_counter()
            values = getattr(self, f"_{group}")(lr)
            self._row_cache[group] = values
            if self.x_probe.is_cuda:
                torch.cuda.synchronize(self.x_probe.device)
            keep = {k: v for k, v in values.items() if k in self.wanted or k not in GROUP_OF}
            row.update(keep)
            row[f"{group}_s"] = time.perf_counter() - t0
            if group in ("sharpness", "gn_sharpness", "jacobian", "probe_outputs", "grad"):
                row["probe_n"], row["probe_bn_mode"] = int(self.x_probe.shape[0]), self.probe_bn_mode
        return row
