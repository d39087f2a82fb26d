"""data=imagefolder: the user's own images in torchvision's ImageFolder layout (one folder per class).

- Layout: ``root/<class>/<image>``, with a stratified held-out test split (``test_size``, fixed seed 0, so it never
  changes between runs); or ``root/train/<class>/...`` and ``root/test/<class>/...``, whose test folder is the test
  split. Classes are the sorted folder names (torchvision's ``find_classes``); ``data.classes`` indexes that order.
- Images are decoded with PIL, converted to ``channels`` (1: greyscale, 3: RGB) and resized to ``image_size``
  (bilinear; null keeps the size, which must then be the same for every image).
- Storage: when all splits fit in ``memory_budget_mb`` as uint8, they are decoded once (by ``num_workers`` processes)
  into the in-memory tensors every other data set uses. Otherwise a torch DataLoader with ``num_workers`` worker
  processes decodes each batch, in the same seeded order per epoch; batches are the same uint8 (B, C, H, W), so the
  module's per-batch augmentation and normalization are unchanged. Normalization statistics then come from a seeded
  sample of up to ``STATS_SAMPLES`` training images.
- Validation is the same stratified, seeded split of the training images as for every data set.
Bad folders are one-line errors naming the folder or file (no class folders, an empty class, an unreadable image,
mixed sizes without ``image_size``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ablate.data.datamodule import DataModule
from ablate.data.loader import EpochSampler
from ablate.data.sources import RawDataset
from ablate.data.splits import stratified_split
from ablate.errors import ConfigError

STATS_SAMPLES = 1024


def _pil():
    from PIL import Image

    return Image


def decode(path: str, size: tuple[int, int] | None, channels: int) -> torch.Tensor:
    """One image file as uint8 (C, H, W), converted to ``channels`` and resized to ``size`` (H, W)."""
    Image = _pil()
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except Exception as err:  # PIL raises many kinds (UnidentifiedImageError, OSError, ValueError, ...)
        raise ConfigError(f"cannot read image {path} ({type(err).__name__}: {err}); fix or remove the file") from None
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


class ImageFiles(Dataset):
    """Image files that index like a uint8 (N, C, H, W) tensor: an index tensor or mask gives a subset, an int
    gives one decoded (C, H, W) image. This lets the data module split and subset them like in-memory images."""

    dtype = torch.uint8
    ndim = 4

    def __init__(self, paths: Sequence[str], size: tuple[int, int], channels: int, pad: int = 0) -> None:
        self.paths, self.size, self.channels, self.pad = list(paths), size, channels, pad

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.channels, *(side + 2 * self.pad for side in self.size))

    def padded(self, pad: int) -> ImageFiles:
        """The same files, each decoded with ``pad`` more pixels of zeros on every side (data.pad)."""
        return ImageFiles(self.paths, self.size, self.channels, self.pad + pad)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int | np.integer):
            image = decode(self.paths[int(index)], self.size, self.channels)
            return torch.nn.functional.pad(image, (self.pad,) * 4) if self.pad else image
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        return ImageFiles([self.paths[i] for i in index.tolist()], self.size, self.channels, self.pad)


class _Pairs(Dataset):
    def __init__(self, files: ImageFiles, labels: torch.Tensor) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.files[i], self.labels[i]


class _EpochBatches:
    """Index batches of one rank's shard, reshuffled per epoch exactly like InMemoryLoader's."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, rank: int, world_size: int) -> None:
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        self.rank, self.world_size = rank, world_size
        self.sampler = EpochSampler(seed)  # Lightning calls batch_sampler.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.sampler.permutation(self.n) if self.shuffle else torch.arange(self.n)
        idx = order[self.rank :: self.world_size].tolist()
        for start in range(0, len(idx), self.batch_size):
            yield idx[start : start + self.batch_size]

    def __len__(self) -> int:
        return -(-len(range(self.rank, self.n, self.world_size)) // self.batch_size)


class StreamingLoader(DataLoader):
    """A DataLoader whose workers decode the batch's files; a worker's ConfigError comes back as one line.

    It has its own generator: torch's loaders otherwise draw their workers' base seed from the global RNG, which would
    make the run's later random draws (weight init, dropout) depend on whether the data were streamed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, generator=torch.Generator().manual_seed(0), **kwargs)

    def __iter__(self) -> Iterator[Any]:
        iterator = super().__iter__()
        try:
            yield from iterator
        except ConfigError as err:
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:  # now, rather than when the garbage collector finds the loader (5 s join)
                shutdown()
            # A worker's error arrives as its whole traceback; keep the message line.
            lines = [line.split("ConfigError: ", 1)[1] for line in str(err).splitlines() if "ConfigError: " in line]
            raise ConfigError(lines[-1] if lines else str(err)) from None


def scan(folder: Path) -> tuple[list[str], list[str], list[int]]:
    """Class names (sorted folder names), image paths and labels; errors name the folder that is wrong."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(str(folder))
    except FileNotFoundError:
        raise ConfigError(
            f"{folder} has no class folders; expected {folder}/<class>/<image> (or train/ and test/ subfolders)"
        ) from None
    samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    counts = np.bincount([label for _, label in samples], minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise ConfigError(
            f"class folder {folder / empty[0]} holds no images ({len(empty)} empty in all; extensions: "
            f"{', '.join(IMG_EXTENSIONS)}); add images or remove the folder"
        )
    return classes, [path for path, _ in samples], [label for _, label in samples]


def common_size(paths: Sequence[str]) -> tuple[int, int]:
    """The (H, W) every image has (read from the headers only); mixed sizes are an error naming two files."""
    Image = _pil()
    first: tuple[int, int] | None = None
    for path in paths:
        try:
            with Image.open(path) as img:
                size = (img.height, img.width)
        except Exception as err:
            raise ConfigError(
                f"cannot read image {path} ({type(err).__name__}: {err}); fix or remove the file"
            ) from None
        if first is None:
            first = size
        elif size != first:
            raise ConfigError(
                f"images differ in size: {paths[0]} is {first[1]}x{first[0]}, {path} is {size[1]}x{size[0]}; "
                "set data.image_size to resize them all"
            )
    assert first is not None
    return first


class ImageFolderDataModule(DataModule):
    """The DataModule on an ImageFolder tree: in memory when it fits ``memory_budget_mb``, else streamed."""

    KNOWN_NAMES = ("imagefolder",)

    def __init__(
        self,
        root: str,
        image_size: int | Sequence[int] | None = None,
        channels: int = 3,
        memory_budget_mb: float = 2048,
        num_workers: int = 2,
        test_size: float = 0.2,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", "imagefolder")
        self.root = Path(str(root)).expanduser()
        if image_size is not None:
            image_size = (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(image_size)
            if len(image_size) != 2 or min(image_size) < 1:
                raise ConfigError(f"data.image_size must be a size or [height, width], got {image_size}")
        self.image_size: tuple[int, int] | None = image_size  # type: ignore[assignment]
        if channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 (greyscale) or 3 (RGB), got {channels}")
        if not 0.0 < test_size < 1.0:
            raise ConfigError(f"data.test_size must be a fraction in (0, 1), got {test_size}")
        if num_workers < 0 or not memory_budget_mb >= 0:
            raise ConfigError("data.num_workers and data.memory_budget_mb must be >= 0")
        self.channels, self.memory_budget_mb = channels, memory_budget_mb
        self.num_workers, self.test_size = num_workers, test_size
        self.class_names: list[str] = []
        self.streaming = False
        super().__init__(**kwargs)

    def _load_raw(self) -> RawDataset:
        root = self.root
        if not root.is_dir():
            raise ConfigError(f"data.root={root} is not a folder; point it at <root>/<class>/<image> files")
        if (root / "train").is_dir() and (root / "test").is_dir():
            classes, train_paths, train_labels = scan(root / "train")
            test_classes, test_paths, test_labels = scan(root / "test")
            unknown = sorted(set(test_classes) - set(classes))
            if unknown:
                raise ConfigError(f"{root / 'test' / unknown[0]} is a test class with no training folder")
            test_labels = [classes.index(test_classes[label]) for label in test_labels]
        else:
            classes, paths, labels = scan(root)
            try:
                rest, held_out = stratified_split(torch.tensor(labels), self.test_size, seed=0)
            except ValueError as err:
                raise ConfigError(f"data.root={root}: cannot hold out a stratified test split ({err})") from None
            train_paths, train_labels = [paths[i] for i in rest], [labels[i] for i in rest]
            test_paths, test_labels = [paths[i] for i in held_out], [labels[i] for i in held_out]
        self.class_names = classes
        size = self.image_size or common_size(train_paths + test_paths)
        train = ImageFiles(train_paths, size, self.channels)
        test = ImageFiles(test_paths, size, self.channels)
        y_train, y_test = torch.tensor(train_labels), torch.tensor(test_labels)
        needed_mb = (len(train) + len(test)) * self.channels * size[0] * size[1] / 2**20
        self.streaming = needed_mb > self.memory_budget_mb
        x_train, x_test = (train, test) if self.streaming else (self._decode_all(train), self._decode_all(test))
        return RawDataset("imagefolder", x_train, y_train, x_test, y_test, len(classes), str(root))  # type: ignore[arg-type]

    def _decode_all(self, files: ImageFiles) -> torch.Tensor:
        out = torch.empty(files.shape, dtype=torch.uint8)
        start = 0
        workers = self.num_workers if len(files) >= 1024 else 0  # starting workers costs more than a few images
        for batch in StreamingLoader(files, batch_size=256, num_workers=workers):
            out[start : start + len(batch)] = batch
            start += len(batch)
        return out

    def _channel_stats(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(x, ImageFiles):
            gen = torch.Generator().manual_seed(self.split_seed)
            sample = torch.randperm(len(x), generator=gen)[:STATS_SAMPLES]
            x = self._decode_all(x[sample])
        return super()._channel_stats(x)

    def _loader(self, x: Any, y: torch.Tensor, batch_size: int, shuffle: bool) -> Any:
        if not isinstance(x, ImageFiles):
            return super()._loader(x, y, batch_size, shuffle)
        rank, world = self._rank_and_world()
        batches = _EpochBatches(len(y), batch_size, shuffle, self.shuffle_seed, rank, world)
        workers = self.num_workers
        return StreamingLoader(_Pairs(x, y), batch_sampler=batches, num_workers=workers, persistent_workers=workers > 0)

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "class_names": self.class_names,
            "storage": "streaming" if self.streaming else "memory",
        }
