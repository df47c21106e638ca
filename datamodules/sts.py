"""The Chinese STS family: ATEC, BQ, LCQMC, PAWSX and STS-B as sentence pairs with a similarity label.

Files are the senteval_cn form used by the CoSENT experiments (kexue.fm/archives/8847, 8321):
one pair per line, `sentence1<TAB>sentence2<TAB>label`, the label 0/1 or an STS-B score 0-5 (`label_max`).
Labels leave the reader in [0, 1], score / label_max (binary sets are 0/1 already), so no task or loss needs
the scale of a data set: a pair is "similar" iff its label > 0.5 (STS-B: a score of 3 or more), and order
(Spearman, CoSENT) is unchanged.
A pair is encoded as the task says (`set_tokenizer(..., pair_encoding=)`): "separate" for a bi-encoder (each
sentence on its own) or "joint" for a cross-encoder (both in one sequence, kexue.fm/archives/8860, 9341).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from datamodules.base import SplitFilesDataModule
from text.files import DataFormatError, file_digest, numbered_lines
from text.tokens import cached, cached_token_ids


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
    """Read a `sentence1<TAB>sentence2<TAB>label` file, labels divided by label_max; a malformed line raises
    DataFormatError naming file:line."""
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
        pairs.labels.append(label / label_max)
    return pairs


class TokenizedPairs(Dataset):
    def __init__(self, first: list[list[int]], second: list[list[int]], labels: list[float]):
        self.first, self.second, self.labels = first, second, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.first[i], self.second[i], self.labels[i]


class JointPairs(Dataset):
    """Each pair as one token sequence; an item is (position in the split, input ids, token type ids, label)."""

    def __init__(self, input_ids: list[list[int]], token_type_ids: list[list[int]] | None, labels: list[float]):
        self.input_ids, self.token_type_ids, self.labels = input_ids, token_type_ids, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return i, self.input_ids[i], self.token_type_ids[i] if self.token_type_ids else None, self.labels[i]


def encode_pairs(tokenizer, first: list[str], second: list[str], max_length: int, prefix: str = "",
                 chunk: int = 8192) -> dict[str, list[list[int]]]:
    """The tokenizer's pair encoding ([CLS] a [SEP] b [SEP] for BERT), the longer side truncated first.

    `prefix` goes before the first sentence only. Returns input_ids, plus token_type_ids when the tokenizer
    gives them."""
    encoded: dict[str, list[list[int]]] = {"input_ids": [], "token_type_ids": []}
    for start in range(0, len(first), chunk):
        batch = tokenizer([prefix + text for text in first[start:start + chunk]], list(second[start:start + chunk]),
                          max_length=max_length, truncation="longest_first")
        for name in encoded:
            encoded[name].extend(batch.get(name, []))
    return {name: ids for name, ids in encoded.items() if ids}


def cached_pair_ids(cache_dir: str | Path | None, key: dict, first: list[str], second: list[str], tokenizer,
                    max_length: int, prefix: str = "") -> dict[str, list[list[int]]]:
    """`encode_pairs`, kept in `cache_dir` under the digest of `key` + tokenizer + max length + prefix."""
    return cached(cache_dir, dict(key, max_length=max_length, prefix=prefix), tokenizer,
                  lambda: encode_pairs(tokenizer, first, second, max_length, prefix))


class STSDataModule(SplitFilesDataModule):
    """Sentence pairs with a similarity label in [0, 1] (module docstring).

    pair_encoding "separate" (bi-encoders): each sentence tokenized on its own; a batch holds `input_ids`/
    `attention_mask` of shape [2B, L] (the B first sentences, then the B second ones), padded to the longest
    sentence of the batch, and `labels` [B] as floats.
    pair_encoding "joint" (cross-encoders): each pair as one sequence, the tokenizer's pair encoding
    ([CLS] a [SEP] b [SEP], at most max_length tokens, the longer sentence truncated first); a batch holds
    `input_ids`/`attention_mask` [B, L], `token_type_ids` [B, L] when the tokenizer gives them, `labels` [B]
    as floats and `index` [B], each pair's position in the split.

    Args:
        root: the folder holding the files; `files` entries are relative to it (or absolute).
        files: split name (train/valid/test) -> file name.
        label_max: 1 for binary labels, 5 for STS-B scores: the labels of the files lie in [0, label_max].
        name, source, max_length and the loader settings: see SplitFilesDataModule.
    """

    kinds = ("pairs", "joint_pairs")

    def __init__(self, name: str, root: str, files: dict[str, str], label_max: float, source: str,
                 max_length: int = 64, **common):
        super().__init__(name=name, paths={split: Path(root) / file for split, file in files.items()}, source=source,
                         max_length=max_length, **common)
        self.label_max = label_max

    def read_split(self, split: str) -> Pairs:
        pairs = read_pairs(self.file_of(split), self.label_max)
        return Pairs(*(self.limit(split, column) for column in (pairs.first, pairs.second, pairs.labels)))

    def tokenize_split(self, split: str) -> TokenizedPairs | JointPairs:
        pairs = self.read_split(split)
        key = {"file": file_digest(self.file_of(split)), "limit": self.limit_of(split), "encoding": self.pair_encoding}
        if self.pair_encoding == "joint":
            ids = cached_pair_ids(self.cache_dir, key, pairs.first, pairs.second, self.tokenizer, self.max_length,
                                  self.text_prefix)
            return JointPairs(ids["input_ids"], ids.get("token_type_ids"), pairs.labels)
        ids = cached_token_ids(self.cache_dir, key, {"first": pairs.first, "second": pairs.second},
                               self.tokenizer, self.max_length, self.text_prefix)
        return TokenizedPairs(ids["first"], ids["second"], pairs.labels)

    def rows(self, items) -> tuple[list[dict], dict]:
        if self.pair_encoding == "joint":
            index, input_ids, token_type_ids, labels = zip(*items)
            rows = [{"input_ids": ids} if types is None else {"input_ids": ids, "token_type_ids": types}
                    for ids, types in zip(input_ids, token_type_ids)]
            return rows, {"labels": torch.tensor(labels, dtype=torch.float32), "index": torch.tensor(index)}
        first, second, labels = zip(*items)
        return [{"input_ids": ids} for ids in first + second], {"labels": torch.tensor(labels, dtype=torch.float32)}
