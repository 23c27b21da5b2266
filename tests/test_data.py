"""Datasets in torchvision's real formats and npz, standardisation, batching, on-device augmentation."""

import pickle
import struct

import numpy as np
import pytest
import torch

from ijr_cli.core.errors import UserError
from ijr_cli.data import BatchSampler, chunks, load_dataset, random_crop_flip, stream_seed


def test_digits_split_and_first_n():
    d = load_dataset("digits")
    assert (d.n_train, d.x_test.shape[0], d.input_shape, d.num_classes) == (1437, 360, (1, 8, 8), 10)
    d5 = load_dataset("digits", n_train=100, n_test=50)
    assert torch.equal(d5.x_train, d.x_train[:100]) and torch.equal(d5.y_test, d.y_test[:50])


def test_standardize_feature_uses_training_statistics():
    raw = load_dataset("digits", n_train=500)
    d = load_dataset("digits", n_train=500, standardize="feature", input_scale=2.0)
    x = raw.x_train.double().reshape(500, -1)
    mean, std = x.mean(0), x.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    expect_test = 2.0 * (raw.x_test.double().reshape(360, -1) - mean) / std
    assert torch.allclose(d.x_test.double().reshape(360, -1), expect_test, atol=1e-5)
    z = d.x_train.double().reshape(500, -1) / 2.0
    varying = x.std(0) > 0
    assert torch.allclose(z.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(
        z.std(0, unbiased=False)[varying], torch.ones(int(varying.sum()), dtype=torch.float64), atol=1e-4
    )


def test_standardize_channel_on_vectors_is_a_user_error():
    with pytest.raises(UserError, match="standardize=channel"):
        load_dataset("synthetic", standardize="channel")


def test_synthetic_is_deterministic_and_shaped():
    a = load_dataset("synthetic", input_shape=[3, 8, 8], num_classes=3, num_train_examples=50, num_test_examples=20)
    b = load_dataset("synthetic", input_shape=[3, 8, 8], num_classes=3, num_train_examples=50, num_test_examples=20)
    assert a.input_shape == (3, 8, 8) and torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = load_dataset(
        "synthetic", input_shape=[3, 8, 8], num_classes=3, num_train_examples=50, num_test_examples=20, generator_seed=1
    )
    assert not torch.equal(a.x_train, c.x_train)


def test_mnist1d_offline():
    d = load_dataset("mnist1d")
    assert (d.n_train, d.x_test.shape[0], d.input_shape, d.num_classes) == (4000, 1000, (40,), 10)


def test_n_train_larger_than_data():
    with pytest.raises(UserError, match="larger than the 1437 examples"):
        load_dataset("digits", n_train=2000)


def _write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 8, arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
    path.write_bytes(header + arr.tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_idx_format_through_torchvision(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x_tr, y_tr = rng.integers(0, 256, (12, 28, 28)), rng.permutation(np.arange(12) % 10)  # every class in training
    x_te, y_te = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)
    _write_idx(raw / "train-images-idx3-ubyte", x_tr)
    _write_idx(raw / "train-labels-idx1-ubyte", y_tr)
    _write_idx(raw / "t10k-images-idx3-ubyte", x_te)
    _write_idx(raw / "t10k-labels-idx1-ubyte", y_te)
    d = load_dataset(name, data_dir=str(tmp_path))
    assert d.input_shape == (1, 28, 28) and d.n_train == 12
    assert torch.allclose(d.x_train[:, 0], torch.tensor(x_tr / 255.0, dtype=torch.float32))
    assert torch.equal(d.y_test, torch.tensor(y_te))


def test_cifar10_pickle_format_through_torchvision(tmp_path, monkeypatch):
    """CIFAR-10's python pickles (torchvision checks md5 sums of the real files: skipped for these tiny ones)."""
    import torchvision.datasets as tvd
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = {}
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    for i, name in enumerate(names):
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 2).tolist() if name == "test_batch" else [2 * i, 2 * i + 1]  # every class
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    d = load_dataset("cifar10", data_dir=str(tmp_path))
    assert d.input_shape == (3, 32, 32) and d.n_train == 10 and d.x_test.shape[0] == 2
    first = batches["data_batch_1"][0][0].reshape(3, 32, 32) / 255.0  # CIFAR rows are channel-major
    assert torch.allclose(d.x_train[0], torch.tensor(first, dtype=torch.float32))
    assert d.y_train.tolist()[:2] == batches["data_batch_1"][1]


def test_missing_torchvision_files_name_path_and_files(tmp_path):
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", data_dir=str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "data_batch_1" in msg and "download=true" in msg


def test_npz_uint8_images_channels_last(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(6) % 3, x_test=x[:2], y_test=np.array([0, 2]))
    d = load_dataset("npz", path=str(tmp_path / "d.npz"))
    assert d.input_shape == (3, 4, 4) and d.num_classes == 3
    assert torch.allclose(d.x_train[1, 2], torch.tensor(x[1, :, :, 2] / 255.0, dtype=torch.float32))


def test_npz_corrupt_and_incomplete(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(UserError, match="not a readable .npz"):
        load_dataset("npz", path=str(bad))
    np.savez(tmp_path / "part.npz", x_train=np.zeros((2, 3)), y_train=np.zeros(2))
    with pytest.raises(UserError, match="missing arrays x_test, y_test"):
        load_dataset("npz", path=str(tmp_path / "part.npz"))


def test_shared_cifar_subset(cifar_subset):
    d = load_dataset("npz", path=str(cifar_subset), n_train=5000, standardize="channel")
    assert d.n_train == 5000 and d.input_shape == (3, 32, 32) and d.num_classes == 10
    assert torch.allclose(d.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)


def test_batch_sampler_epochs_are_permutations_and_resumable():
    s = BatchSampler(10, 3, seed=7, device="cpu")
    assert s.steps_per_epoch == 3  # the remainder of each permutation is dropped
    epoch0 = torch.cat([s.indices(i) for i in range(3)])
    assert len(set(epoch0.tolist())) == 9
    epoch1 = torch.cat([s.indices(i) for i in range(3, 6)])
    assert not torch.equal(epoch0, epoch1)
    fresh = BatchSampler(10, 3, seed=7, device="cpu")
    assert torch.equal(fresh.indices(4), s.indices(4))  # a resumed run sees the same batch at step 4
    assert not torch.equal(BatchSampler(10, 3, seed=8, device="cpu").indices(0), fresh.indices(0))
    assert BatchSampler(10, None, seed=0, device="cpu").indices(5) is None
    with pytest.raises(UserError, match="larger than the 10 training examples"):
        BatchSampler(10, 11, seed=0, device="cpu")


def test_chunks_cover_range():
    assert [(c.start, c.stop) for c in chunks(7, 3)] == [(0, 3), (3, 6), (6, 7)]
    assert [(c.start, c.stop) for c in chunks(7, None)] == [(0, 7)]


def test_random_crop_flip_matches_per_example_reference():
    x = torch.randn(5, 2, 6, 7)
    g = torch.Generator().manual_seed(3)
    out = random_crop_flip(x, g, padding=2)
    g.manual_seed(3)  # replay the draws: dy, dx, flip
    dy, dx = torch.randint(0, 5, (5,), generator=g), torch.randint(0, 5, (5,), generator=g)
    flip = torch.rand(5, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(5):
        crop = padded[i, :, dy[i] : dy[i] + 6, dx[i] : dx[i] + 7]
        if flip[i]:
            crop = crop.flip(-1)
        assert torch.equal(out[i], crop)
    unpadded = random_crop_flip(x, torch.Generator().manual_seed(0), padding=0)  # flips only
    assert all(torch.equal(u, v) or torch.equal(u, v.flip(-1)) for u, v in zip(unpadded, x))


def test_stream_seed_stable():
    assert stream_seed(0, "order", 1) == stream_seed(0, "order", 1) != stream_seed(0, "order", 2)
    assert stream_seed(0, "order", 1) != stream_seed(0, "augment", 1)
    assert 0 <= stream_seed(123, "x", 10**9) < 2**63


def test_the_sizes_known_before_loading_are_the_loaded_ones():
    """config.DATA_FACTS (what the pre-flight checks sizes and shapes against) for the datasets that load offline;
    the torchvision ones are their published sizes (MNIST 60,000/10,000, CIFAR 50,000/10,000, SVHN 73,257/26,032)."""
    from ijr_cli.core.config import DATA_FACTS, DatasetName

    for name in (DatasetName.digits, DatasetName.mnist1d):
        d = load_dataset(name.value)
        assert (d.n_train, int(d.x_test.shape[0]), d.input_shape) == DATA_FACTS[name]


def _npz(path, **arrays):
    rng = np.random.default_rng(3)
    base = {
        "x_train": rng.normal(size=(8, 5)).astype(np.float32),
        "y_train": np.arange(8) % 4,
        "x_test": rng.normal(size=(4, 5)).astype(np.float32),
        "y_test": np.arange(4) % 4,
    }
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return str(path)


_rng = np.random.default_rng(4)
BAD_NPZ = {
    "NaN input": ({"x_train": np.where(np.eye(8, 5) > 0, np.nan, 0.0)}, "x_train holds NaN or inf in 5 example(s)"),
    "inf input": ({"x_test": np.full((4, 5), np.inf)}, "x_test holds NaN or inf in 4 example(s) (first: index 0)"),
    "negative labels": ({"y_train": np.arange(8) % 4 - 1}, "labels range over [-1, 3] but must be class indices"),
    "float labels": ({"y_train": np.arange(8) % 4 + 0.5}, "y_train holds non-integer float labels"),
    "whole-number float labels": ({"y_train": (np.arange(8) % 4).astype(float)}, "y.astype(np.int64)"),
    "one-hot labels": ({"y_train": np.eye(4)[np.arange(8) % 4]}, "shape (8, 4); labels must be class indices"),
    "unseen test label": ({"y_test": np.array([0, 1, 2, 7])}, "test labels 7 never occur in the training set"),
    "train/test shapes differ": (
        {"x_test": np.zeros((4, 6), np.float32)},
        "train inputs are (5,) but test inputs (6,)",
    ),
    "lengths differ": ({"y_test": np.arange(3)}, "y_test has 3 labels for 4 inputs"),
    "channel-first uint8": (
        {
            "x_train": _rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8),
            "x_test": _rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8),
        },
        "look channels-first; uint8 images are read channels last (N,H,W,C): save x.transpose(0, 2, 3, 1)",
    ),
    "channel-last float": (
        {"x_train": np.zeros((8, 32, 32, 3), np.float32), "x_test": np.zeros((4, 32, 32, 3), np.float32)},
        "look channels-last; float images are read channels first (N,C,H,W): save x.transpose(0, 3, 1, 2)",
    ),
    "extra key": ({"x_val": np.zeros(3)}, "x_val float64 (3,) (unexpected arrays x_val); an .npz dataset holds"),
    "missing key": ({"y_test": None}, "(missing arrays y_test)"),
    "object arrays": ({"y_train": np.array([[0], "a"] * 4, dtype=object)}, "holds object (pickled) arrays"),
    "string inputs": ({"x_train": np.array([["a"] * 5] * 8)}, "x_train has dtype <U1; inputs must be numbers"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ), ids=lambda c: c.replace(" ", "-"))
def test_bad_npz_content_is_refused_with_the_fix(tmp_path, case):
    arrays, expected = BAD_NPZ[case]
    path = _npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError) as e:
        load_dataset("npz", path=path)
    assert expected in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_a_valid_npz_passes_the_checks(tmp_path):
    d = load_dataset("npz", path=_npz(tmp_path / "d.npz"))
    assert d.num_classes == 4 and d.input_shape == (5,)


def test_torchvision_labels_outside_the_class_count(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "train-images-idx3-ubyte", np.zeros((3, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", [0, 11, 2])
    _write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", [0, 2])
    with pytest.raises(
        UserError, match=r"dataset=mnist: labels range over \[0, 11\] but must be class indices \[0, 10\)"
    ):
        load_dataset("mnist", data_dir=str(tmp_path))
