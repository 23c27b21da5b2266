"""Measurement of a pack's members (`stack.ModelStack`): every member's row is the row its sequential run logs.

Batched over the stack: the train/test evaluation, the probe set's outputs (impurity, ...), the gradient, the
sharpness and the Gauss-Newton sharpness (one Hessian- or GN-vector product of sum_k L_S(theta_k) serves every
member; `lanczos.lanczos_top_members` runs each member's own solver, warm-started from its own Ritz vectors and
stopped on its own residual), the mean Jacobian's Gram matrices (C backward passes for all members) and the input
Jacobians' norms (one vmapped jacrev for all members). The weights, batch sharpness, paper 000's App. D groups and
the trajectory are computed
by the member's own `Measurer` on its own model (whose parameters are views of the stack), with this row's batched
results in its row cache, so a group that builds on another (cos_grad_top_eig, align_S_top_eig, ijr_proxy) uses them.
A batched group's `<group>_s` is the pack's wall time for it divided by the members measured.
"""

from __future__ import annotations

import time
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F

from ijr_cli.core.metric_names import COS_GRAD_TOP_EIG, GN_SHARPNESS, GROUPS, SHARPNESS
from ijr_cli.curvature.impurity import gini, top_impurity
from ijr_cli.curvature.jacobians import gram_summaries, stacked_input_jacobian_norms, stacked_mean_jacobian_gram
from ijr_cli.curvature.lanczos import lanczos_top_members
from ijr_cli.curvature.operators import (
    stacked_gauss_newton_operator,
    stacked_hessian_operator,
    stacked_loss_gradient,
)
from ijr_cli.data import chunks
from ijr_cli.measure import metrics
from ijr_cli.measure.evaluate import gaps
from ijr_cli.measure.measurer import Measurer
from ijr_cli.objectives import MemberObjectives
from ijr_cli.stack import ModelStack

BATCHED_GROUPS = ("probe_outputs", "grad", "sharpness", "gn_sharpness", "jacobian", "input_jacobian")


def _inputs(tensors: Sequence[torch.Tensor]):
    """One tensor shared by every member (the same object), or the members' tensors stacked (K, ...)."""
    if len({id(t) for t in tensors}) == 1:
        return tensors[0], False
    return torch.stack(list(tensors)), True


class PackedMeasurer:
    """The rows of a pack's members: `evaluate` (the eval group) and `measure` (the other groups)."""

    def __init__(
        self, stack: ModelStack, measurers: List[Measurer], objectives: MemberObjectives, eval_batch_size: int
    ):
        self.stack, self.measurers, self.objectives = stack, measurers, objectives
        self.eval_batch_size = eval_batch_size
        data = [m.data for m in measurers]
        self.splits = {
            "train": (_inputs([d.x_train for d in data]), data[0].y_train),
            "test": (_inputs([d.x_test for d in data]), data[0].y_test),
        }
        self.probe = _inputs([m.x_probe for m in measurers]), measurers[0].y_probe
        first = measurers[0]
        self.batched = {g for g in BATCHED_GROUPS if g in first.groups}
        if not first.probe_cache_graph:  # (the sequential runs take another Hessian path: theirs, member by member)
            self.batched.discard("sharpness")
        if first.data.num_classes > 100:  # (the sequential runs take Algorithm 2's iteration: theirs)
            self.batched.discard("jacobian")
        if self.probe[0][1] or self.splits["test"][0][1]:  # (inputs that differ per member: member by member)
            self.batched.discard("input_jacobian")
        self.gradient_for_cosine = COS_GRAD_TOP_EIG in first.wanted

    # ------------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _split_sums(self, split: str) -> torch.Tensor:
        """(K, 3): the mean loss as trained, mean plain cross-entropy and accuracy of every member on a split, in
        float64 (`evaluate.evaluate_split`)."""
        (x, per_member), y = self.splits[split]
        n = y.shape[0]
        if n == 0:
            return torch.full((self.stack.k, 3), float("nan"), dtype=torch.float64)
        total = None
        for sl in chunks(n, self.eval_batch_size):
            z = self.stack(x[:, sl] if per_member else x[sl], per_member)
            labels = y[sl].expand(self.stack.k, -1)
            ce = -F.log_softmax(z, dim=-1).gather(-1, labels[..., None]).squeeze(-1).sum(dim=1)
            correct = (z.argmax(dim=-1) == labels).sum(dim=1)
            part = torch.stack([self.objectives.sum(z, y[sl]).double(), ce.double(), correct.double()], dim=1)
            total = part if total is None else total + part
        return (total / n).cpu()

    def evaluate(self, members: Sequence[int]) -> Dict[int, Dict[str, float]]:
        """`evaluate.evaluate` of every member listed."""
        keys = ("loss", "ce", "acc")
        tr, te = self._split_sums("train").tolist(), self._split_sums("test").tolist()
        return {i: gaps(dict(zip(keys, tr[i])), dict(zip(keys, te[i]))) for i in members}

    # ------------------------------------------------------------------------------------------ the other groups
    def measure(self, groups: Sequence[str], lrs: Dict[int, float], step: int) -> Dict[int, Dict[str, object]]:
        """`Measurer.measure` of every member in `lrs` (member -> the row's lr); members with non-finite
        parameters are measured (skipped) by their own Measurer alone."""
        finite = torch.isfinite(self.stack.flat()).all(dim=1).tolist()
        batched_members = [i for i in lrs if finite[i]]
        for i in lrs:
            self.measurers[i].row_cache = {}
        computed: Dict[int, dict] = {i: {} for i in lrs}
        batched_now = set(groups) & self.batched
        if self.gradient_for_cosine and "sharpness" in batched_now and "grad" not in batched_now and batched_members:
            self._gradient(batched_members)  # (the cosine's gradient, as the sequential sharpness group takes it)
        for name in (g for g in groups if g in self.batched):
            if not batched_members:
                break
            t0 = time.perf_counter()
            values = getattr(self, f"_{name}")(batched_members, lrs)
            if self.stack.params[0].is_cuda:
                torch.cuda.synchronize(self.stack.params[0].device)
            seconds = (time.perf_counter() - t0) / len(batched_members)
            for i, v in values.items():
                computed[i][name] = (v, seconds)
                self.measurers[i].row_cache[name] = v  # (a later group builds on it: ijr_proxy on the impurity)
        return {
            i: self.measurers[i].measure(groups, lr, step, computed=computed[i], cache=self.measurers[i].row_cache)
            for i, lr in lrs.items()
        }

    @torch.no_grad()
    def _probe_outputs(self, members: List[int], lrs) -> Dict[int, Dict[str, object]]:
        """`metrics.probe_outputs` of every member from one vmapped forward pass over S."""
        (x, per_member), _ = self.probe
        n = x.shape[1] if per_member else x.shape[0]
        k, parts = self.stack.k, []
        for sl in chunks(n, self.measurers[0].probe_chunk):
            z = self.stack(x[:, sl] if per_member else x[sl], per_member).double()
            p = torch.softmax(z, dim=-1)
            flat = p.reshape(-1, p.shape[-1])
            parts.append(
                torch.stack(
                    [
                        top_impurity(flat).view(k, -1),
                        gini(flat).view(k, -1),
                        p.max(dim=-1).values,
                        torch.linalg.vector_norm(z, dim=-1),
                        z.sum(dim=-1).abs(),
                    ]
                )
            )
        lam, gin, p1, norms, sums = torch.cat(parts, dim=2)
        q = torch.quantile(lam, torch.tensor([0.25, 0.5, 0.75], dtype=lam.dtype, device=lam.device), dim=1)
        values = torch.stack(
            [lam.mean(dim=1), q[0], q[1], q[2], gin.mean(dim=1), p1.mean(dim=1), norms.mean(dim=1), sums.mean(dim=1)],
            dim=1,
        ).tolist()
        return {i: dict(zip(GROUPS["probe_outputs"], values[i])) for i in members}

    def _sharpness(self, members: List[int], lrs) -> Dict[int, Dict[str, object]]:
        """`metrics.sharpness` of every member: one operator for the stack, each member's own solver and k."""
        (x, per_member), y = self.probe
        op = stacked_hessian_operator(
            self.stack, x, y, self.objectives, self.measurers[0].probe_chunk, per_member=per_member
        )
        dim, dtype = self.stack.dim, self.stack.params[0].dtype
        ms = self.measurers
        pending = {i: metrics.sharpness_first_k(ms[i], dim) for i in members}
        products = dict.fromkeys(members, 0)
        final = {}
        while pending:
            requests = {i: metrics.lanczos_settings(ms[i], SHARPNESS, k) for i, k in pending.items()}
            results = lanczos_top_members(op, self.stack.k, dim, requests, self.stack.params[0].device, dtype)
            for i, r in results.items():
                metrics.keep_warm(ms[i], SHARPNESS, r)
                products[i] += r.num_products
                k = metrics.sharpness_next_k(ms[i], lrs[i], r, pending[i], dim)
                if k is None:
                    final[i] = r
                    del pending[i]
                else:
                    pending[i] = k
        return {
            i: metrics.sharpness_values(ms[i], lrs[i], final[i], products[i], "cached_double_backward") for i in members
        }

    def _gradient(self, members: List[int]) -> None:
        """grad L_S of every member into its row cache (`metrics.probe_gradient`'s "gradient")."""
        (x, per_member), y = self.probe
        g = stacked_loss_gradient(self.stack, x, y, self.objectives, self.measurers[0].probe_chunk, per_member)
        for i in members:
            self.measurers[i].row_cache["gradient"] = g[i]

    def _grad(self, members: List[int], lrs) -> Dict[int, Dict[str, object]]:
        """`metrics.grad` of every member from one backward pass of sum_k L_S per chunk."""
        self._gradient(members)
        return {i: metrics.grad(self.measurers[i], lrs[i]) for i in members}

    def _gn_sharpness(self, members: List[int], lrs) -> Dict[int, Dict[str, object]]:
        """`metrics.gn_sharpness` of every member: one Gauss-Newton operator for the stack, each member's solver."""
        (x, per_member), _ = self.probe
        op = stacked_gauss_newton_operator(
            self.stack, x, self.objectives.kind, self.measurers[0].probe_chunk, per_member=per_member
        )
        ms = self.measurers
        requests = {i: metrics.lanczos_settings(ms[i], GN_SHARPNESS, 1) for i in members}
        dtype, device = self.stack.params[0].dtype, self.stack.params[0].device
        results = lanczos_top_members(op, self.stack.k, self.stack.dim, requests, device, dtype)
        out = {}
        for i, r in results.items():
            metrics.keep_warm(ms[i], GN_SHARPNESS, r)
            out[i] = metrics.gn_sharpness_values(r, r.num_products)
        return out

    def _jacobian(self, members: List[int], lrs) -> Dict[int, Dict[str, object]]:
        """`metrics.jacobian` of every member (C <= 100): the Gram matrices of the <J_k> from C backward passes per
        chunk of the stack."""
        (x, per_member), _ = self.probe
        grams, passes = stacked_mean_jacobian_gram(self.stack, x, self.measurers[0].probe_chunk, per_member)
        grams = grams.cpu()
        return {
            i: metrics.jacobian_values(self.measurers[i], lrs[i], gram_summaries(grams[i]), passes) for i in members
        }

    def _input_jacobian(self, members: List[int], lrs) -> Dict[int, Dict[str, object]]:
        """`metrics.input_jacobian` of every member: one vmapped jacrev per chunk for all members (shared inputs)."""
        first = self.measurers[0]
        n, chunk = first.n_input_jac, first.probe_chunk
        probe = stacked_input_jacobian_norms(self.stack, self.probe[0][0][:n], chunk)
        test = stacked_input_jacobian_norms(self.stack, self.splits["test"][0][0][:n], chunk)
        return {i: metrics.input_jacobian_values(probe[i], test[i]) for i in members}
