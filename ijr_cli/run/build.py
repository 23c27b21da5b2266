"""A run's parts built from its typed config: data on the device, model, optimizer, step spec, measurer, schedule.

The one place where the config is unpacked into the plain values the lower layers take. No file is written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch

from ijr_cli.core.config import (
    MetricsConfig,
    OptimizerConfig,
    OptimizerName,
    ProbeConfig,
    TrainConfig,
    check_against_data,
    check_metric_names,
)
from ijr_cli.core.metric_names import GROUP_OF, GROUPS
from ijr_cli.curvature.params import flat_parameters
from ijr_cli.data import BatchSampler, Dataset, load_dataset, resolve_device
from ijr_cli.measure.measurer import Measurer
from ijr_cli.measure.schedule import Schedule
from ijr_cli.models import build_model
from ijr_cli.objectives import Objective
from ijr_cli.optim import build_sgd
from ijr_cli.train.state import RunState
from ijr_cli.train.step import StepSpec


@dataclass
class Built:
    """What a run is made of, built from the config (no file written yet)."""

    data: Dataset
    state: RunState
    spec: StepSpec
    objective: Objective
    total_steps: int
    device: torch.device
    measurer: Measurer
    schedule: Schedule


def build(cfg: TrainConfig, data: Optional[Dataset] = None) -> Built:
    """The run's parts; `data`: the dataset already loaded for this config (a pack's members share one)."""
    t, d, o, m, r = cfg.trainer, cfg.dataset, cfg.optimizer, cfg.model, cfg.regularizer
    device = resolve_device(t.device)
    dtype = torch.float64 if t.dtype.value == "float64" else torch.float32
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    names = check_metric_names(cfg.metrics.names)
    data = data or load_dataset(
        d.name.value,
        data_dir=d.data_dir,
        download=d.download,
        path=d.path,
        n_train=d.n_train,
        n_test=d.n_test,
        standardize=d.standardize.value,
        input_scale=d.input_scale,
        input_shape=list(d.input_shape),
        num_classes=d.num_classes,
        num_train_examples=d.num_train_examples,
        num_test_examples=d.num_test_examples,
        class_separation=d.class_separation,
        generator_seed=d.generator_seed,
        device=device,
        dtype=dtype,
    )
    check_against_data(cfg, data.n_train, int(data.x_test.shape[0]), data.input_shape)  # (npz: known only now)
    sampler = BatchSampler(data.n_train, o.batch_size, cfg.seed, device)
    torch.manual_seed(cfg.seed)  # the model's initialisation is a function of `seed` alone
    model = build_model(
        m.name.value,
        data.input_shape,
        data.num_classes,
        activation=m.activation.value,
        widths=list(m.widths),
        batch_norm=m.batch_norm,
        dropout=m.dropout,
        depth=m.depth,
        width_factor=m.width_factor,
    ).to(device=device, dtype=dtype)
    optimizer = build_sgd(
        model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
    )
    objective = Objective(cfg.loss.name.value, data.num_classes, cfg.regularizer.label_smoothing, cfg.loss.target_scale)
    spec = StepSpec(
        objective=objective,
        sampler=sampler,
        seed=cfg.seed,
        augment=cfg.regularizer.augment,
        mixup_alpha=cfg.regularizer.mixup_alpha,
        grad_chunk=t.grad_chunk,
        sam_rho=o.rho if o.name == OptimizerName.sam else None,
        sam_adaptive=o.adaptive,
        ejr=None if r.jacobian.value == "none" else r.jacobian.value,
        lambda_reg=r.lambda_reg,
        rho_reg=r.rho_reg,
        mu_reg=r.mu_reg,
    )
    total = math.ceil(t.epochs * sampler.steps_per_epoch) if t.epochs is not None else t.max_steps
    state = RunState(model=model, optimizer=optimizer)
    measurer = Measurer(
        model=model,
        data=data,
        objective=objective,
        names=names,
        init_params=flat_parameters(model).clone(),
        warm=state.measure_state,
        **measurer_settings(cfg.metrics, cfg.probe, o, cfg.seed),
    )
    return Built(
        data=data,
        state=state,
        spec=spec,
        objective=objective,
        total_steps=total,
        device=device,
        measurer=measurer,
        schedule=metric_schedule(cfg, names, total),
    )


def measurer_settings(metrics: MetricsConfig, probe: ProbeConfig, optimizer: OptimizerConfig, seed: int) -> dict:
    """The Measurer's settings, unpacked from the config's metrics.*, probe.* and the optimizer's momentum (for the
    stability threshold); the tests call it with the schema's defaults."""
    return dict(
        probe_n=probe.n,
        probe_chunk=probe.chunk,
        probe_bn_mode=probe.bn_mode.value,
        probe_cache_graph=probe.cache_graph,
        sharpness_k=metrics.sharpness_k,
        track_fraction=metrics.track_fraction,
        track_cap=metrics.track_cap,
        lanczos_tol=metrics.lanczos_tol,
        lanczos_max_iters=metrics.lanczos_max_iters,
        lanczos_block_extra=metrics.lanczos_block_extra,
        lanczos_min_depth=metrics.lanczos_min_depth,
        n_input_jac=metrics.n_input_jac,
        n_per_example=metrics.n_per_example,
        trajectory_dim=metrics.trajectory_dim,
        batch_size=optimizer.batch_size,
        batch_sharpness_batches=metrics.batch_sharpness_batches,
        momentum=optimizer.momentum,
        nesterov=optimizer.nesterov,
        seed=seed,
    )


def metric_schedule(cfg: TrainConfig, names: List[str], total_steps: int) -> Schedule:
    """Cadence per group: the smallest `metrics.every` of its requested names (or of the group), else
    `metrics.default_every`, else `trainer.eval_every`; the train/test evaluation every `trainer.eval_every`."""
    default = cfg.metrics.default_every or cfg.trainer.eval_every
    every = {"eval": cfg.trainer.eval_every}
    for name in names:
        group = GROUP_OF[name]
        own = cfg.metrics.every.get(name, cfg.metrics.every.get(group, default))
        every[group] = min(every.get(group, own), own)
    ordered = {g: every[g] for g in GROUPS if g in every}  # GROUPS order: shared work is computed first
    dense = {"trajectory": cfg.metrics.trajectory_steps} if "trajectory" in ordered else {}
    return Schedule(ordered, total_steps, cfg.metrics.early_steps, dense_until=dense)
