"""An endless, seeded stream of batches that an interrupted run resumes exactly.

Nothing draws from a global RNG: the data order comes from accelerate's seedable sampler (seed + epoch), and
each item from torch's RNG seeded by (seed, epoch, index) (`EpochSeededDataset`). A resumed run skips the
batches it had consumed in the current epoch, so it sees exactly the batches of an uninterrupted run.
"""

from __future__ import annotations

from typing import Iterator

from accelerate import Accelerator
from torch.utils.data import Dataset, IterableDataset

from ..common.errors import DataError
from ..common.seeding import keyed_cpu_rng


class EpochSeededDataset(Dataset):
    """Wraps a data set so that item i of epoch e draws from torch's RNG seeded by (seed, e, i).

    Random crops and flips of the wrapped data set then depend neither on the worker that loads the item
    nor on what was loaded before: an item is the same in an interrupted and an uninterrupted run.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with keyed_cpu_rng(self.seed, self.epoch, index):
            return self.dataset[index]


def endless_batches(accelerator: Accelerator, loader, start_micro_step: int) -> Iterator:
    """Batches forever, epoch after epoch, starting at micro-step `start_micro_step` of that stream."""
    if isinstance(loader.dataset, IterableDataset):  # an endless stream (data.streaming) fast-forwards itself
        loader.dataset.resume(start_micro_step, loader.batch_size)
        yield from loader
        return
    per_epoch = len(loader)
    if per_epoch == 0:
        raise DataError("the data set has fewer clips than one batch per process "
                        f"({len(loader.dataset)} clips): lower batch_size or add data")
    epoch, skip = divmod(start_micro_step, per_epoch)
    while True:
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)  # before the iterator starts: workers get a copy with this epoch
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        batches.set_epoch(epoch)
        yield from batches
        epoch, skip = epoch + 1, 0
