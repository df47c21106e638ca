"""What every DataModule shares: splits checked on disk up front, the tokenizer handed over by run.py, each
split tokenized once on setup, loaders whose one collate pads per batch."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.buckets import LengthBuckets
from text.files import EmptySplitError, MissingSplitError, candidates, find_file
from text.info import DataInfo
from text.padding import IGNORE_INDEX, pad_batch, padded_length

SPLITS_OF_STAGE = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ()}
# predict: nothing up front; `loader(split)` tokenizes the split asked for (run.py predicts valid and test)
PAIR_ENCODINGS = ("separate", "joint")


class SplitFilesDataModule(L.LightningDataModule):
    """The base of every `data=` choice. A subclass reads a split (`read_split`), turns it once into a Dataset
    (`tokenize_split`) and says how a batch of its items splits into token rows and per-example fields
    (`rows`); `collate` pads the rows, every field with its fill value of `fill`.

    What a subclass may add for its task and for `predict=true`:
        kinds: what the data gives a task (pairs, joint_pairs, classification, spans, choices, corpus,
            dialogues), matched with a task's `DATA_KINDS` before anything is built; `kinds_for(node)` when
            they depend on the config.
        info: the facts a task is shaped by (text/info.py), e.g. DataInfo(name, num_labels=15, ...).
        test_labelled: False when the test file has no labels (CLUE's submission sets): run.py then skips
            trainer.test and only predicts it.
        write_predictions(split, predictions, folder): turn the task's predict_step outputs (one dict per
            example, with the example's position in the split as "index") into prediction files.

    Args (keyword-only; each is the `data.<key>` of the config):
        name: the dataset's name, used in messages and results.
        paths: split name -> its file, or its list of files (C3 reads two); `.xz`/`.gz` versions are found too.
        source: where the official files are published, quoted when a split is missing.
        max_length: tokens per sequence, special tokens included.
        batch_size: examples per training batch; eval_batch_size: per evaluation batch (None: batch_size).
        train_limit: keep only the first N training examples (file order); eval_limit: the first N of every
            other split, predictions included (quick runs; the metrics are then not the official ones).
        num_workers: DataLoader worker processes.
        cache_dir: where token ids are kept between runs (None: tokenize every time).
        pad_to_multiple_of: pad each batch up to a multiple of N tokens (capped at max_length), so that batch
            shapes recur and a captured step is replayed (`speed.pad_to_multiple_of`); None: to the longest row.
        bucket_by_length: training batches of examples of one padded length (datamodules/buckets.py), each
            epoch in random order (`speed.bucket_by_length`); False: uniformly shuffled batches.
    """

    kinds: ClassVar[tuple[str, ...]] = ()
    test_labelled = True
    prediction_splits = ("valid", "test")

    def __init__(self, *, name: str, paths: dict[str, Path | list[Path]], source: str, max_length: int,
                 batch_size: int = 32, eval_batch_size: int | None = None, train_limit: int | None = None,
                 eval_limit: int | None = None, num_workers: int = 0, cache_dir: str | None = None,
                 pad_to_multiple_of: int | None = None, bucket_by_length: bool = False):
        super().__init__()
        self.name, self.source, self.max_length = name, source, max_length
        self.paths = {split: [Path(p)] if isinstance(p, (str, Path)) else [Path(f) for f in p]
                      for split, p in paths.items()}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.train_limit, self.eval_limit = train_limit, eval_limit
        self.num_workers, self.cache_dir = num_workers, cache_dir
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"speed.pad_to_multiple_of must be ≥ 1 or null, got {pad_to_multiple_of}")
        self.pad_to_multiple_of, self.bucket_by_length = pad_to_multiple_of, bucket_by_length
        self.tokenizer, self.text_prefix, self.pair_encoding = None, "", "separate"
        self.datasets: dict[str, Dataset] = {}

    @classmethod
    def kinds_for(cls, node) -> tuple[str, ...]:
        """The kinds of the data choice whose config is `node` (read before anything is built): `kinds`."""
        return cls.kinds

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.name)

    def write_predictions(self, split: str, predictions: list[dict], folder: Path) -> list[Path]:
        """Write the predictions of `split` under `folder`; returns the files written."""
        raise NotImplementedError(f"data={self.name} does not write prediction files")

    @property
    def writes_predictions(self) -> bool:
        return type(self).write_predictions is not SplitFilesDataModule.write_predictions

    # --- files ----------------------------------------------------------------------------------------------

    def require(self, splits) -> None:
        """Fail now, naming the files looked for, if any of `splits` is not on disk."""
        for split in splits:
            if split not in self.paths:
                raise MissingSplitError(f"data={self.name} has no {split} split (configured: {sorted(self.paths)})")
            missing = [path for path in self.paths[split] if find_file(path) is None]
            if missing:
                looked = ", ".join(str(p) for path in missing for p in candidates(path))
                raise MissingSplitError(
                    f"data={self.name}: the {split} split is not on disk. Looked for: {looked}. "
                    f"Official data: {self.source}. Point paths.data_dir (or HUB_DATA_DIR) at the folder that holds it.")

    def has_split(self, split: str) -> bool:
        return split in self.paths and all(find_file(path) is not None for path in self.paths[split])

    def files_of(self, split: str) -> list[Path]:
        """The files a split is read from, as found on disk."""
        self.require([split])
        return [find_file(path) for path in self.paths[split]]

    def file_of(self, split: str) -> Path:
        return self.files_of(split)[0]

    def labelled(self, split: str) -> bool:
        return split in ("train", "valid") or (split == "test" and self.test_labelled)

    def limit_of(self, split: str) -> int | None:
        return self.train_limit if split == "train" else self.eval_limit

    def limit(self, split: str, examples):
        """The first `limit_of(split)` examples (all when it is None)."""
        n = self.limit_of(split)
        return examples[:n] if n else examples

    # --- tokens -----------------------------------------------------------------------------------------------

    def set_tokenizer(self, tokenizer, text_prefix: str = "", pair_encoding: str = "separate") -> None:
        """`text_prefix` goes before every text (E5 wants "query: "). `pair_encoding`, the task's: how pair
        data encodes a pair, "separate" (each sentence alone, bi-encoders) or "joint" ([CLS] a [SEP] b [SEP],
        cross-encoders); data without pairs ignores it."""
        if pair_encoding not in PAIR_ENCODINGS:
            raise ValueError(f"pair_encoding must be one of {PAIR_ENCODINGS}, got {pair_encoding!r}")
        self.tokenizer, self.text_prefix, self.pair_encoding = tokenizer, text_prefix, pair_encoding
        self.fill = {"input_ids": tokenizer.pad_token_id, "token_type_ids": tokenizer.pad_token_type_id,
                     "labels": IGNORE_INDEX, "offsets": -1, "span_mask": False}
        self.datasets.clear()

    def setup(self, stage: str) -> None:
        if self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__}.set_tokenizer(...) must be called before setup")
        for split in SPLITS_OF_STAGE[stage]:
            self.dataset(split)

    def dataset(self, split: str) -> Dataset:
        """The tokenized split, built on first use. An empty one fails here, on setup, before any training
        step: an empty train split would fail deep in torch, an empty valid split would train without
        ever picking a checkpoint."""
        if split not in self.datasets:
            dataset = self.tokenize_split(split)
            if len(dataset) == 0:
                raise self.empty_split(split)
            self.datasets[split] = dataset
        return self.datasets[split]

    def empty_split(self, split: str) -> EmptySplitError:
        files = ", ".join(str(p) for p in self.files_of(split))
        return EmptySplitError(f"{files}: the {split} split of data={self.name} holds no examples")

    def read_split(self, split: str):
        raise NotImplementedError

    def tokenize_split(self, split: str) -> Dataset:
        raise NotImplementedError

    # --- batches ----------------------------------------------------------------------------------------------

    def rows(self, items: list) -> tuple[list[dict], dict]:
        """The token rows of a batch (lists of one length per row: input_ids, labels, offsets, …) and its
        per-example fields (tensors, or lists the task reads); by default every item is one row."""
        return items, {}

    def padded_length(self, longest: int) -> int:
        """The length a batch whose longest row has `longest` tokens is padded to (`pad_to_multiple_of`)."""
        return padded_length(longest, self.pad_to_multiple_of, self.max_length)

    def collate(self, items: list) -> dict:
        """The rows padded to `padded_length` of the longest (`pad_batch`, fill values of `fill`), with the fields."""
        rows, fields = self.rows(items)
        length = self.padded_length(max(len(row["input_ids"]) for row in rows))
        return pad_batch(rows, self.fill, length) | fields

    def buckets(self, split: str, width: int = 16) -> list[int]:
        """The bucket of each example of `split` under bucket_by_length: its length rounded up to a multiple of
        pad_to_multiple_of (`width` when that is None)."""
        dataset = self.datasets[split]
        return [padded_length(max(len(row["input_ids"]) for row in self.rows([dataset[i]])[0]),
                              self.pad_to_multiple_of or width, self.max_length) for i in range(len(dataset))]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        common = {"collate_fn": self.collate, "num_workers": self.num_workers,
                  "pin_memory": torch.cuda.is_available(), "persistent_workers": self.num_workers > 0}
        if shuffle and self.bucket_by_length:
            if self.trainer is not None and self.trainer.world_size > 1:
                raise ValueError("speed.bucket_by_length=true draws batches for one process; under DDP use "
                                 "speed.bucket_by_length=false")
            sampler = LengthBuckets(self.buckets(split), self.batch_size, seed=torch.initial_seed())
            return DataLoader(self.datasets[split], batch_sampler=sampler, **common)
        return DataLoader(self.datasets[split], batch_size=self.batch_size if shuffle else self.eval_batch_size,
                          shuffle=shuffle, **common)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("valid", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def predict_dataloader(self):
        return self.loader("test")

    def loader(self, split: str) -> DataLoader:
        """An evaluation loader (file order, no shuffling) of any split, e.g. for predictions on valid."""
        self.dataset(split)
        return self._loader(split, shuffle=False)
