"""Long documents as fixed-length rows of one causal-LM token stream, for length extrapolation
(kexue.fm/archives/9431, 9577): train at `max_length`, evaluate at `eval_max_length` (2×, 4×, 8× …).

Each split's documents (CMRC 2018 contexts, CSL abstracts, … as the config lists them) are tokenized whole,
each as [CLS] document [SEP], joined into one stream in file order, and cut into rows of exactly L tokens
(the last, shorter piece is dropped): L = max_length for train, eval_max_length for valid and test. Every
token of a row is a target; the task shifts the labels, so position t predicts token t + 1:

    input_ids       [CLS] d₁ … [SEP] [CLS] e₁ …        (L tokens, possibly across documents)
    token_type_ids    0   0  …   0     0   0  …
    labels          = input_ids

A row of valid/test at eval_max_length = k · max_length shows a trained model k times its training length;
all rows of a split have one shape, so no padding is needed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from datamodules.base import SplitFilesDataModule
from datamodules.cmrc2018 import read_cmrc2018
from datamodules.corpus import Source, texts_of
from text.files import file_digest
from text.info import DataInfo
from text.tokens import cached_token_ids

WHOLE_DOCUMENT = 1_000_000   # tokenizer max_length: no document is cut when tokenized
DOCUMENT_FORMATS = ("squad", "tsv", "json_lines")


def documents_of(spec: dict, path: Path) -> list[str]:
    """The documents of one file: `squad`: the distinct paragraph contexts (CMRC 2018); `tsv`/`json_lines`:
    the texts of `fields` (datamodules/corpus.py), one document each."""
    if spec["format"] == "squad":
        questions, _ = read_cmrc2018(path, labelled=False)
        return list(dict.fromkeys(q["context"] for q in questions))
    return list(texts_of(Source.of(spec), path))


def rows_of(documents: list[list[int]], length: int) -> list[dict[str, list[int]]]:
    """The documents' token ids joined in order and cut into rows of exactly `length` tokens."""
    stream = [token for document in documents for token in document]
    return [{"input_ids": stream[start:start + length], "token_type_ids": [0] * length,
             "labels": stream[start:start + length]}
            for start in range(0, len(stream) - length + 1, length)]


class DocumentsDataModule(SplitFilesDataModule):
    """Rows of `max_length` tokens (train) and `eval_max_length` tokens (valid, test) cut from long documents.

    Args:
        root: the folder that `files` entries are relative to.
        files: split -> list of {file, format: squad | tsv | json_lines, fields: (tsv/json_lines) the columns
            or keys of text}.
        max_length: tokens per training row (the training length T).
        eval_max_length: tokens per valid/test row; null: max_length. Positions beyond the training length
            need a backbone that has no table of them (backbone.position=rope or none).
        train_limit / eval_limit: keep only the first N documents of a split's files.
        name, source and the loader settings: see SplitFilesDataModule.
    """

    kinds = ("documents",)

    def __init__(self, name: str, root: str, files: dict[str, Sequence[dict]], source: str, max_length: int = 64,
                 eval_max_length: int | None = None, **common):
        specs = {split: [{k: list(v) if k == "fields" else v for k, v in dict(spec).items()} for spec in entries]
                 for split, entries in files.items()}
        for split, entries in specs.items():
            for spec in entries:
                if not spec.get("file") or spec.get("format") not in DOCUMENT_FORMATS:
                    raise ValueError(f"data.files.{split}: {spec} needs a `file` and a `format`, one of "
                                     f"{'|'.join(DOCUMENT_FORMATS)}")
        super().__init__(name=name, paths={split: [Path(root) / spec["file"] for spec in entries]
                                           for split, entries in specs.items()},
                         source=source, max_length=max_length, **common)
        self.specs = specs
        self.eval_max_length = eval_max_length or max_length
        if self.eval_max_length < 2 or max_length < 2:
            raise ValueError(f"data.max_length and data.eval_max_length must be ≥ 2 tokens, got {max_length} and "
                             f"{self.eval_max_length}")

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.name, max_length=self.max_length)

    def row_length(self, split: str) -> int:
        return self.max_length if split == "train" else self.eval_max_length

    def padded_length(self, longest: int) -> int:
        return longest   # every row of a split has the split's length

    def read_split(self, split: str) -> list[str]:
        documents = [document for spec, path in zip(self.specs[split], self.files_of(split))
                     for document in documents_of(spec, path)]
        return self.limit(split, documents)

    def tokenize_split(self, split: str) -> list[dict[str, list[int]]]:
        documents = self.read_split(split)
        key = {"files": [file_digest(path) for path in self.files_of(split)], "specs": self.specs[split],
               "limit": self.limit_of(split)}
        ids = cached_token_ids(self.cache_dir, key, {"documents": documents}, self.tokenizer, WHOLE_DOCUMENT,
                               self.text_prefix)["documents"]
        return rows_of(ids, self.row_length(split))
