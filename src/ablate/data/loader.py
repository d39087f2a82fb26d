"""An in-memory batch loader: index batches into uint8 tensors, no worker processes, no per-sample transforms.

Hand-written because torch's DataLoader pays per-sample Python costs (``__getitem__`` + collate) that dominate
small models; slicing a resident tensor by a permutation costs one gather per batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class EpochSampler:
    """Holds the epoch so Lightning's ``set_epoch`` call (made on ``loader.sampler``) reseeds the shuffle.

    The order is a pure function of (seed, epoch), so a run resumed from a checkpoint sees the same batches.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self, n: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(n, generator=gen)


class InMemoryLoader:
    """Iterates (images uint8 (B, C, H, W), labels int64 (B,)) over one rank's shard of a resident data set.

    Under DDP every rank shuffles with the same permutation and takes every ``world_size``-th index, so the shards
    are disjoint and together cover the data (the last few samples may differ by one per rank; nothing is padded
    or duplicated, so evaluation counts stay exact).

    Resumable mid-epoch: ``state_dict`` is (epoch, batches yielded so far), which Lightning stores with a checkpoint
    (the fit loop saves the state of any loader with ``state_dict``/``load_state_dict``) and hands back on a
    mid-epoch restart; the next iteration over that epoch then skips the batches already trained on.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self.sampler = EpochSampler(seed)
        self.batch_sampler = None  # Lightning inspects loaders as if they were DataLoaders
        self._yielded = 0  # batches of the current iteration handed out so far
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches to skip) from load_state_dict

    def indices(self) -> torch.Tensor:
        n = len(self.labels)
        order = self.sampler.permutation(n) if self.shuffle else torch.arange(n)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(range(self.rank, len(self.labels), self.world_size))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: the epoch (set_epoch) and the skip are read at the first batch, not when iter() is called.
        idx = self.indices()
        skip = 0
        if self._resume_at is not None:
            epoch, batches = self._resume_at
            skip = batches if epoch == self.sampler.epoch else 0
            self._resume_at = None
        self._yielded = skip
        for start in range(skip * self.batch_size, len(self) * self.batch_size, self.batch_size):
            batch = idx[start : start + self.batch_size]
            self._yielded += 1
            yield self.images[batch], self.labels[batch]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._yielded}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume_at = (int(state_dict["epoch"]), int(state_dict["batches"]))
