"""The metric registry: one row per metric group, saying which function computes it, which metric names it
produces, whether it is computed over the probe set, and what it costs. Where is metric X computed? At
`REGISTRY[GROUP_OF[X]].compute`.

The train/test evaluation (group "eval") is `measure.evaluate`, run on the full training and test sets every
`trainer.eval_every` steps; the groups here run when one of their requested names is due (`measure.schedule`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Tuple

from ijr_cli.core.metric_names import GROUPS
from ijr_cli.measure import appendix_d, metrics, stochastic, trajectory

if TYPE_CHECKING:
    from ijr_cli.measure.measurer import Measurer


@dataclass(frozen=True)
class MetricGroup:
    name: str
    compute: Callable[["Measurer", float], Dict[str, object]]  # (measurer, the row's lr) -> metrics, bookkeeping
    names: Tuple[str, ...]  # the metric names it produces (requestable in metrics.names)
    over_probe: bool  # computed over the probe set S in its BN mode: its rows record probe_n and probe_bn_mode
    cost: str  # what one computation costs, beyond the wall time that every row records as "<group>_s"


REGISTRY: Dict[str, MetricGroup] = {
    g.name: g
    for g in (
        MetricGroup("weights", metrics.weights, GROUPS["weights"], False, "one pass over the parameters"),
        MetricGroup("threshold", metrics.threshold, GROUPS["threshold"], False, "none (closed form in lr)"),
        MetricGroup("probe_outputs", metrics.probe_outputs, GROUPS["probe_outputs"], True, "one forward pass over S"),
        MetricGroup("grad", metrics.grad, GROUPS["grad"], True, "one forward and backward pass over S"),
        MetricGroup(
            "sharpness",
            metrics.sharpness,
            GROUPS["sharpness"],
            True,
            "Hessian-vector products over S (sharpness_matvecs; the graph built once, sharpness_path)",
        ),
        MetricGroup(
            "gn_sharpness",
            metrics.gn_sharpness,
            GROUPS["gn_sharpness"],
            True,
            "Gauss-Newton products over S, one jvp and one vjp each (gn_sharpness_matvecs)",
        ),
        MetricGroup(
            "batch_sharpness",
            stochastic.batch_sharpness,
            GROUPS["batch_sharpness"],
            False,
            "per minibatch (metrics.batch_sharpness_batches of them): one gradient and one Hessian-vector product",
        ),
        MetricGroup(
            "batch_lambda_max",
            stochastic.batch_lambda_max,
            GROUPS["batch_lambda_max"],
            False,
            "per minibatch: one warm-started Lanczos estimate (batch_lambda_max_matvecs)",
        ),
        MetricGroup(
            "jacobian",
            metrics.jacobian,
            GROUPS["jacobian"],
            True,
            "C backward passes over S, C x m memory (jacobian_passes); C > 100: Lanczos on vjp+jvp products",
        ),
        MetricGroup(
            "input_jacobian",
            metrics.input_jacobian,
            GROUPS["input_jacobian"],
            False,
            "per-example input Jacobians of n_input_jac examples of S and of the test set",
        ),
        MetricGroup(
            "logit_hessian",
            appendix_d.logit_hessian,
            GROUPS["logit_hessian"],
            True,
            "one forward pass over S and a batched C x C eigendecomposition per example",
        ),
        MetricGroup(
            "m_vectors",
            appendix_d.m_vectors,
            GROUPS["m_vectors"],
            True,
            "C backward passes over S, C x m memory (m_vectors_passes); align_S_top_eig: the sharpness estimate",
        ),
        MetricGroup(
            "per_example",
            appendix_d.per_example,
            GROUPS["per_example"],
            False,
            "per-example C x m Jacobians of n_per_example examples of S (vmapped jacrev), m_mrl: C backward passes",
        ),
        MetricGroup(
            "trajectory",
            trajectory.trajectory,
            GROUPS["trajectory"],
            False,
            "one pass over the parameters and a d x 16d product; every step up to metrics.trajectory_steps",
        ),
    )
}
