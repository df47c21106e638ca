"""The Chinese STS family: ATEC, BQ, LCQMC, PAWSX and STS-B as sentence pairs with a similarity label.

Files are the senteval_cn form used by the CoSENT experiments (kexue.fm/archives/8847, 8321):
one pair per line, `sentence1<TAB>sentence2<TAB>label`, the label 0/1 or an STS-B score 0-5.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from datamodules.base import SplitFilesDataModule
from datamodules.files import DataFormatError, file_digest, numbered_lines
from datamodules.tokenized import cached_token_ids


@dataclass
class Pairs:
    first: list[str]
    second: list[str]
    labels: list[float]

    def __len__(self):
        return len(self.labels)


def parse_label(text: str, label_max: float) -> float:
    """A label in [0, label_max]; with label_max = 1 the label must be exactly 0 or 1."""
    value = float(text)
    if label_max == 1 and text.strip() not in ("0", "1"):
        raise ValueError
    if not 0 <= value <= label_max:
        raise ValueError
    return value


def read_pairs(path: Path, label_max: float) -> Pairs:
    """Read a `sentence1<TAB>sentence2<TAB>label` file; a malformed line raises DataFormatError naming file:line."""
    pairs = Pairs([], [], [])
    for number, line in numbered_lines(path):
        fields = line.split("\t")
        try:
            if len(fields) != 3 or not fields[0].strip() or not fields[1].strip():
                raise ValueError
            label = parse_label(fields[2], label_max)
        except ValueError:
            raise DataFormatError(
                f"{path}:{number}: expected 'sentence1<TAB>sentence2<TAB>label' with a label in "
                f"{'{0, 1}' if label_max == 1 else f'[0, {label_max:g}]'}, got {line[:120]!r}") from None
        pairs.first.append(fields[0])
        pairs.second.append(fields[1])
        pairs.labels.append(label)
    return pairs


class TokenizedPairs(Dataset):
    def __init__(self, first: list[list[int]], second: list[list[int]], labels: list[float]):
        self.first, self.second, self.labels = first, second, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.first[i], self.second[i], self.labels[i]


def pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(map(len, sequences))
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq)
        mask[row, :len(seq)] = 1
    return ids, mask


class STSDataModule(SplitFilesDataModule):
    """Sentence pairs with a similarity label, each sentence tokenized on its own (for bi-encoders).

    A batch holds `input_ids`/`attention_mask` of shape [2B, L] (the B first sentences, then the B second
    ones), padded to the longest sentence of the batch, and `labels` [B] as floats.

    Args:
        name: the dataset's name, used in messages and results.
        root: the folder holding the files; `files` entries are relative to it (or absolute).
        files: split name (train/valid/test) -> file name; `.xz`/`.gz` versions are found too.
        label_max: 1 for binary labels, 5 for STS-B scores.
        source: where the official files are published, quoted when a split is missing.
        train_limit: keep only the first N training pairs (file order).
        cache_dir: where token ids are kept between runs (None: tokenize every time).
    """

    def __init__(self, name: str, root: str, files: dict[str, str], label_max: float, source: str,
                 max_length: int = 64, batch_size: int = 32, eval_batch_size: int | None = None,
                 train_limit: int | None = None, num_workers: int = 0, cache_dir: str | None = None):
        super().__init__(name, {split: Path(root) / file for split, file in files.items()}, source, max_length,
                         batch_size, eval_batch_size, train_limit, num_workers, cache_dir)
        self.label_max = label_max

    def read_split(self, split: str) -> Pairs:
        pairs = read_pairs(self.file_of(split), self.label_max)
        return Pairs(*(self.limit(split, column) for column in (pairs.first, pairs.second, pairs.labels)))

    def tokenize_split(self, split: str) -> TokenizedPairs:
        pairs = self.read_split(split)
        key = {"file": file_digest(self.file_of(split)), "train_limit": self.train_limit if split == "train" else None}
        ids = cached_token_ids(self.cache_dir, key, {"first": pairs.first, "second": pairs.second},
                               self.tokenizer, self.max_length, self.text_prefix)
        return TokenizedPairs(ids["first"], ids["second"], pairs.labels)

    def collate(self, batch) -> dict[str, torch.Tensor]:
        first, second, labels = zip(*batch)
        input_ids, attention_mask = pad(list(first) + list(second), self.tokenizer.pad_token_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "labels": torch.tensor(labels, dtype=torch.float32)}
