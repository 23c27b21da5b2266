"""Typed config schemas (the one place defaults live) and every check that can be made before data is loaded.

Each config group (`dataset`, `model`, ...) has one flat dataclass. The group's YAML options in `conf/` set only
what differs from these defaults, and Hydra merges them into the schema, so a wrong type, an unknown key or an
unknown name (`dataset.name`, `model.name` are enums) fails at composition, before anything runs. `name` is
MISSING where an option must be chosen (the primary config chooses one per group). The schema is stored in the
ConfigStore under a name outside every group (`ijr_train_schema`), so it never shows up as a selectable option.

`validate` is the one home of the checks Hydra's typing cannot express, called by `ijr-train` and by
`ijr-sweep`'s pre-flight alike: value ranges, metric names and cadence keys, and field ownership (a field that
only one option reads, set while another option is chosen, is refused with the option that owns it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import MISSING

from ijr_cli.core.errors import UserError, did_you_mean
from ijr_cli.core.metric_names import EVAL_METRICS, GROUP_OF, GROUPS, MEASURABLE


class DatasetName(str, Enum):
    digits = "digits"  # scikit-learn's 8x8 digits (no download)
    mnist1d = "mnist1d"  # generated offline
    synthetic = "synthetic"  # a deterministic Gaussian mixture
    mnist = "mnist"  # torchvision's files from here on
    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    svhn = "svhn"
    npz = "npz"  # x_train, y_train, x_test, y_test in an .npz file


class ModelName(str, Enum):
    fcn3 = "fcn3"  # 3FCN; with activation=tanh Cohen et al.'s fc-tanh
    cnn6 = "cnn6"
    simplecnn = "simplecnn"
    vgg11 = "vgg11"
    resnet20 = "resnet20"
    resnet18 = "resnet18"
    wrn = "wrn"
    linear = "linear"  # softmax / linear regression: H = G for CE, H = (1/N) X~^T X~ (x) I_C for MSE (SCIENCE.md)


# what is known of each dataset before loading it: training and test examples, input shape (npz: only once read)
DATA_FACTS = {
    DatasetName.digits: (1437, 360, (1, 8, 8)),
    DatasetName.mnist1d: (4000, 1000, (40,)),
    DatasetName.mnist: (60000, 10000, (1, 28, 28)),
    DatasetName.fashion_mnist: (60000, 10000, (1, 28, 28)),
    DatasetName.cifar10: (50000, 10000, (3, 32, 32)),
    DatasetName.cifar100: (50000, 10000, (3, 32, 32)),
    DatasetName.svhn: (73257, 26032, (3, 32, 32)),
}

# torchvision's own layouts under dataset.data_dir: sub-folder and the files its loader needs
TORCHVISION_FILES = {
    DatasetName.mnist: (
        "MNIST/raw",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ),
    DatasetName.fashion_mnist: (
        "FashionMNIST/raw",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ),
    DatasetName.cifar10: (
        "cifar-10-batches-py",
        ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"),
    ),
    DatasetName.cifar100: ("cifar-100-python", ("train", "test", "meta")),
    DatasetName.svhn: (".", ("train_32x32.mat", "test_32x32.mat")),
}


class Standardize(str, Enum):
    none = "none"  # inputs as loaded (images scaled to [0, 1])
    channel = "channel"  # per-channel mean/std of the training images (Cohen et al.)
    feature = "feature"  # per-feature mean/std of the training inputs (constant features keep std 1)


class Activation(str, Enum):
    relu = "relu"
    tanh = "tanh"


class LossName(str, Enum):
    ce = "ce"  # cross-entropy (label smoothing from `regularizer.label_smoothing`)
    mse = "mse"  # Cohen et al.: 1/2 ||z - s e_y||^2 summed over classes, averaged over examples


class ScheduleName(str, Enum):
    constant = "constant"
    step = "step"
    cosine = "cosine"


class OptimizerName(str, Enum):
    sgd = "sgd"  # minibatch SGD (heavy-ball / Nesterov momentum, weight decay)
    gd = "gd"  # full-batch gradient descent, fixed order
    sam = "sam"  # sharpness-aware minimisation (Foret et al. 2021) around SGD


class JacobianReg(str, Enum):
    """Explicit Jacobian Regularisation (paper 000 §5.2, App. N; `ijr_cli.train.ejr`)."""

    none = "none"
    ejr = "ejr"  # penalty lambda_reg ||<J>_B u||^2 (double backward)
    ejr_sam = "ejr_sam"  # gradient at theta + rho_reg <J>u/||<J>u|| (Eq. 38)
    ejr_v2 = "ejr_v2"  # as ejr_sam, of L_B + mu_reg u^T <z>_B (Eq. 39)


class BNMode(str, Enum):
    eval = "eval"  # BatchNorm with running statistics
    train = "train"  # per-chunk batch statistics (Cohen et al.'s "ghost BN"); running statistics untouched


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


@dataclass
class DatasetConfig:
    name: DatasetName = MISSING
    data_dir: str = "data"  # root of torchvision's own file layouts (relative to the working directory)
    download: bool = False  # only torchvision datasets download, and only when true
    path: Optional[str] = None  # the .npz file for name=npz (x_train, y_train, x_test, y_test)
    n_train: Optional[int] = None  # first N training examples in stored order (null: all)
    n_test: Optional[int] = None  # first N test examples (null: all)
    standardize: Standardize = Standardize.none
    input_scale: float = 1.0  # multiplies the inputs after standardisation (paper 002 section 5)
    # name=synthetic: a deterministic Gaussian-mixture task
    input_shape: List[int] = field(default_factory=lambda: [20])
    num_classes: int = 10
    num_train_examples: int = 1000
    num_test_examples: int = 1000
    class_separation: float = 3.0  # distance scale between class means, in noise standard deviations
    generator_seed: int = 0  # the task itself, independent of the run's `seed`


@dataclass
class ModelConfig:
    name: ModelName = MISSING
    activation: Activation = Activation.relu  # fcn3 only (tanh: Cohen et al.'s fc-tanh)
    widths: List[int] = field(default_factory=lambda: [200, 200])  # fcn3 hidden widths
    batch_norm: bool = False  # vgg11, resnet20 (paper 000 uses neither with BN); resnet18/wrn always have BN
    dropout: float = 0.0  # vgg11 classifier dropout (0: as in paper 000)
    depth: int = 28  # wrn
    width_factor: int = 10  # wrn


@dataclass
class LossConfig:
    name: LossName = MISSING
    target_scale: float = 1.0  # MSE target s * e_y (paper 002 Thm 5.1)


@dataclass
class OptimizerConfig:
    name: OptimizerName = MISSING
    lr: float = 0.1
    batch_size: Optional[int] = 128  # null: full batch
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    rho: float = 0.05  # sam: neighbourhood radius
    adaptive: bool = False  # sam: ASAM (Kwon et al. 2021) scaling of the perturbation


@dataclass
class RegularizerConfig:
    """Options merge: `regularizer=[mixup,augment]` sets both fields; `none` sets nothing."""

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0  # 0: off; otherwise lambda ~ Beta(alpha, alpha) per batch (Zhang et al. 2018)
    augment: bool = False  # random crop (4-pixel zero padding) + horizontal flip, on the device
    jacobian: JacobianReg = JacobianReg.none  # explicit Jacobian regularisation: regularizer=ejr|ejr_sam|ejr_v2
    lambda_reg: float = 0.0  # ejr: penalty weight (paper 000 Table 1: 0.01 at batch 128, 0.001 full batch)
    rho_reg: float = 0.0  # ejr_sam / ejr_v2: perturbation radius (paper 000 Table 1: 2; CIFAR-100: 5)
    mu_reg: float = 0.0  # ejr_v2: weight of u^T <z>_B (paper 000 Table 1: 0.03)


@dataclass
class ScheduleConfig:
    name: ScheduleName = MISSING
    gamma: float = 0.2  # step: factor at each milestone
    milestones: List[float] = field(default_factory=lambda: [0.3, 0.6, 0.8])  # step: fractions of training
    warmup_steps: int = 0  # linear warm-up from lr/warmup_steps to lr
    min_lr_factor: float = 0.0  # cosine: final lr as a fraction of the initial one


@dataclass
class TrainerConfig:
    max_steps: Optional[int] = 3000  # length in optimizer steps (ignored when `epochs` is set)
    epochs: Optional[float] = None  # length in passes over the training set
    train_acc_goal: Optional[float] = None  # stop once the full-train-set accuracy reaches this (0-1)
    eval_every: int = 100  # steps between evaluations on the full train and test sets
    checkpoint_every: int = 500  # steps between atomic checkpoints
    sync_every: int = 25  # steps between host syncs (non-finite check, progress bar text)
    eval_batch_size: int = 1000  # examples per forward pass during evaluation
    grad_chunk: Optional[int] = None  # most examples per forward in one step (gradients accumulated)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: DType = DType.float32
    progress: Optional[bool] = None  # null: a progress bar when stderr is a terminal
    num_threads: Optional[int] = None  # torch CPU threads (null: torch's default)


@dataclass
class ProbeConfig:
    """The probe set S: the first n training examples, fixed for the run, no augmentation."""

    n: int = 5000  # min(n, N) examples
    chunk: Optional[int] = 1000  # examples per forward pass (null: all at once)
    bn_mode: BNMode = BNMode.eval
    cache_graph: bool = True  # HVPs reuse the probe set's gradient graph (fastest; memory ~ activations x 3)


@dataclass
class MetricsConfig:
    names: List[str] = field(default_factory=list)  # metrics beyond the train/test evaluation (SCIENCE.md names)
    default_every: Optional[int] = None  # steps between measurements (null: trainer.eval_every)
    every: Dict[str, int] = field(default_factory=dict)  # per metric name, e.g. {sharpness: 10}
    early_steps: int = 0  # extra log-spaced measurement steps before the first cadence point
    sharpness_k: Any = 1  # top-k Hessian eigenvalues (sharpness_k), or auto: every one above track_fraction * 2/lr
    track_fraction: float = 0.5  # sharpness_k=auto: track the eigenvalues above this fraction of the threshold
    track_cap: int = 10  # sharpness_k=auto: at most this many
    lanczos_tol: float = 1e-3  # relative Ritz residual
    lanczos_max_iters: int = 100  # Hessian-vector products per estimate, at most
    lanczos_block_extra: int = 2  # p: the block has k + p vectors (guards against multiplicity and clusters)
    lanczos_min_depth: int = 4  # block products before convergence is tested (the fresh directions' reach)
    n_input_jac: int = 100  # examples of S (and of the test set) for input_jac_*
    n_per_example: int = 512  # the first examples of S for the per-example metrics of paper 000 App. D (m_mrl, ...)
    trajectory_dim: int = 1024  # the trajectory sketch's dimension (paper 000 Figs 4, 26)
    trajectory_steps: int = 500  # the trajectory is recorded at every step up to this one, then on its cadence
    batch_sharpness_batches: int = 16  # minibatches (of optimizer.batch_size) per batch_sharpness/batch_lambda_max


@dataclass
class TensorBoardLoggerConfig:
    """logger=tensorboard: event files in the run directory's tb/ (`ijr_cli.track.tensorboard`)."""

    flush_secs: int = 10  # seconds between flushes of the event file (what a live TensorBoard sees)


@dataclass
class MlflowLoggerConfig:
    """logger=mlflow: one MLflow run per ijr run (`ijr_cli.track.mlflow`)."""

    tracking_uri: Optional[str] = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<outputs>/mlflow.db
    experiment: Optional[str] = None  # null: the sweep's name (a run outside a sweep: "ijr")
    flush_secs: float = 5.0  # rows are sent in one request at most this often (0: each row as it is logged)
    request_timeout_s: int = 10  # per HTTP request to a tracking server
    request_retries: int = 1  # per HTTP request (MLflow's own default, 7 with backoff, can stall a run minutes)


@dataclass
class WandbLoggerConfig:
    """logger=wandb: one W&B run per ijr run (`ijr_cli.track.wandb`); offline unless asked (`wandb sync` later)."""

    mode: str = "offline"  # offline | online
    project: str = "ijr"
    entity: Optional[str] = None
    group: Optional[str] = None  # null: the sweep's name


@dataclass
class LoggerConfig:
    """The live loggers in force (`logger=[tensorboard,mlflow,wandb]`; default none): a section each, null = off.
    They never change a result, so a run may be resumed with other loggers."""

    tensorboard: Optional[TensorBoardLoggerConfig] = None
    mlflow: Optional[MlflowLoggerConfig] = None
    wandb: Optional[WandbLoggerConfig] = None


@dataclass
class TrainConfig:
    seed: int = 0
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


SCHEMA_NAME = "ijr_train_schema"


def register_configs() -> None:
    """Put the schema in Hydra's ConfigStore (called by the entry point, never at import)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=TrainConfig)


def schema_default(schema: type, name: str):
    """The schema's default of one field, for the signatures of the library functions that take it: defaults live
    here only (enums as their values, lists as tuples so that a signature default is never mutated)."""
    f = schema.__dataclass_fields__[name]
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(value, Enum):
        return value.value
    return tuple(value) if isinstance(value, list) else value


def _sections(schema: type) -> Dict[str, type]:
    """The fields of a schema dataclass that are schema dataclasses themselves (its sub-sections)."""
    import typing

    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema) if dataclasses.is_dataclass(hints[f.name])}


def fields_at(path: str) -> Optional[List[str]]:
    """The field names of the schema section at dotted `path` ("" the top level, "optimizer"), or None when the
    path is not a typed section (a dict-valued field such as metrics.every, or no field at all)."""
    schema: type = TrainConfig
    for part in [p for p in path.split(".") if p]:
        schema = _sections(schema).get(part)
        if schema is None:
            return None
    return [f.name for f in dataclasses.fields(schema)]


def check_known_keys(composed: Dict[str, object], schema: type = TrainConfig, prefix: str = "") -> None:
    """Every key of the composed config (a plain dict) is a field of the schema: a key added with `+` under a typed
    section (`+optimizer.lrr=0.1`) would be ignored silently, so it is refused with the closest field's name.
    Dict-valued fields (metrics.every) take any key; their keys are checked by `validate`."""
    fields = [f.name for f in dataclasses.fields(schema)]
    sections = _sections(schema)
    for key, value in composed.items():
        if key == "hydra" and not prefix:
            continue
        if key not in fields:
            where = prefix.rstrip(".") or "the config"
            raise UserError(
                f"{prefix}{key} is not a field of {where}"
                f"{did_you_mean(key, fields).replace('mean ', 'mean ' + prefix)}; "
                f"ijr-train --cfg job lists every field"
            )
        if key in sections and isinstance(value, dict):
            check_known_keys(value, sections[key], f"{prefix}{key}.")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def validate(cfg: TrainConfig) -> None:
    """Checks on values alone (sizes that depend on the data are checked once it is loaded)."""
    o, t, r, s, d = cfg.optimizer, cfg.trainer, cfg.regularizer, cfg.schedule, cfg.dataset
    _require(math.isfinite(o.lr) and o.lr > 0, f"optimizer.lr must be a positive number, got {o.lr}")
    _require(
        o.batch_size is None or o.batch_size > 0,
        f"optimizer.batch_size must be positive or null (full batch), got {o.batch_size}",
    )
    _require(
        o.name != OptimizerName.gd or o.batch_size is None,
        f"optimizer=gd is full batch but optimizer.batch_size={o.batch_size}; drop the override or use optimizer=sgd",
    )
    _require(0 <= o.momentum < 1, f"optimizer.momentum must be in [0, 1), got {o.momentum}")
    _require(not o.nesterov or o.momentum > 0, "optimizer.nesterov=true needs optimizer.momentum > 0")
    _require(o.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {o.weight_decay}")
    _require(o.rho > 0, f"optimizer.rho must be positive, got {o.rho}")
    _require(0 <= r.label_smoothing < 1, f"regularizer.label_smoothing must be in [0, 1), got {r.label_smoothing}")
    _require(r.mixup_alpha >= 0, f"regularizer.mixup_alpha must be >= 0 (0 turns mixup off), got {r.mixup_alpha}")
    _validate_jacobian_regularizer(cfg)
    _require(cfg.loss.target_scale > 0, f"loss.target_scale must be positive, got {cfg.loss.target_scale}")
    _require(s.gamma > 0, f"schedule.gamma must be positive, got {s.gamma}")
    _require(
        all(0 < m < 1 for m in s.milestones) and list(s.milestones) == sorted(s.milestones),
        f"schedule.milestones must be increasing fractions of training in (0, 1), got {list(s.milestones)}",
    )
    _require(s.warmup_steps >= 0, f"schedule.warmup_steps must be >= 0, got {s.warmup_steps}")
    _require(0 <= s.min_lr_factor <= 1, f"schedule.min_lr_factor must be in [0, 1], got {s.min_lr_factor}")
    _require(t.epochs is not None or t.max_steps is not None, "set trainer.max_steps or trainer.epochs (both are null)")
    _require(t.max_steps is None or t.max_steps >= 0, f"trainer.max_steps must be >= 0, got {t.max_steps}")
    _require(t.epochs is None or t.epochs > 0, f"trainer.epochs must be positive, got {t.epochs}")
    _require(
        t.train_acc_goal is None or 0 < t.train_acc_goal <= 1,
        f"trainer.train_acc_goal must be in (0, 1], got {t.train_acc_goal}",
    )
    for key in ("eval_every", "checkpoint_every", "sync_every", "eval_batch_size"):
        _require(getattr(t, key) > 0, f"trainer.{key} must be positive, got {getattr(t, key)}")
    _require(t.grad_chunk is None or t.grad_chunk > 0, f"trainer.grad_chunk must be positive, got {t.grad_chunk}")
    _require(t.num_threads is None or t.num_threads > 0, f"trainer.num_threads must be positive, got {t.num_threads}")
    mc = cfg.metrics
    _require(
        mc.default_every is None or mc.default_every > 0,
        f"metrics.default_every must be positive, got {mc.default_every}",
    )
    bad = {k: v for k, v in mc.every.items() if v <= 0}
    _require(not bad, f"metrics.every values must be positive steps, got {bad}")
    _require(mc.early_steps >= 0, f"metrics.early_steps must be >= 0, got {mc.early_steps}")
    _require(
        mc.sharpness_k == "auto" or (isinstance(mc.sharpness_k, int) and mc.sharpness_k >= 1),
        f"metrics.sharpness_k must be a positive integer or auto, got {mc.sharpness_k!r}",
    )
    _require(0 < mc.track_fraction <= 1, f"metrics.track_fraction must be in (0, 1], got {mc.track_fraction}")
    _require(mc.track_cap >= 1, f"metrics.track_cap must be >= 1, got {mc.track_cap}")
    _require(0 < mc.lanczos_tol < 1, f"metrics.lanczos_tol must be in (0, 1), got {mc.lanczos_tol}")
    _require(mc.lanczos_max_iters >= 1, f"metrics.lanczos_max_iters must be >= 1, got {mc.lanczos_max_iters}")
    _require(
        mc.lanczos_block_extra >= 1,
        f"metrics.lanczos_block_extra must be >= 1 (a block needs a fresh direction), got {mc.lanczos_block_extra}",
    )
    _require(mc.lanczos_min_depth >= 1, f"metrics.lanczos_min_depth must be >= 1, got {mc.lanczos_min_depth}")
    _require(
        mc.batch_sharpness_batches >= 1,
        f"metrics.batch_sharpness_batches must be >= 1, got {mc.batch_sharpness_batches}",
    )
    _require(mc.trajectory_dim >= 1, f"metrics.trajectory_dim must be >= 1, got {mc.trajectory_dim}")
    _require(mc.trajectory_steps >= 0, f"metrics.trajectory_steps must be >= 0, got {mc.trajectory_steps}")
    _require(mc.n_per_example >= 1, f"metrics.n_per_example must be >= 1, got {mc.n_per_example}")
    _require(mc.n_input_jac >= 1, f"metrics.n_input_jac must be >= 1, got {mc.n_input_jac}")
    _require(cfg.probe.n >= 1, f"probe.n must be >= 1, got {cfg.probe.n}")
    _require(
        cfg.probe.chunk is None or cfg.probe.chunk >= 1, f"probe.chunk must be positive or null, got {cfg.probe.chunk}"
    )
    _require(d.n_train is None or d.n_train > 0, f"dataset.n_train must be positive, got {d.n_train}")
    _require(d.n_test is None or d.n_test > 0, f"dataset.n_test must be positive, got {d.n_test}")
    _require(
        math.isfinite(d.input_scale) and d.input_scale > 0, f"dataset.input_scale must be positive, got {d.input_scale}"
    )
    _require(
        cfg.model.dropout >= 0 and cfg.model.dropout < 1, f"model.dropout must be in [0, 1), got {cfg.model.dropout}"
    )
    _validate_ownership(cfg)
    _validate_loggers(cfg.logger)
    m = cfg.model
    check_architecture(m.name.value, list(m.widths), m.depth, m.width_factor)
    if d.name == DatasetName.synthetic:
        check_synthetic(list(d.input_shape), d.num_classes, d.num_train_examples, d.num_test_examples)
    facts = known_data(d)
    if facts is not None:
        check_against_data(cfg, *facts)
    check_metric_names(mc.names)
    unknown_keys = [k for k in mc.every if k not in GROUP_OF and k not in GROUPS]
    close = did_you_mean(unknown_keys[0], [*GROUP_OF, *GROUPS]) if unknown_keys else ""
    _require(
        not unknown_keys,
        f"metrics.every has unknown key(s) {', '.join(unknown_keys)}{close}; use metric names from metrics.names (or "
        f"group names: {', '.join(GROUPS)})",
    )


def known_data(d: DatasetConfig):
    """(training examples, test examples, input shape) of the dataset before loading it, or None (npz)."""
    if d.name == DatasetName.synthetic:
        return d.num_train_examples, d.num_test_examples, tuple(d.input_shape)
    return DATA_FACTS.get(d.name)


def check_subset(key: str, wanted: Optional[int], have: int, dataset: str) -> None:
    """dataset.n_train / n_test keep the first `wanted` of `have` examples."""
    _require(
        wanted is None or wanted <= have,
        f"dataset.{key}={wanted} is larger than the {have} examples of dataset={dataset}; use at most {have} "
        "(or null for all)",
    )


def check_batch_size(batch_size: Optional[int], n: int) -> None:
    """A minibatch is drawn from the n training examples kept."""
    _require(
        batch_size is None or batch_size <= n,
        f"optimizer.batch_size={batch_size} is larger than the {n} training examples; use at most {n} or null for "
        "full batch",
    )


def check_image_inputs(
    input_shape: Sequence[int],
    *,
    model: Optional[str] = None,
    augment: bool = False,
    standardize: Optional[str] = None,
    dataset: str = "",
) -> None:
    """Image models, augmentation and per-channel standardisation need inputs of shape (C, H, W)."""
    shape = tuple(input_shape)
    if len(shape) == 3:
        return
    _require(
        model in (None, ModelName.fcn3.value),
        f"model={model} needs image inputs (C,H,W) but the dataset gives shape {shape}; use model=fcn3 or an "
        "image dataset",
    )
    _require(
        not augment,
        f"regularizer augment needs image inputs (C,H,W); dataset={dataset} gives shape {shape}: drop augment",
    )
    _require(
        standardize != Standardize.channel.value,
        f"dataset.standardize=channel needs images (N,C,H,W); these inputs have shape {shape}: use standardize=feature",
    )


def check_against_data(cfg: TrainConfig, n_train: int, n_test: int, input_shape: Sequence[int]) -> None:
    """The checks that need the data's sizes and input shape (known before loading for every dataset but npz)."""
    d = cfg.dataset
    check_subset("n_train", d.n_train, n_train, d.name.value)
    check_subset("n_test", d.n_test, n_test, d.name.value)
    check_batch_size(cfg.optimizer.batch_size, n_train if d.n_train is None else d.n_train)
    check_image_inputs(
        input_shape,
        model=cfg.model.name.value,
        augment=cfg.regularizer.augment,
        standardize=d.standardize.value,
        dataset=d.name.value,
    )


def check_synthetic(input_shape: Sequence[int], num_classes: int, num_train: int, num_test: int) -> None:
    """dataset=synthetic's task is well defined."""
    _require(
        num_classes >= 2
        and num_train >= 1
        and num_test >= 1
        and len(input_shape) > 0
        and all(s >= 1 for s in input_shape),
        f"dataset=synthetic needs num_classes >= 2, positive sizes and a non-empty input_shape; got "
        f"num_classes={num_classes}, num_train_examples={num_train}, num_test_examples={num_test}, "
        f"input_shape={list(input_shape)}",
    )


def check_architecture(name: str, widths: Sequence[int], depth: int, width_factor: int) -> None:
    """The architecture's own sizes: fcn3's hidden widths, a WRN's depth (6n+4) and width factor."""
    if name == ModelName.fcn3.value:
        _require(
            bool(widths) and all(w >= 1 for w in widths),
            f"model.widths must be a non-empty list of positive widths, got {list(widths)}",
        )
    if name == ModelName.wrn.value:
        _require(
            (depth - 4) % 6 == 0 and depth >= 10,
            f"model.depth={depth}: a WRN depth must be 6n+4 with n >= 1 (e.g. 16, 22, 28, 40)",
        )
        _require(width_factor >= 1, f"model.width_factor must be >= 1, got {width_factor}")


def check_metric_names(names: Sequence[str]) -> List[str]:
    """The requested metrics without repeats, or a UserError naming the unknown ones and the known ones."""
    unknown = [n for n in names if n not in GROUP_OF]
    _require(
        not unknown,
        f"unknown metric name(s) in metrics.names: {', '.join(unknown)}"
        f"{did_you_mean(unknown[0], GROUP_OF) if len(unknown) == 1 else ''}; known: {', '.join(MEASURABLE)} "
        f"(and {', '.join(EVAL_METRICS)}, always evaluated)",
    )
    return list(dict.fromkeys(names))


SYNTHETIC_FIELDS = (
    "input_shape",
    "num_classes",
    "num_train_examples",
    "num_test_examples",
    "class_separation",
    "generator_seed",
)


def _ownership_rules(cfg: TrainConfig):
    """(group, fields, whether the chosen option reads them, the options that do)."""
    d, m, o, loss, s = cfg.dataset, cfg.model, cfg.optimizer, cfg.loss, cfg.schedule
    return (
        ("optimizer", ("rho", "adaptive"), o.name == OptimizerName.sam, "optimizer=sam"),
        ("model", ("widths", "activation"), m.name == ModelName.fcn3, "model=fcn3 (or fc_tanh)"),
        ("model", ("depth", "width_factor"), m.name == ModelName.wrn, "model=wrn"),
        ("model", ("dropout",), m.name == ModelName.vgg11, "model=vgg11"),
        (
            "model",
            ("batch_norm",),
            m.name in (ModelName.vgg11, ModelName.resnet20),
            "model=vgg11 or resnet20 (resnet18 and wrn always have batch norm, the others none)",
        ),
        ("dataset", SYNTHETIC_FIELDS, d.name == DatasetName.synthetic, "dataset=synthetic"),
        ("dataset", ("path",), d.name == DatasetName.npz, "dataset=npz"),
        (
            "dataset",
            ("data_dir", "download"),
            d.name in TORCHVISION_FILES,
            f"the torchvision datasets ({', '.join(n.value for n in TORCHVISION_FILES)})",
        ),
        ("loss", ("target_scale",), loss.name == LossName.mse, "loss=mse"),
        ("schedule", ("gamma", "milestones"), s.name == ScheduleName.step, "schedule=step"),
        ("schedule", ("min_lr_factor",), s.name == ScheduleName.cosine, "schedule=cosine"),
    )


_SCHEMAS = {
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "optimizer": OptimizerConfig,
    "loss": LossConfig,
    "schedule": ScheduleConfig,
}


def _validate_ownership(cfg: TrainConfig) -> None:
    """A field that only some options read, set (away from its default) while another option is chosen, would be
    silently ignored: it is refused, naming the options that read it."""
    for group, keys, owned, owners in _ownership_rules(cfg):
        if owned:
            continue
        section, default = getattr(cfg, group), _SCHEMAS[group]()
        for key in keys:
            value = getattr(section, key)
            if _plain(value) != _plain(getattr(default, key)):
                raise UserError(
                    f"{group}.{key}={_override_text(value)} is used only by {owners} but "
                    f"{group}.name={_plain(section.name)}; select that option (or drop the override)"
                )


def _plain(value):
    """Enums as their values, lists as lists (for comparing with the schema default)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _override_text(value) -> str:
    """A value as it is written in an override: true/false, null, [a,b]."""
    value = _plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(_override_text(v) for v in value) + "]"
    return str(value)


def check_data_files(name: str, data_dir: str, download: bool, path: Optional[str]) -> None:
    """The files dataset `name` reads exist (torchvision's layout under data_dir, unless it may download; the npz
    file): one UserError naming the folder and the missing files, or the file, and the fix. `ijr-sweep`'s pre-flight
    and the data loader both call this."""
    name = DatasetName(name)
    if name == DatasetName.npz:
        _require(bool(path), "dataset=npz needs dataset.path=FILE.npz (arrays x_train, y_train, x_test, y_test)")
        p = Path(path).expanduser()
        _require(
            p.is_file(),
            f"dataset.path={path}: no such file ({p.resolve()}); copy the .npz there or pass dataset.path=FILE "
            "(an .npz with x_train, y_train, x_test, y_test)",
        )
    elif name in TORCHVISION_FILES and not download:
        sub, files = TORCHVISION_FILES[name]
        folder = (Path(data_dir).expanduser() / sub).resolve()
        missing = [f for f in files if not (folder / f).is_file()]
        _require(
            not missing,
            f"dataset={name.value}: missing {', '.join(missing)} in {folder} (torchvision's format); put the files "
            "there or set dataset.download=true",
        )


def _validate_jacobian_regularizer(cfg: TrainConfig) -> None:
    r, jac = cfg.regularizer, cfg.regularizer.jacobian
    for key, owners in (
        ("lambda_reg", (JacobianReg.ejr,)),
        ("rho_reg", (JacobianReg.ejr_sam, JacobianReg.ejr_v2)),
        ("mu_reg", (JacobianReg.ejr_v2,)),
    ):
        value = getattr(r, key)
        _require(math.isfinite(value), f"regularizer.{key} must be a finite number, got {value}")
        _require(
            value == 0 or jac in owners,
            f"regularizer.{key}={value} is used only by regularizer={'/'.join(o.value for o in owners)} but "
            f"regularizer.jacobian={jac.value}; select that option (or drop the override)",
        )
    _require(r.lambda_reg >= 0, f"regularizer.lambda_reg must be >= 0, got {r.lambda_reg}")
    _require(r.rho_reg >= 0, f"regularizer.rho_reg must be >= 0, got {r.rho_reg}")
    _require(
        not (jac in (JacobianReg.ejr_sam, JacobianReg.ejr_v2) and cfg.optimizer.name == OptimizerName.sam),
        f"regularizer={jac.value} and optimizer=sam both perturb the weights before the gradient; use one "
        f"(optimizer=sgd with regularizer={jac.value}, or regularizer=ejr with optimizer=sam)",
    )
    _require(
        not (jac == JacobianReg.ejr and cfg.trainer.grad_chunk is not None and cfg.model.dropout > 0),
        "regularizer=ejr with trainer.grad_chunk needs the same dropout mask in its two passes: set "
        "model.dropout=0 or trainer.grad_chunk=null",
    )


def _validate_loggers(lg: LoggerConfig) -> None:
    """The loggers' settings (their packages are checked by `ijr_cli.track.base.check_installed`)."""
    if lg.wandb is not None:
        _require(
            lg.wandb.mode in ("offline", "online"),
            f"logger.wandb.mode must be offline or online, got {lg.wandb.mode}",
        )
    if lg.mlflow is not None:
        m = lg.mlflow
        _require(m.flush_secs >= 0, f"logger.mlflow.flush_secs must be >= 0, got {m.flush_secs}")
        _require(
            m.request_timeout_s > 0, f"logger.mlflow.request_timeout_s must be positive, got {m.request_timeout_s}"
        )
        _require(m.request_retries >= 0, f"logger.mlflow.request_retries must be >= 0, got {m.request_retries}")
    if lg.tensorboard is not None:
        _require(
            lg.tensorboard.flush_secs > 0,
            f"logger.tensorboard.flush_secs must be positive, got {lg.tensorboard.flush_secs}",
        )


def family(config: dict) -> str:
    """The regularisers in force (paper 002 Fig. 5's families): label_smoothing, mixup, augment, sam, the
    Jacobian regulariser, joined by '+'; a run with none of them is 'weight_decay' when it has weight decay,
    else 'none'."""
    parts = []
    if (config.get("regularizer.label_smoothing") or 0) > 0:
        parts.append("label_smoothing")
    if (config.get("regularizer.mixup_alpha") or 0) > 0:
        parts.append("mixup")
    if config.get("regularizer.augment"):
        parts.append("augment")
    if config.get("optimizer.name") == "sam":
        parts.append("sam")
    if config.get("regularizer.jacobian") not in (None, "none"):
        parts.append(str(config["regularizer.jacobian"]))
    if parts:
        return "+".join(parts)
    return "weight_decay" if (config.get("optimizer.weight_decay") or 0) > 0 else "none"
