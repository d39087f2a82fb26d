"""The LightningDataModule: one source, a stratified validation split, and in-memory loaders."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ablate.config.rules import effective_seed
from ablate.data.loader import InMemoryLoader
from ablate.data.sources import SOURCES, RawDataset, make_synthetic
from ablate.data.splits import stratified_split
from ablate.errors import ConfigError


class DataModule(L.LightningDataModule):
    """Holds a whole data set as uint8 in memory; normalization and augmentation happen per batch on device.

    The official test split is only ever served by ``test_dataloader``; validation comes out of the training set.
    """

    KNOWN_NAMES: tuple[str, ...] = (*SOURCES, "synthetic")

    def __init__(
        self,
        name: str = "fashion_mnist",
        data_dir: str = "data",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: float = 0.1,
        num_folds: int = 0,
        fold: int = 0,
        split_seed: int = 0,
        download: bool = True,
        train_subset: int = 0,
        classes: list[int] | None = None,
        train_per_class: int = 0,
        synthetic: dict[str, Any] | None = None,
        bootstrap_seed: int | None = None,
        pad: int = 0,
    ) -> None:
        super().__init__()
        self.pad = pad
        self.name, self.data_dir, self.download = name, str(data_dir), download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.num_folds, self.fold = val_size, num_folds, fold
        self.split_seed = effective_seed(split_seed)  # any integer; scikit-learn takes [0, 2**32)
        self.train_subset, self.bootstrap_seed = train_subset, bootstrap_seed
        self.classes = [int(c) for c in classes] if classes is not None else None
        self.train_per_class = train_per_class
        self.synthetic = dict(synthetic or {})
        if "seed" in self.synthetic:
            self.synthetic["seed"] = effective_seed(self.synthetic["seed"])
        self.validate()
        self.raw: RawDataset | None = None
        self.shuffle_seed = 0  # set by the run from the global seed

    def validate(self) -> None:
        if self.name not in self.KNOWN_NAMES:
            raise ConfigError(f"data.name '{self.name}' is unknown; choose one of {sorted(self.KNOWN_NAMES)}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1 (got {self.batch_size}, eval {self.eval_batch_size})")
        if self.num_folds == 1 or self.num_folds < 0:
            raise ConfigError(f"data.num_folds must be 0 (hold-out split) or >= 2, got {self.num_folds}")
        if self.num_folds >= 2 and not 0 <= self.fold < self.num_folds:
            raise ConfigError(f"data.fold must be in [0, {self.num_folds}), got {self.fold}")
        if isinstance(self.val_size, float) and not 0.0 <= self.val_size < 1.0:
            raise ConfigError(f"data.val_size must be a fraction in [0, 1) or a sample count, got {self.val_size}")
        if isinstance(self.val_size, int) and self.val_size < 0:
            raise ConfigError(f"data.val_size must be >= 0, got {self.val_size}")
        if self.train_subset < 0 or self.train_per_class < 0:
            raise ConfigError("data.train_subset and data.train_per_class must be >= 0 (0 = all)")
        if self.train_subset and self.train_per_class:
            raise ConfigError("data.train_subset and data.train_per_class both pick a training subset; set one")
        if self.classes is not None and (not self.classes or len(set(self.classes)) != len(self.classes)):
            raise ConfigError(f"data.classes must be a non-empty list of distinct class indices, got {self.classes}")
        if isinstance(self.pad, bool) or not isinstance(self.pad, int) or self.pad < 0:
            raise ConfigError(f"data.pad must be an integer >= 0 (pixels of zeros on every side), got {self.pad}")
        if self.bootstrap_seed is not None and (isinstance(self.bootstrap_seed, bool) or self.bootstrap_seed < 0):
            raise ConfigError(f"data.bootstrap_seed must be null (off) or an integer >= 0, got {self.bootstrap_seed}")

    def _check_sizes(self, raw: RawDataset) -> None:
        """What needs the data's size: at least two classes, and a stratified split that leaves every class a
        sample on both sides (scikit-learn's own error would be a traceback)."""
        n, classes = len(raw.y_train), int(raw.y_train.unique().numel())
        if classes < 2:
            raise ConfigError(f"data set '{self.name}' has only {classes} class; a classifier needs two or more")
        if self.num_folds >= 2:
            largest = int(torch.bincount(raw.y_train).max())
            if self.num_folds > largest:
                raise ConfigError(
                    f"data.num_folds={self.num_folds} is more than the {largest} samples of the largest class; "
                    "use fewer folds, e.g. data.num_folds=5"
                )
            return
        count = round(self.val_size * n) if isinstance(self.val_size, float) else int(self.val_size)
        if self.val_size and not classes <= count <= n - classes:
            raise ConfigError(
                f"data.val_size={self.val_size} gives {count} of {n} training samples to validation; a stratified "
                f"split needs between {classes} and {n - classes} (one per class on each side), e.g. data.val_size=0.1"
            )

    # -- loading ---------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the files and split once; safe to call repeatedly (Lightning's setup calls it too)."""
        if self.raw is not None:
            return
        raw = self._load_raw()
        if self.classes is not None:
            raw = select_classes(raw, self.classes)
        if self.pad:
            raw = pad_images(raw, self.pad)
        self.raw = raw
        self._check_sizes(raw)
        train_idx, val_idx = stratified_split(raw.y_train, self.val_size, self.num_folds, self.fold, self.split_seed)
        if self.train_subset:
            classes = self.num_classes
            if not classes <= self.train_subset <= len(train_idx) - classes:  # stratified: each class on both sides
                raise ConfigError(
                    f"data.train_subset={self.train_subset} must be between {classes} and {len(train_idx) - classes} "
                    f"for the {len(train_idx)} training images (0 = all); e.g. data.train_subset={len(train_idx) // 2}"
                )
            # A seeded, stratified subset of the training part (for small-data ablations); val is unchanged.
            keep, _ = stratified_split(raw.y_train[train_idx], len(train_idx) - self.train_subset, seed=self.split_seed)
            train_idx = train_idx[keep]
        if self.train_per_class:
            train_idx = train_idx[per_class_subset(raw.y_train[train_idx], self.train_per_class, self.split_seed)]
        if self.bootstrap_seed is not None:
            train_idx = bootstrap_resample(train_idx, self.bootstrap_seed)
        self.x_train, self.y_train = raw.x_train[train_idx], raw.y_train[train_idx]
        self.x_val, self.y_val = raw.x_train[val_idx], raw.y_train[val_idx]
        self.x_test, self.y_test = raw.x_test, raw.y_test
        # Per-channel statistics of the images actually trained on, applied per batch on device.
        self.mean, self.std = self._channel_stats(self.x_train)

    def _channel_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = x.transpose(0, 1).reshape(x.shape[1], -1).float().div_(255)
        return pixels.mean(dim=1), pixels.std(dim=1).clamp_min(1e-3)

    def _load_raw(self) -> RawDataset:
        if self.name == "synthetic":
            return make_synthetic(**self.synthetic)
        self._check_data_dir()
        return SOURCES[self.name](self.data_dir, download=self.download)

    def _check_data_dir(self) -> None:
        """A regular file where a folder should be is an error; the folder is created only to download into."""
        root = Path(self.data_dir)
        for part in (root, *root.parents):
            if part.exists():
                if not part.is_dir():
                    raise ConfigError(f"data.data_dir {root}: {part} is a file, not a folder; set data.data_dir")
                break
        if self.download and self.name != "digits":
            root.mkdir(parents=True, exist_ok=True)

    def setup(self, stage: str) -> None:
        self.prepare()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        self.prepare()
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        self.prepare()
        assert self.raw is not None
        return self.raw.num_classes

    def summary(self) -> dict[str, Any]:
        self.prepare()
        assert self.raw is not None
        return {
            "name": self.name,
            "source": self.raw.source,
            "train": len(self.y_train),
            "val": len(self.y_val),
            "test": len(self.y_test),
            "input_shape": list(self.input_shape),  # what the model sees (after data.pad)
            **({"pad": self.pad} if self.pad else {}),
            "num_classes": self.num_classes,
            **({"classes": self.classes} if self.classes is not None else {}),
            **({"train_per_class": self.train_per_class} if self.train_per_class else {}),
            "bootstrap_seed": self.bootstrap_seed,
        }

    # -- loaders ---------------------------------------------------------------------------------------------
    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool) -> InMemoryLoader:
        rank, world = self._rank_and_world()
        return InMemoryLoader(x, y, batch_size, shuffle=shuffle, seed=self.shuffle_seed, rank=rank, world_size=world)

    def train_dataloader(self) -> InMemoryLoader:
        return self._loader(self.x_train, self.y_train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> InMemoryLoader | list:
        return self._loader(self.x_val, self.y_val, self.eval_batch_size, shuffle=False) if len(self.y_val) else []

    def test_dataloader(self) -> InMemoryLoader:
        return self._loader(self.x_test, self.y_test, self.eval_batch_size, shuffle=False)


def select_classes(raw: RawDataset, classes: list[int]) -> RawDataset:
    """Only the images of ``classes`` (train and test), relabelled 0..k-1 in the order given."""
    bad = [c for c in classes if not 0 <= c < raw.num_classes]
    if bad:
        raise ConfigError(f"data.classes {bad} are not classes of {raw.name} (0..{raw.num_classes - 1})")
    lookup = torch.full((raw.num_classes,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    parts = []
    for x, y in ((raw.x_train, raw.y_train), (raw.x_test, raw.y_test)):
        keep = lookup[y] >= 0
        parts += [x[keep], lookup[y[keep]]]
    return dataclasses.replace(
        raw, x_train=parts[0], y_train=parts[1], x_test=parts[2], y_test=parts[3], num_classes=len(classes)
    )


def pad_images(raw: RawDataset, pad: int) -> RawDataset:
    """Every image (train, and so validation, and test) with ``pad`` rows/columns of zeros on each side, as Graham
    (2014) pads 28x28 MNIST digits to 36x36. Done once in memory, before the normalization statistics are taken, so
    the model, the statistics and ``input_shape`` all see the padded size."""

    def padded(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return torch.nn.functional.pad(x, (pad, pad, pad, pad))
        return x.padded(pad)  # images decoded lazily (data=imagefolder, streamed) pad as they are decoded

    return dataclasses.replace(raw, x_train=padded(raw.x_train), x_test=padded(raw.x_test))


def per_class_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``per_class`` seeded random samples of every class in ``labels``."""
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        if len(idx) < per_class:
            raise ConfigError(
                f"data.train_per_class={per_class} but class {c} has {len(idx)} training images; lower it"
            )
        picked.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.cat(picked).sort().values


def bootstrap_resample(indices: torch.Tensor, seed: int) -> torch.Tensor:
    """Bagging (Breiman 1996): as many draws as there are ``indices``, uniformly with replacement, seeded.

    About 63% of the samples appear (some several times); validation and test are never resampled.
    """
    gen = torch.Generator().manual_seed(seed)
    return indices[torch.randint(len(indices), (len(indices),), generator=gen)]
