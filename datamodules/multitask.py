"""data=multitask: several data choices side by side, for task=multitask (kexue.fm/archives/8870).

Each sub-task's data is an existing DataModule (`data.tasks.<name>`, composed from conf/data/<choice>.yaml), with
its own files, limits, tokenization and collate. A batch is always one task's, collated by that task's
DataModule and tagged `batch["task"] = name`, so CoSENT ranks the pairs of one data set and every batch has
the fields of its kind (pair batches [2B, L] + float labels, classification batches [B, L] + class ids).

Training batches interleave the tasks (`interleave`):
    proportional  one epoch is every batch of every task's loader, each exactly once, in an order drawn anew
                  each epoch (seed + epoch): a uniformly random interleaving, so at any point of the epoch the tasks
                  appear in proportion to their numbers of batches (≈ their train set sizes).
    round_robin   the tasks take turns, one batch each; a task whose loader runs out starts it again (reshuffled),
                  and the epoch ends when the largest task has been through once (K × its batches): small sets
                  are repeated, every task gets the same number of steps.
Validation and test run the tasks one after another. A task whose test split has no labels (the CLUE sets)
is tested on its valid split (the number the CLUE baselines report); `test_splits` says which.
"""
from __future__ import annotations

import logging
from itertools import islice
from typing import Iterable, Mapping

import lightning as L
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, DistributedSampler

from datamodules.base import SPLITS_OF_STAGE
from text.info import DataInfo

log = logging.getLogger(__name__)
INTERLEAVINGS = ("proportional", "round_robin")


class Interleaved:
    """The training batches of several loaders, one loader's batch at a time, tagged with its task (module
    docstring); its k-th pass is epoch `epoch + k`."""

    def __init__(self, loaders: Mapping[str, Iterable], mode: str = "proportional", seed: int = 0, epoch: int = 0):
        if mode not in INTERLEAVINGS:
            raise ValueError(f"data.interleave must be one of {'|'.join(INTERLEAVINGS)}, got {mode!r}")
        self.loaders, self.mode, self.seed, self.epoch = dict(loaders), mode, seed, epoch

    def __len__(self) -> int:
        sizes = [len(loader) for loader in self.loaders.values()]
        return sum(sizes) if self.mode == "proportional" else len(sizes) * max(sizes)

    def schedule(self, epoch: int) -> list[str]:
        """The task of each batch of `epoch`, in order."""
        names = list(self.loaders)
        if self.mode == "round_robin":
            return names * max(len(loader) for loader in self.loaders.values())
        slots = [name for name in names for _ in range(len(self.loaders[name]))]
        order = torch.randperm(len(slots), generator=torch.Generator().manual_seed(self.seed + epoch))
        return [slots[i] for i in order.tolist()]

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        for loader in self.loaders.values():
            if hasattr(getattr(loader, "sampler", None), "set_epoch"):   # DDP shards: a new shuffle per epoch
                loader.sampler.set_epoch(epoch)
        iterators = {}
        for name in self.schedule(epoch):
            try:
                batch = next(iterators[name]) if name in iterators else None
            except StopIteration:   # round_robin: a smaller set starts again
                batch = None
            if batch is None:
                iterators[name] = iter(self.loaders[name])
                batch = next(iterators[name])
            yield batch | {"task": name}


class Chained:
    """Evaluation batches: every batch of each task's loader, task after task, tagged with its task."""

    def __init__(self, loaders: Mapping[str, Iterable]):
        self.loaders = dict(loaders)

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders.values())

    def __iter__(self):
        for name, loader in self.loaders.items():
            for batch in loader:
                yield batch | {"task": name}


class MultitaskDataModule(L.LightningDataModule):
    """The DataModules of the sub-tasks (module docstring).

    Args:
        tasks: sub-task name -> the config node of its data choice (built here, with the speed settings).
        interleave: proportional | round_robin (module docstring).
        seed: of the interleaving order (the run's seed); each task's loader shuffles as it does alone.
        eval_only: sub-tasks that are validated and tested but not trained (no train split on disk).
        name: for messages and results.
        pad_to_multiple_of, bucket_by_length: handed to every sub-task's DataModule (`speed.`).
    """

    kinds = ("tasks",)
    test_labelled = True      # every task is scored: on test, or on valid where test has no labels
    prediction_splits = ()
    writes_predictions = False

    def __init__(self, *, tasks: Mapping, interleave: str = "proportional", seed: int = 0,
                 eval_only: Iterable[str] = (), name: str = "multitask", pad_to_multiple_of: int | None = None,
                 bucket_by_length: bool = False):
        super().__init__()
        if interleave not in INTERLEAVINGS:
            raise ValueError(f"data.interleave must be one of {'|'.join(INTERLEAVINGS)}, got {interleave!r}")
        if not tasks:
            raise ValueError("data=multitask has no tasks: add /data@data.tasks.<name>: <data choice> to the defaults")
        self.tasks = {task: instantiate(node, pad_to_multiple_of=pad_to_multiple_of, bucket_by_length=bucket_by_length)
                      for task, node in tasks.items()}
        unknown = set(eval_only) - set(self.tasks)
        if unknown:
            raise ValueError(f"data.eval_only names {sorted(unknown)}, which data.tasks does not have "
                             f"({sorted(self.tasks)})")
        self.name, self.interleave, self.seed = name, interleave, seed
        self.trained = [task for task in self.tasks if task not in set(eval_only)]
        if not self.trained:
            raise ValueError("data.eval_only holds every task: nothing to train")
        self.tokenizer = None

    @classmethod
    def kinds_for(cls, node) -> tuple[str, ...]:
        return cls.kinds

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.name, tasks={task: dm.info for task, dm in self.tasks.items()})

    @property
    def test_splits(self) -> dict[str, str]:
        """The split each task's test metrics come from: test, or valid where the test file has no labels."""
        return {task: "test" if dm.test_labelled else "valid" for task, dm in self.tasks.items()}

    def splits_of(self, task: str, splits: Iterable[str]) -> list[str]:
        """The files' splits behind the stage splits `splits` for `task` (no train for an eval-only task)."""
        return [self.test_splits[task] if split == "test" else split for split in splits
                if split != "train" or task in self.trained]

    def require(self, splits) -> None:
        for task, dm in self.tasks.items():
            dm.require(self.splits_of(task, splits))

    def has_split(self, split: str) -> bool:
        return all(dm.has_split(s) for task, dm in self.tasks.items() for s in self.splits_of(task, [split]))

    def set_tokenizer(self, tokenizer, text_prefix: str = "", pair_encoding: str = "separate") -> None:
        self.tokenizer = tokenizer
        for dm in self.tasks.values():
            dm.set_tokenizer(tokenizer, text_prefix, pair_encoding)

    def setup(self, stage: str) -> None:
        if self.tokenizer is None:
            raise RuntimeError("MultitaskDataModule.set_tokenizer(...) must be called before setup")
        for task, dm in self.tasks.items():
            for split in self.splits_of(task, SPLITS_OF_STAGE[stage]):
                dm.dataset(split)

    # --- loaders ------------------------------------------------------------------------------------------

    def sharded(self, loader: DataLoader, shuffle: bool) -> DataLoader:
        """Under DDP, `loader` with a DistributedSampler (each rank its shard, as many batches on every rank, so
        the ranks step through the same task together); as it is on one process. Lightning shards only the
        loaders it is handed, and these sit inside one iterable."""
        if self.trainer is None or self.trainer.world_size == 1:
            return loader
        sampler = DistributedSampler(loader.dataset, num_replicas=self.trainer.world_size,
                                     rank=self.trainer.global_rank, shuffle=shuffle, seed=self.seed)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, collate_fn=loader.collate_fn,
                          num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                          persistent_workers=loader.persistent_workers)

    def train_dataloader(self) -> Interleaved:
        for dm in self.tasks.values():
            dm.trainer = self.trainer   # bucket_by_length refuses DDP by the trainer's world size
        loaders = {task: self.sharded(self.tasks[task].train_dataloader(), shuffle=True) for task in self.trained}
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return Interleaved(loaders, self.interleave, self.seed, epoch)

    def val_dataloader(self) -> Chained:
        return Chained({task: self.sharded(dm.loader("valid"), shuffle=False) for task, dm in self.tasks.items()})

    def test_dataloader(self) -> Chained:
        for task, split in self.test_splits.items():
            if split != "test":
                log.info("data.tasks.%s: the test split has no labels; testing on valid", task)
        return Chained({task: self.sharded(dm.loader(self.test_splits[task]), shuffle=False)
                        for task, dm in self.tasks.items()})

    # --- what a weighting reads ---------------------------------------------------------------------------

    def first_batches(self, task: str, n: int) -> list[dict]:
        """`n` training batches of `task` (its batch size, its collate), drawn with a generator of their own
        (`seed`), so the training shuffle is the same whether or not a weighting measured them."""
        dm = self.tasks[task]
        loader = DataLoader(dm.dataset("train"), batch_size=dm.batch_size, shuffle=True, collate_fn=dm.collate,
                            generator=torch.Generator().manual_seed(self.seed))
        return [batch | {"task": task} for batch in islice(loader, n)]

    def train_labels(self, task: str) -> torch.Tensor:
        """The labels of `task`'s train split (class ids, or pair labels in [0, 1])."""
        return torch.as_tensor(self.tasks[task].dataset("train").labels)

    def write_predictions(self, split, predictions, folder):
        raise NotImplementedError("data=multitask does not write prediction files")
