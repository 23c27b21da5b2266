"""Datasets as tensors on the training device; on-device batching, chunking and augmentation.

Everything the hot loop touches lives on the device: a step gathers its batch with an index tensor drawn by an
on-device permutation, and augmentation (random crop with zero padding, horizontal flip) runs there too. No
DataLoader, no host round trip per step. Randomness comes from per-stream seeds derived from the run's seed and
the step (`stream_seed`), so a run resumed at step s sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from ijr_cli.core.config import (
    TORCHVISION_FILES,
    DatasetConfig,
    DatasetName,
    check_batch_size,
    check_data_files,
    check_image_inputs,
    check_subset,
    check_synthetic,
    schema_default,
)
from ijr_cli.core.errors import UserError

DATASETS = tuple(n.value for n in DatasetName)


@dataclass
class Dataset:
    """Train and test tensors on one device: inputs (N, *input_shape) float, labels (N,) int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])


def stream_seed(seed: int, stream: str, index: int = 0) -> int:
    """A 63-bit seed for one random stream ("order", "augment", "mixup", ...) at one index (epoch or step).

    Stable across processes and platforms (unlike Python's `hash`), so resumed runs draw the same numbers.
    """
    digest = hashlib.blake2b(f"{seed}:{stream}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


# ----------------------------------------------------------------------------------------------- raw loaders
# Each returns numpy arrays: x_train, y_train, x_test, y_test, num_classes. Images are channels-first.


def _images_to_float(x: np.ndarray) -> np.ndarray:
    """uint8 images (N,H,W) or (N,H,W,C) -> float32 (N,C,H,W) in [0, 1]."""
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4:
        x = np.transpose(x, (0, 3, 1, 2))
    return np.ascontiguousarray(x, dtype=np.float32) / 255.0


def _load_digits():
    """scikit-learn's 1,797 8x8 digits (no download): the first 1,437 (80 %) train, the last 360 test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return x[:1437], y[:1437], x[1437:], y[1437:], 10


def _load_mnist1d():
    """MNIST-1D (Greydanus 2020), generated offline and deterministically: 4,000 train, 1,000 test, length 40."""
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())
    return (
        d["x"].astype(np.float32),
        d["y"].astype(np.int64),
        d["x_test"].astype(np.float32),
        d["y_test"].astype(np.int64),
        10,
    )


def _load_synthetic(
    input_shape: Sequence[int], num_classes: int, num_train: int, num_test: int, separation: float, generator_seed: int
):
    """A deterministic Gaussian mixture: class means ~ N(0, I) * separation / sqrt(d), unit noise, balanced-ish
    labels."""
    check_synthetic(input_shape, num_classes, num_train, num_test)
    g = torch.Generator().manual_seed(generator_seed)
    dim = int(np.prod(input_shape))
    means = torch.randn(num_classes, dim, generator=g, dtype=torch.float64) * separation / dim**0.5
    y = torch.randint(num_classes, (num_train + num_test,), generator=g)
    x = means[y] + torch.randn(num_train + num_test, dim, generator=g, dtype=torch.float64) / dim**0.5
    x = x.float().reshape(-1, *input_shape).numpy()
    y = y.numpy().astype(np.int64)
    return x[:num_train], y[:num_train], x[num_train:], y[num_train:], num_classes


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_LAYOUT = (
    "an .npz dataset holds exactly x_train, y_train, x_test, y_test: inputs uint8 images (N,H,W) or (N,H,W,C) "
    "(channels last, as torchvision stores them) or float arrays (N,D) or (N,C,H,W); labels int (N,)"
)


def _npz_contents(f) -> str:
    """What an open .npz holds, as `name dtype shape` (read from the headers, no pickles executed)."""
    parts = []
    for k in f.files:
        try:
            a = f[k]
            parts.append(f"{k} {a.dtype} {tuple(a.shape)}")
        except ValueError:
            parts.append(f"{k} object (pickled)")
    return ", ".join(parts) or "nothing"


def _load_npz(path: Optional[str]):
    """Arrays x_train, y_train, x_test, y_test; uint8 images (N,H,W[,C]) become float (N,C,H,W) in [0, 1]."""
    check_data_files("npz", "", False, path)
    p = Path(path).expanduser()
    try:
        with np.load(p, allow_pickle=False) as f:
            if sorted(f.files) != sorted(NPZ_KEYS):
                missing = [k for k in NPZ_KEYS if k not in f.files]
                extra = [k for k in f.files if k not in NPZ_KEYS]
                what = "; ".join(
                    w
                    for w in (
                        f"missing arrays {', '.join(missing)}" if missing else "",
                        f"unexpected arrays {', '.join(extra)}" if extra else "",
                    )
                    if w
                )
                raise UserError(f"{p} holds {_npz_contents(f)} ({what}); {NPZ_LAYOUT}")
            try:
                arrays = [f[k] for k in NPZ_KEYS]
            except ValueError:
                raise UserError(
                    f"{p} holds object (pickled) arrays: {_npz_contents(f)}; ijr reads numeric arrays only "
                    f"(no pickles): {NPZ_LAYOUT}"
                ) from None
    except UserError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{p}: not a readable .npz file ({type(e).__name__}: {e}); re-create or re-copy it") from None
    x_tr, y_tr, x_te, y_te = arrays
    check_arrays(str(p), x_tr, y_tr, x_te, y_te, None)
    if x_tr.dtype == np.uint8:
        x_tr, x_te = _images_to_float(x_tr), _images_to_float(x_te)
    else:
        x_tr, x_te = x_tr.astype(np.float32), x_te.astype(np.float32)
    y_tr, y_te = y_tr.astype(np.int64), y_te.astype(np.int64)
    num_classes = int(max(y_tr.max(), y_te.max() if len(y_te) else 0)) + 1
    return x_tr, y_tr, x_te, y_te, num_classes


def check_arrays(source: str, x_tr, y_tr, x_te, y_te, num_classes: Optional[int], every_class_seen=True) -> None:
    """The loaded arrays are a classification dataset ijr can train on, or a UserError naming the problem and the
    fix: numeric finite inputs of one shape in both splits (uint8 images channels last, float images channels
    first), integer class-index labels (N,) in [0, num_classes) (when the count is known), every test class seen
    in training, matching lengths, a non-empty training set."""
    for key, x in (("x_train", x_tr), ("x_test", x_te)):
        if x.dtype.kind not in "biuf":
            raise UserError(f"{source}: {key} has dtype {x.dtype}; inputs must be numbers (uint8 images or floats)")
        if x.ndim < 2:
            raise UserError(f"{source}: {key} has shape {x.shape}; inputs must be (N, ...) with one row per example")
    for key, y, x in (("y_train", y_tr, x_tr), ("y_test", y_te, x_te)):
        if y.ndim != 1:
            hint = "; one-hot labels: save y.argmax(1)" if y.ndim == 2 else ""
            raise UserError(f"{source}: {key} has shape {y.shape}; labels must be class indices of shape (N,){hint}")
        if y.dtype.kind not in "iu":
            frac = y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y)))
            what = "non-integer float labels" if frac else f"labels of dtype {y.dtype}"
            raise UserError(
                f"{source}: {key} holds {what}; labels must be integer class indices (save y.astype(np.int64) "
                f"if they are whole numbers)"
            )
        if len(y) != len(x):
            raise UserError(f"{source}: {key} has {len(y)} labels for {len(x)} inputs; they must be equally many")
    if len(y_tr) == 0:
        raise UserError(f"{source}: the training set is empty")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise UserError(
            f"{source}: train inputs are {tuple(x_tr.shape[1:])} but test inputs {tuple(x_te.shape[1:])}; both "
            f"splits must have one input shape"
        )
    if x_tr.ndim == 4:
        first, last = x_tr.shape[1] in (1, 3), x_tr.shape[3] in (1, 3)
        if x_tr.dtype == np.uint8 and first and not last:
            raise UserError(
                f"{source}: uint8 images of shape {tuple(x_tr.shape[1:])} look channels-first; uint8 images are "
                f"read channels last (N,H,W,C): save x.transpose(0, 2, 3, 1)"
            )
        if x_tr.dtype != np.uint8 and last and not first:
            raise UserError(
                f"{source}: float images of shape {tuple(x_tr.shape[1:])} look channels-last; float images are "
                f"read channels first (N,C,H,W): save x.transpose(0, 3, 1, 2)"
            )
    for key, x in (("x_train", x_tr), ("x_test", x_te)):
        if x.dtype.kind == "f":
            bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if bad.any():
                rows = np.flatnonzero(bad)
                raise UserError(
                    f"{source}: {key} holds NaN or inf in {len(rows)} example(s) (first: index {rows[0]}); clean "
                    f"or drop them"
                )
    low = min(int(y_tr.min()), int(y_te.min()) if len(y_te) else 0)
    high = max(int(y_tr.max()), int(y_te.max()) if len(y_te) else 0)
    if low < 0 or (num_classes is not None and high >= num_classes):
        span = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise UserError(f"{source}: labels range over [{low}, {high}] but must be class indices {span}")
    unseen = every_class_seen and sorted(set(np.unique(y_te).tolist()) - set(np.unique(y_tr).tolist()))
    if unseen:
        shown = ", ".join(map(str, unseen[:10])) + (" ..." if len(unseen) > 10 else "")
        raise UserError(
            f"{source}: test labels {shown} never occur in the training set; a model cannot learn them "
            f"(check how the data was split)"
        )


def _load_torchvision(name: str, data_dir: str, download: bool):
    """Read torchvision's own file formats from data_dir (download only when asked)."""
    import torchvision.datasets as tvd

    check_data_files(name, data_dir, download, None)
    folder = (Path(data_dir).expanduser() / TORCHVISION_FILES[DatasetName(name)][0]).resolve()
    root = str(Path(data_dir).expanduser())
    try:
        if name in ("mnist", "fashion_mnist"):
            cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
            tr, te = cls(root, train=True, download=download), cls(root, train=False, download=download)
            x_tr, y_tr, x_te, y_te = tr.data.numpy(), tr.targets.numpy(), te.data.numpy(), te.targets.numpy()
            num_classes = 10
        elif name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            tr, te = cls(root, train=True, download=download), cls(root, train=False, download=download)
            x_tr, y_tr, x_te, y_te = tr.data, np.asarray(tr.targets), te.data, np.asarray(te.targets)
            num_classes = 10 if name == "cifar10" else 100
        else:  # svhn: (N, 3, 32, 32) already channels-first
            tr, te = tvd.SVHN(root, split="train", download=download), tvd.SVHN(root, split="test", download=download)
            x_tr, y_tr, x_te, y_te = (
                np.transpose(tr.data, (0, 2, 3, 1)),
                tr.labels,
                np.transpose(te.data, (0, 2, 3, 1)),
                te.labels,
            )
            num_classes = 10
    except RuntimeError as e:
        raise UserError(
            f"dataset={name}: torchvision could not read {folder} ({e}); the files may be corrupt or "
            f"of another version: delete them and set dataset.download=true"
        ) from None
    except OSError as e:
        raise UserError(f"dataset={name}: cannot read or download into {folder} ({e})") from None
    return (
        _images_to_float(np.asarray(x_tr)),
        np.asarray(y_tr, dtype=np.int64),
        _images_to_float(np.asarray(x_te)),
        np.asarray(y_te, dtype=np.int64),
        num_classes,
    )


# ------------------------------------------------------------------------------------------------ public API


def standardize_inputs(x_train: torch.Tensor, x_test: torch.Tensor, mode: str):
    """Centre and scale with statistics of the (kept) training inputs only; constant features keep std 1."""
    if mode == "none":
        return x_train, x_test
    if mode == "channel":
        check_image_inputs(x_train.shape[1:], standardize=mode)
        dims = (0, 2, 3)
        mean = x_train.mean(dim=dims, keepdim=True)
        std = x_train.std(dim=dims, keepdim=True, unbiased=False)
    else:
        mean = x_train.mean(dim=0, keepdim=True)
        std = x_train.std(dim=0, keepdim=True, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (x_train - mean) / std, (x_test - mean) / std


def load_dataset(
    name: str,
    *,
    data_dir: str = schema_default(DatasetConfig, "data_dir"),
    download: bool = schema_default(DatasetConfig, "download"),
    path: Optional[str] = schema_default(DatasetConfig, "path"),
    n_train: Optional[int] = schema_default(DatasetConfig, "n_train"),
    n_test: Optional[int] = schema_default(DatasetConfig, "n_test"),
    standardize: str = schema_default(DatasetConfig, "standardize"),
    input_scale: float = schema_default(DatasetConfig, "input_scale"),
    input_shape: Sequence[int] = schema_default(DatasetConfig, "input_shape"),
    num_classes: int = schema_default(DatasetConfig, "num_classes"),
    num_train_examples: int = schema_default(DatasetConfig, "num_train_examples"),
    num_test_examples: int = schema_default(DatasetConfig, "num_test_examples"),
    class_separation: float = schema_default(DatasetConfig, "class_separation"),
    generator_seed: int = schema_default(DatasetConfig, "generator_seed"),
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    """Load a dataset, keep the first n_train / n_test examples, standardise, scale, and move it to the device."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset.name {name!r}; choose one of: {', '.join(DATASETS)}")
    if name == "digits":
        raw = _load_digits()
    elif name == "mnist1d":
        raw = _load_mnist1d()
    elif name == "synthetic":
        raw = _load_synthetic(
            input_shape, num_classes, num_train_examples, num_test_examples, class_separation, generator_seed
        )
    elif name == "npz":
        raw = _load_npz(path)
    else:
        raw = _load_torchvision(name, data_dir, download)
    x_tr, y_tr, x_te, y_te, classes = raw
    if name != "npz":  # (an npz is checked as stored, before its images are converted)
        check_arrays(f"dataset={name}", x_tr, y_tr, x_te, y_te, classes, every_class_seen=name != "synthetic")
    check_subset("n_train", n_train, len(x_tr), name)
    check_subset("n_test", n_test, len(x_te), name)
    if n_train is not None:
        x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
    if n_test is not None:
        x_te, y_te = x_te[:n_test], y_te[:n_test]
    # Statistics in float64 on the host, once; then the cast and a single copy to the device.
    xt, xe = torch.from_numpy(np.asarray(x_tr)).double(), torch.from_numpy(np.asarray(x_te)).double()
    xt, xe = standardize_inputs(xt, xe, standardize)
    xt, xe = xt * input_scale, xe * input_scale
    return Dataset(
        name=name,
        x_train=xt.to(device=device, dtype=dtype),
        y_train=torch.from_numpy(y_tr).to(device),
        x_test=xe.to(device=device, dtype=dtype),
        y_test=torch.from_numpy(y_te).to(device),
        num_classes=classes,
    )


class BatchSampler:
    """Training-set indices for each step.

    Minibatch (SGD): a fresh on-device permutation every epoch, seeded by (seed, epoch); an epoch has
    floor(N / batch_size) steps and the remainder of the permutation is dropped, so every step sees exactly
    `batch_size` examples. Full batch (GD): `indices` returns None, meaning all N examples in stored order.
    """

    def __init__(self, n: int, batch_size: Optional[int], seed: int, device: str | torch.device):
        check_batch_size(batch_size, n)
        self.n, self.seed, self.device = n, seed, torch.device(device)
        self.full_batch = batch_size is None or batch_size == n
        self.batch_size = n if self.full_batch else batch_size
        self.steps_per_epoch = 1 if self.full_batch else n // batch_size
        self._epoch, self._perm = -1, None
        self._generator = torch.Generator(device=self.device)

    def indices(self, step: int) -> Optional[torch.Tensor]:
        """Indices for 0-based `step`, or None for the full batch."""
        if self.full_batch:
            return None
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._generator.manual_seed(stream_seed(self.seed, "order", epoch))
            self._perm = torch.randperm(self.n, generator=self._generator, device=self.device)
            self._epoch = epoch
        return self._perm[i * self.batch_size : (i + 1) * self.batch_size]


def chunks(n: int, size: Optional[int]) -> Iterator[slice]:
    """Consecutive slices of at most `size` covering range(n) (size None: one slice)."""
    size = n if size is None else max(1, size)
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Per-example random crop of zero-padded images and horizontal flip with probability 1/2, on x's device.

    One gather for the whole batch (no Python loop over examples). x: (B, C, H, W).
    """
    if x.ndim != 4:
        raise UserError(f"regularizer augment needs images (N,C,H,W); inputs have shape {tuple(x.shape[1:])}")
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    flip = torch.rand(b, generator=generator, device=x.device) < 0.5
    cols = torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]  # (B, W): flip by reading columns backwards
    rows = torch.arange(h, device=x.device) + dy[:, None]  # (B, H)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def resolve_device(spec: str) -> torch.device:
    """'auto' -> cuda if available else cpu; anything else must exist on this machine."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UserError(f"trainer.device={spec!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"trainer.device={spec} but CUDA is not available here; use trainer.device=cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"trainer.device={spec} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"trainer.device={spec}: only cpu and cuda devices are supported")
    return dev
