"""`speed.bucket_by_length`: training batches of examples of similar length, in random order."""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthBuckets(Sampler[list[int]]):
    """Batches whose examples share a bucket: the examples whose padded length (`bucket_of`) is the same.

    Each epoch shuffles every bucket, cuts it into batches of `batch_size` (the last batch of a bucket may be
    smaller) and shuffles the batches of all buckets together: every example comes once per epoch, a batch is
    padded to its bucket's length and no further, and the order of batches stays random. The permutations come
    from `seed` and the epoch (`set_epoch`, which Lightning calls), so a resumed run draws the same batches.

    What changes against uniform batches: the examples that share a batch. A batch-level loss (CoSENT,
    InfoNCE) then ranks or contrasts pairs of similar length only.
    """

    def __init__(self, buckets: Sequence[int], batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.buckets = torch.as_tensor(buckets)
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        batches = []
        for bucket in self.buckets.unique().tolist():
            members = (self.buckets == bucket).nonzero().flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            batches += [part.tolist() for part in members.split(self.batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        counts = self.buckets.unique(return_counts=True)[1]
        return int((-(-counts // self.batch_size)).sum())
