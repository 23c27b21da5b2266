"""Defaults live in the schema only: the library functions that take a config field's value default to the schema's
value of that field (through `config.schema_default`), so a default is changed in one place."""

import inspect

import pytest

from ijr_cli.core import config as C
from ijr_cli.curvature import jacobians, lanczos, operators
from ijr_cli.data import load_dataset
from ijr_cli.models import VGG, ResNet20, WideResNet, build_model, fcn3
from ijr_cli.objectives import Objective
from ijr_cli.optim import build_sgd, lr_factor, sam_perturbation, stability_threshold
from ijr_cli.train.step import StepSpec

SAME_NAMES = {  # callable -> the schema whose fields its parameters of the same name take
    load_dataset: C.DatasetConfig,
    build_model: C.ModelConfig,
    fcn3: C.ModelConfig,
    VGG: C.ModelConfig,
    ResNet20: C.ModelConfig,
    WideResNet: C.ModelConfig,
    lr_factor: C.ScheduleConfig,
    build_sgd: C.OptimizerConfig,
    stability_threshold: C.OptimizerConfig,
}
RENAMED = [  # (callable, parameter, schema, field)
    (lanczos.lanczos_solver, "k", C.MetricsConfig, "sharpness_k"),
    (lanczos.lanczos_solver, "max_iters", C.MetricsConfig, "lanczos_max_iters"),
    (lanczos.lanczos_solver, "tol", C.MetricsConfig, "lanczos_tol"),
    (lanczos.lanczos_solver, "block_extra", C.MetricsConfig, "lanczos_block_extra"),
    (lanczos.lanczos_solver, "min_depth", C.MetricsConfig, "lanczos_min_depth"),
    (operators.hessian_operator, "bn_mode", C.ProbeConfig, "bn_mode"),
    (operators.hessian_operator, "cache_graph", C.ProbeConfig, "cache_graph"),
    (operators.gauss_newton_operator, "bn_mode", C.ProbeConfig, "bn_mode"),
    (operators.loss_gradient, "bn_mode", C.ProbeConfig, "bn_mode"),
    (jacobians.mean_jacobian_gram, "bn_mode", C.ProbeConfig, "bn_mode"),
    (jacobians.mean_jacobian_top_singular, "bn_mode", C.ProbeConfig, "bn_mode"),
    (sam_perturbation, "adaptive", C.OptimizerConfig, "adaptive"),
    (Objective, "label_smoothing", C.RegularizerConfig, "label_smoothing"),
    (Objective, "target_scale", C.LossConfig, "target_scale"),
    (StepSpec, "augment", C.RegularizerConfig, "augment"),
    (StepSpec, "mixup_alpha", C.RegularizerConfig, "mixup_alpha"),
    (StepSpec, "lambda_reg", C.RegularizerConfig, "lambda_reg"),
    (StepSpec, "rho_reg", C.RegularizerConfig, "rho_reg"),
    (StepSpec, "mu_reg", C.RegularizerConfig, "mu_reg"),
    (StepSpec, "grad_chunk", C.TrainerConfig, "grad_chunk"),
    (StepSpec, "sam_adaptive", C.OptimizerConfig, "adaptive"),
]


def _cases():
    for fn, schema in SAME_NAMES.items():
        fields = schema.__dataclass_fields__
        named = [p for p in inspect.signature(fn).parameters.values() if p.name in fields and p.default is not p.empty]
        assert named, fn
        yield from ((fn, p.name, schema, p.name) for p in named)
    yield from RENAMED


@pytest.mark.parametrize("fn,param,schema,field", list(_cases()), ids=lambda v: getattr(v, "__name__", str(v)))
def test_signature_defaults_are_the_schemas(fn, param, schema, field):
    default = inspect.signature(fn).parameters[param].default
    assert default == C.schema_default(schema, field)


def test_schema_default_gives_plain_immutable_values():
    assert C.schema_default(C.DatasetConfig, "standardize") == "none"  # an enum as its value
    assert C.schema_default(C.ScheduleConfig, "milestones") == (0.3, 0.6, 0.8)  # a list as a tuple
    assert C.schema_default(C.ModelConfig, "widths") == (200, 200)


@pytest.mark.parametrize(
    "override,message",
    [
        ("metrics.sharpness_k=0", "metrics.sharpness_k must be a positive integer or auto"),
        ("metrics.track_fraction=1.5", "metrics.track_fraction must be in (0, 1]"),
        ("metrics.track_cap=0", "metrics.track_cap must be >= 1"),
        ("metrics.lanczos_min_depth=0", "metrics.lanczos_min_depth must be >= 1"),
        ("metrics.batch_sharpness_batches=0", "metrics.batch_sharpness_batches must be >= 1"),
        ("metrics.n_per_example=0", "metrics.n_per_example must be >= 1"),
        ("metrics.trajectory_dim=0", "metrics.trajectory_dim must be >= 1"),
        ("metrics.trajectory_steps=-1", "metrics.trajectory_steps must be >= 0"),
    ],
)
def test_the_measurement_settings_of_issue_15_are_checked_before_anything_runs(compose, override, message):
    """(In-process: the CLI path of the same checks is tests/test_cli.py's BAD_INPUTS, two of them for these.)"""
    from omegaconf import OmegaConf

    from ijr_cli.core.errors import UserError

    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        C.validate(OmegaConf.to_object(compose([override])))
