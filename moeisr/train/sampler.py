"""The training data order: a pure function of (seed, step), the same for any world size or resume point.

Global step k reads epoch e = k // steps_per_epoch, batch b = k % steps_per_epoch, where
steps_per_epoch = len(dataset) // global_batch (the remainder of each epoch is dropped). The global batch
is the slice [b·G, (b+1)·G) of the epoch's permutation, a `torch.randperm` seeded with
`derived_seed("order", seed, e)`; rank r of W takes the r-th of W equal parts of it. The samples
themselves depend only on (seed, epoch, index) (`moeisr.data.train`), so resuming at step k rebuilds
batch k exactly, whichever worker decodes it. `data.batch_size` is the global batch: W ranks each
load batch_size / W samples, and DDP's gradient average equals the single-process batch gradient.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from moeisr.errors import UserError


def derived_seed(purpose: str, *parts: int) -> int:
    """A 63-bit seed from SHA-256 of `purpose` and the integer `parts` (independent of PYTHONHASHSEED)."""
    text = ":".join(["moeisr-train", purpose, *(str(int(p)) for p in parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the n samples in `epoch`: an int64 permutation of 0..n-1."""
    generator = torch.Generator().manual_seed(derived_seed("order", seed, epoch))
    return torch.randperm(n, generator=generator)


class StepBatchSampler:
    """Yields, for steps start_step..max_steps-1, this rank's batch as a list of (epoch, index) keys.

    n: dataset size; global_batch: samples per step over all ranks (divisible by world_size).
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        seed: int,
        start_step: int,
        max_steps: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if global_batch % world_size:
            raise UserError(
                f"data.batch_size={global_batch} is the global batch and must be divisible by the {world_size} "
                "processes; change data.batch_size or --nproc_per_node"
            )
        if n < global_batch:
            raise UserError(
                f"the training set has {n} usable images, fewer than data.batch_size={global_batch}; "
                "add training sets or lower data.batch_size"
            )
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.start_step, self.max_steps = start_step, max_steps
        self.rank, self.world_size = rank, world_size
        self.local_batch = global_batch // world_size
        self.steps_per_epoch = n // global_batch

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of global step `step`."""
        return divmod(int(step), self.steps_per_epoch)

    def batch_keys(self, step: int, permutation: torch.Tensor | None = None) -> list[tuple[int, int]]:
        """This rank's (epoch, index) keys of global step `step`."""
        epoch, b = self.position(step)
        if permutation is None:
            permutation = epoch_permutation(self.n, self.seed, epoch)
        start = b * self.global_batch + self.rank * self.local_batch
        return [(epoch, int(i)) for i in permutation[start : start + self.local_batch]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        cached_epoch, permutation = None, None
        for step in range(self.start_step, self.max_steps):
            epoch, _ = self.position(step)
            if epoch != cached_epoch:
                cached_epoch, permutation = epoch, epoch_permutation(self.n, self.seed, epoch)
            yield self.batch_keys(step, permutation)

    def __len__(self) -> int:
        return max(self.max_steps - self.start_step, 0)

    def state(self, step: int) -> dict:
        """The data-order state after `step` completed steps (plain types, for checkpoints)."""
        epoch, b = self.position(step)
        return {
            "seed": self.seed,
            "epoch": epoch,
            "batch_in_epoch": b,
            "steps_per_epoch": self.steps_per_epoch,
            "global_batch": self.global_batch,
            "dataset_size": self.n,
        }


class EpochIndexed(torch.utils.data.Dataset):
    """Reads a dataset with `set_epoch(e)` at (epoch, index) keys, so the key alone fixes the sample."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


def seed_worker(worker_id: int, seed: int = 0) -> None:
    """DataLoader worker_init_fn: seed torch, random and numpy from (seed, worker_id), deterministically.

    The samples do not use these generators (they carry their own), this only keeps any other library
    call in a worker reproducible.
    """
    worker_seed = derived_seed("worker", seed, worker_id)
    torch.manual_seed(worker_seed)
    random.seed(worker_seed)
    np.random.seed(worker_seed % 2**32)
