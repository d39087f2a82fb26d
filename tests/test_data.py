"""Data sources, splits and the in-memory loader."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.data import DataModule, InMemoryLoader
from ablate.data.sources import SOURCES, load_digits, make_synthetic, read_idx
from ablate.data.splits import stratified_split
from ablate.errors import ConfigError, DataNotFoundError


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if gz else open)(path, "wb").write(payload)


def write_fake_mnist(folder: Path, n_train: int = 50, n_test: int = 20, gz: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array, gz=gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_roundtrip(tmp_path, gz):
    array = np.random.default_rng(1).integers(0, 256, (7, 5, 3))
    path = tmp_path / ("x.idx" + (".gz" if gz else ""))
    write_idx(path, array, gz=gz)
    assert torch.equal(read_idx(path), torch.from_numpy(array.astype(np.uint8)))


def test_idx_reader_rejects_truncated_file(tmp_path):
    write_idx(tmp_path / "x", np.zeros((4, 4)))
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes()[:-3])
    with pytest.raises(ValueError, match="expected 16 bytes"):
        read_idx(tmp_path / "x")


def test_mnist_reads_torchvision_layout_without_download(tmp_path):
    arrays = write_fake_mnist(tmp_path / "MNIST" / "raw")
    raw = SOURCES["mnist"](tmp_path, download=False)
    assert raw.x_train.shape == (50, 1, 28, 28) and raw.x_test.shape == (20, 1, 28, 28)
    assert torch.equal(raw.x_train[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.uint8)))
    assert raw.source == str(tmp_path / "MNIST" / "raw")


def test_fashion_mnist_prefers_data_dir_over_system_copy(tmp_path):
    write_fake_mnist(tmp_path / "FashionMNIST" / "raw", gz=True)
    raw = SOURCES["fashion_mnist"](tmp_path, download=False)
    assert len(raw.y_train) == 50  # the 60k system copy was not used


def test_missing_files_error_lists_every_path_tried(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        SOURCES["mnist"](tmp_path, download=False)
    for tried in (tmp_path / "MNIST" / "raw", tmp_path / "mnist", tmp_path):
        assert str(tried) in str(info.value)
    assert "fix:" in str(info.value)


def test_download_failure_is_reported_like_missing_files(tmp_path, monkeypatch):
    import torchvision

    def no_network(*args, **kwargs):
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    with pytest.raises(DataNotFoundError, match="data set 'mnist' not found"):
        SOURCES["mnist"](tmp_path, download=True)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_python_pickles(tmp_path, name):
    rng = np.random.default_rng(0)
    folder = tmp_path / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir()
    label_key = "labels" if name == "cifar10" else "fine_labels"
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if name == "cifar10" else ["train", "test"]
    first = None
    for f in files:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), label_key: [1, 2, 3, 4]}
        first = batch if first is None else first
        with open(folder / f, "wb") as fh:
            pickle.dump(batch, fh)
    raw = SOURCES[name](tmp_path, download=False)
    assert raw.x_train.shape == (4 * (len(files) - 1), 3, 32, 32) and raw.x_train.dtype == torch.uint8
    assert torch.equal(raw.x_train[0], torch.from_numpy(first["data"][0].reshape(3, 32, 32)))
    assert raw.num_classes == (10 if name == "cifar10" else 100)


def test_digits_has_fixed_stratified_test_split():
    a, b = load_digits(), load_digits()
    assert torch.equal(a.y_test, b.y_test) and len(a.y_train) + len(a.y_test) == 1797
    assert a.x_train.shape[1:] == (1, 8, 8) and a.x_train.max() > 200
    counts = torch.bincount(a.y_test, minlength=10).float()
    assert counts.min() / counts.max() > 0.9


def test_stratified_holdout_split_keeps_class_balance():
    labels = torch.arange(1000) % 10
    train_idx, val_idx = stratified_split(labels, 0.2, seed=3)
    assert len(val_idx) == 200 and len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0
    assert torch.bincount(labels[val_idx]).tolist() == [20] * 10
    again, _ = stratified_split(labels, 0.2, seed=3)
    other, _ = stratified_split(labels, 0.2, seed=4)
    assert torch.equal(train_idx, again) and not torch.equal(train_idx, other)


def test_kfold_folds_partition_the_training_set():
    labels = torch.arange(500) % 5
    vals = [stratified_split(labels, 0.1, num_folds=5, fold=k)[1] for k in range(5)]
    assert sorted(torch.cat(vals).tolist()) == list(range(500))
    for v in vals:
        assert torch.bincount(labels[v]).tolist() == [20] * 5


def test_datamodule_keeps_official_test_split_apart():
    dm = DataModule(name="synthetic", val_size=0.25, synthetic={"num_train": 400, "num_test": 100})
    dm.prepare()
    raw = make_synthetic(num_train=400, num_test=100)
    assert torch.equal(dm.x_test, raw.x_test)
    assert len(dm.y_train) == 300 and len(dm.y_val) == 100
    train_rows = {bytes(x.numpy()) for x in dm.x_train}
    assert not any(bytes(x.numpy()) in train_rows for x in dm.x_val)
    assert dm.input_shape == (1, 28, 28) and dm.num_classes == 10


def test_pad_zero_pads_every_split_and_the_input_shape():
    """data.pad=4 turns 28x28 into 36x36 (Graham 2014's MNIST input) for train, validation and test alike."""
    synthetic = {"num_train": 200, "num_test": 50}
    plain = DataModule(name="synthetic", val_size=0.25, synthetic=synthetic)
    padded = DataModule(name="synthetic", val_size=0.25, synthetic=synthetic, pad=4)
    plain.prepare()
    padded.prepare()
    assert padded.input_shape == (1, 36, 36) and padded.summary()["input_shape"] == [1, 36, 36]
    assert padded.summary()["pad"] == 4
    for split in ("x_train", "x_val", "x_test"):
        x, inner = getattr(padded, split), getattr(plain, split)
        assert x.shape[-2:] == (36, 36) and x.dtype == torch.uint8
        assert torch.equal(x[..., 4:-4, 4:-4], inner)  # the same images, in the same order, centred
        border = x.clone()
        border[..., 4:-4, 4:-4] = 0
        assert not border.any()  # zeros on every side


def test_train_subset_is_stratified_and_leaves_val_alone():
    dm = DataModule(name="synthetic", val_size=100, train_subset=200, synthetic={"num_train": 1000})
    dm.prepare()
    assert len(dm.y_train) == 200 and len(dm.y_val) == 100
    assert torch.bincount(dm.y_train).tolist() == [20] * 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "data.batch_size must be >= 1"),
        ({"val_size": 1.0}, "data.val_size must be a fraction in [0, 1)"),
        ({"num_folds": 1}, "data.num_folds must be 0"),
        ({"num_folds": 3, "fold": 3}, "data.fold must be in [0, 3)"),
        ({"name": "imagenet"}, "data.name 'imagenet' is unknown"),
        ({"pad": -1}, "data.pad must be an integer >= 0"),
    ],
)
def test_datamodule_rejects_impossible_values(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        DataModule(**{"name": "synthetic", **kwargs})


def test_loader_batches_cover_the_data_once_and_reshuffle_per_epoch():
    x = torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1)
    loader = InMemoryLoader(x, torch.arange(10), batch_size=4, shuffle=True, seed=7)
    assert len(loader) == 3
    epoch0 = torch.cat([y for _, y in loader])
    assert sorted(epoch0.tolist()) == list(range(10))
    assert torch.equal(epoch0, torch.cat([y for _, y in loader]))  # same epoch, same order
    loader.sampler.set_epoch(1)
    assert not torch.equal(epoch0, torch.cat([y for _, y in loader]))


def test_loader_shards_are_disjoint_and_cover_everything():
    x = torch.zeros(11, 1, 1, 1, dtype=torch.uint8)
    shards = [
        torch.cat([y for _, y in InMemoryLoader(x, torch.arange(11), 3, shuffle=True, seed=1, rank=r, world_size=2)])
        for r in range(2)
    ]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert sorted(torch.cat(shards).tolist()) == list(range(11))


def test_eval_loader_is_in_order():
    x = torch.zeros(5, 1, 1, 1, dtype=torch.uint8)
    loader = InMemoryLoader(x, torch.arange(5), batch_size=2, shuffle=False)
    assert torch.cat([y for _, y in loader]).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("value", ["abc", "-2", "1.5", "true"])
def test_pad_is_checked_by_the_rule_book(value, tmp_path):
    from ablate.config.rules import validate
    from tests.conftest import compose_config

    with pytest.raises(ConfigError, match=r"^data\.pad must be an integer >= 0 \(pixels of zeros on every side\)"):
        validate(compose_config([f"data.pad={value}"], tmp_path))
