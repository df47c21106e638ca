"""What every file-backed DataModule shares: splits checked on disk up front, the tokenizer handed over by
run.py, each split tokenized once on setup, loaders that pad per batch."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from text.files import EmptySplitError, MissingSplitError, candidates, find_file

SPLITS_OF_STAGE = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ()}
# predict: nothing up front; `loader(split)` tokenizes the split asked for (run.py predicts valid and test)


class SplitFilesDataModule(L.LightningDataModule):
    """One file per split (train/valid/test). Subclasses read a split (`read_split`), turn it into a
    Dataset of token ids (`tokenize_split`) and pad a batch (`collate`).

    What a subclass may add for its task and for `predict=true`:
        test_labelled: False when the test file has no labels (CLUE's submission sets): run.py then skips
            trainer.test and only predicts it.
        task_inputs(): what the task needs to know of the data (e.g. {"num_labels": 15}); run.py passes
            the keys the task's constructor names.
        write_predictions(split, predictions, folder): turn the task's predict_step outputs (one dict per
            example, with the example's position in the split as "index") into prediction files.

    Args:
        name: the dataset's name, used in messages and results.
        paths: split name -> file path; `.xz`/`.gz` versions are found too.
        source: where the official files are published, quoted when a split is missing.
        train_limit: keep only the first N training examples (file order).
        cache_dir: where token ids are kept between runs (None: tokenize every time).
    """

    def __init__(self, name: str, paths: dict[str, Path], source: str, max_length: int, batch_size: int,
                 eval_batch_size: int | None, train_limit: int | None, num_workers: int, cache_dir: str | None):
        super().__init__()
        self.name, self.paths, self.source = name, paths, source
        self.max_length, self.batch_size = max_length, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.train_limit, self.num_workers, self.cache_dir = train_limit, num_workers, cache_dir
        self.tokenizer, self.text_prefix = None, ""
        self.datasets: dict[str, Dataset] = {}

    test_labelled = True
    prediction_splits = ("valid", "test")

    def task_inputs(self) -> dict:
        return {}

    def write_predictions(self, split: str, predictions: list[dict], folder: Path) -> list[Path]:
        """Write the predictions of `split` under `folder`; returns the files written."""
        raise NotImplementedError(f"data={self.name} does not write prediction files")

    @property
    def writes_predictions(self) -> bool:
        return type(self).write_predictions is not SplitFilesDataModule.write_predictions

    def require(self, splits) -> None:
        """Fail now, naming the files looked for, if any of `splits` is not on disk."""
        for split in splits:
            if split not in self.paths:
                raise MissingSplitError(f"data={self.name} has no {split} split (configured: {sorted(self.paths)})")
            if find_file(self.paths[split]) is None:
                looked = ", ".join(str(p) for p in candidates(self.paths[split]))
                raise MissingSplitError(
                    f"data={self.name}: the {split} split is not on disk. Looked for: {looked}. "
                    f"Official data: {self.source}. Point paths.data_dir (or HUB_DATA_DIR) at the folder that holds it.")

    def file_of(self, split: str) -> Path:
        self.require([split])
        return find_file(self.paths[split])

    def files_of(self, split: str) -> list[Path]:
        """The files a split is read from (one here; C3 and CHID read several)."""
        return [self.file_of(split)]

    def limit(self, split: str, examples):
        return examples[:self.train_limit] if split == "train" and self.train_limit else examples

    def set_tokenizer(self, tokenizer, text_prefix: str = "") -> None:
        """`text_prefix` goes before every text (E5 wants "query: ")."""
        self.tokenizer, self.text_prefix = tokenizer, text_prefix
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
                files = ", ".join(str(p) for p in self.files_of(split))
                raise EmptySplitError(f"{files}: the {split} split of data={self.name} holds no examples")
            self.datasets[split] = dataset
        return self.datasets[split]

    def has_split(self, split: str) -> bool:
        return split in self.paths and find_file(self.paths[split]) is not None

    def read_split(self, split: str):
        raise NotImplementedError

    def tokenize_split(self, split: str) -> Dataset:
        raise NotImplementedError

    def collate(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size if shuffle else self.eval_batch_size,
                          shuffle=shuffle, collate_fn=self.collate, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=self.num_workers > 0)

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
