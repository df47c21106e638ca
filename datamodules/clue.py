"""The CLUE classification tasks (github.com/CLUEbenchmark/CLUE) as single texts or text pairs with a class.

Inputs are built as in Su Jianlin's CLUE baselines (kexue.fm/archives/8739):

    sentence          TNEWS, IFLYTEK       [CLS] sentence [SEP]
    sentence_pair     AFQMC, OCNLI, CMNLI  [CLS] sentence1 [SEP] sentence2 [SEP]
    abstract_keywords CSL                  [CLS] abst [SEP] keyword₁；keyword₂；… [SEP]
    marked_spans      CLUEWSC2020          [CLS] text with _span1_ and [span2] marked [SEP]

A pair is one sequence whose segment ids are all 0 (the post: RoBERTa-like models never pretrained
segment 1, and all-zero ids cost nothing on BERT), so batches carry no token_type_ids. Official files are
JSON lines; the test files are the leaderboard's unlabelled submission sets, read with their ids, and
`write_predictions` writes the submission files (`{"id": …, "label": "…"}` per line, in test-file order).
Class ids follow the label set's order; for AFQMC's ["0", "1"] the class id is the label, so a cross-encoder
reads it as a pair label in [0, 1] (similar iff > 0.5), as it reads the STS sets'.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

from datamodules.base import SplitFilesDataModule
from text.files import (
    DataFormatError,
    MissingSplitError,
    file_digest,
    find_file,
    read_json_lines,
    write_json_lines,
)
from text.info import DataInfo
from text.tokens import cached_token_ids

log = logging.getLogger(__name__)
NO_GOLD_LABEL = "-"   # OCNLI/CMNLI: the annotators did not agree; such rows have no label to learn
KEYWORD_SEPARATOR = "；"
INPUT_FORMAT = 1      # part of the token cache key: bump when an input builder changes


# ---------------------------------------------------------------- JSON lines and label files

def label_string(value) -> str:
    """Labels as the submission files spell them: "1", "entailment", "true" (FewCLUE stores 10 for "10")."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"a label must be a string or an integer, got {value!r}")
    return str(value)


def read_label_file(path: Path) -> dict[str, str]:
    """An official labels.json (TNEWS, IFLYTEK): label id -> description, in file order.

    Lines are {"label": "100", "label_desc": "news_story"} (TNEWS) or {"label": "0", "label_des": "打车"}
    (IFLYTEK)."""
    labels = {}
    for number, row in read_json_lines(path):
        description = row.get("label_desc", row.get("label_des"))
        if "label" not in row or description is None:
            raise DataFormatError(f"{path}:{number}: expected {{\"label\", \"label_desc\"}} (or \"label_des\"), "
                                  f"got keys {sorted(row)}")
        label = label_string(row["label"])
        if label in labels:
            raise DataFormatError(f"{path}:{number}: label {label!r} is listed twice")
        labels[label] = description
    return labels


# ---------------------------------------------------------------- the texts of a row, per task

def sentence_input(row: dict) -> tuple[str]:
    return (text_field(row, "sentence"),)


def sentence_pair_input(row: dict) -> tuple[str, str]:
    return text_field(row, "sentence1"), text_field(row, "sentence2")


def abstract_keywords_input(row: dict) -> tuple[str, str]:
    """CSL: the abstract, then its keywords joined by "；" as the second text (kexue.fm/archives/8739).
    (bojone/CLUE-bert4keras puts the keywords first; with all segment ids 0 only the order differs.)"""
    keywords = row["keyword"]
    if not isinstance(keywords, list) or not keywords or not all(isinstance(k, str) for k in keywords):
        raise ValueError(f"'keyword' must be a non-empty list of strings, got {keywords!r}")
    return text_field(row, "abst"), KEYWORD_SEPARATOR.join(keywords)


def marked_spans_input(row: dict) -> tuple[str]:
    return (mark_spans(text_field(row, "text"), row["target"]),)


def mark_spans(text: str, target: dict) -> str:
    """CLUEWSC2020: wrap span1 (the candidate referent) in underscores and span2 (the pronoun) in square
    brackets, the markers of bojone/CLUE-bert4keras's wsc.py, so the task becomes single-text
    classification (kexue.fm/archives/8739):

        "裂开的伤口涂满尘土，…把它们剔除出去。" with span1 伤口@3, span2 它们@27
        → "裂开的_伤口_涂满尘土，…把[它们]剔除出去。"

    Each span_index must point at its span_text in `text`, and the spans must not overlap."""
    spans = []
    for number, left, right in (("1", "_", "_"), ("2", "[", "]")):
        start, span = target[f"span{number}_index"], target[f"span{number}_text"]
        if not isinstance(start, int) or not isinstance(span, str) or text[start:start + len(span)] != span:
            raise ValueError(f"span{number}_text {span!r} is not at span{number}_index {start!r} of the text")
        spans.append((start, start + len(span), left, right))
    (first_start, first_end, *_), (second_start, *_) = sorted(spans)
    if second_start < first_end:
        raise ValueError("span1 and span2 overlap")
    for start, end, left, right in sorted(spans, reverse=True):   # the later span first: earlier offsets hold
        text = text[:start] + left + text[start:end] + right + text[end:]
    return text


def text_field(row: dict, key: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {value!r}")
    return value


INPUTS: dict[str, Callable[[dict], tuple[str, ...]]] = {
    "sentence": sentence_input,
    "sentence_pair": sentence_pair_input,
    "abstract_keywords": abstract_keywords_input,
    "marked_spans": marked_spans_input,
}


# ---------------------------------------------------------------- examples, token ids, batches

@dataclass
class Examples:
    """The rows of a split: texts (one or two per row), class ids (None for an unlabelled split) and the
    row ids (the file's "id"/"idx", else the row's position among the rows kept)."""
    texts: list[tuple[str, ...]]
    labels: list[int] | None
    ids: list

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, rows: slice) -> Examples:
        return Examples(self.texts[rows], None if self.labels is None else self.labels[rows], self.ids[rows])


def join_pair(first: list[int], second: list[int], cls_id: int, sep_id: int, max_length: int) -> list[int]:
    """[CLS] first [SEP] second [SEP] in at most max_length tokens, cutting the end of the longer text first
    (token by token, the first text on a tie: bert4keras's truncate_sequences) — in closed form."""
    budget = max_length - 3
    keep_first = min(len(first), max(budget - len(second), budget // 2))
    keep_second = min(len(second), budget - keep_first)
    return [cls_id, *first[:keep_first], sep_id, *second[:keep_second], sep_id]


def strip_specials(ids: list[int], cls_id: int, sep_id: int) -> list[int]:
    """A text's ids as the tokenizer wraps them, [CLS] … [SEP] (<s> … </s> for XLM-R), without the wrap."""
    if len(ids) < 2 or ids[0] != cls_id or ids[-1] != sep_id:
        raise ValueError(f"the tokenizer does not wrap a text as cls_token … sep_token (ids {ids[:3]}…{ids[-2:]}): "
                         f"cannot build [CLS] a [SEP] b [SEP] pairs with it")
    return ids[1:-1]


class TokenizedExamples(Dataset):
    """Item i: (i, token ids, class id or -1 for an unlabelled split)."""

    def __init__(self, token_ids: list[list[int]], labels: list[int] | None):
        self.token_ids, self.labels = token_ids, labels

    def __len__(self):
        return len(self.token_ids)

    def __getitem__(self, i):
        return i, self.token_ids[i], -1 if self.labels is None else self.labels[i]


# ---------------------------------------------------------------- the DataModule

class CLUEClassificationDataModule(SplitFilesDataModule):
    """One CLUE classification task, chosen by its YAML (conf/data/{afqmc,tnews,iflytek,ocnli,cmnli,csl,wsc}).

    Rows labelled "-" (no annotator agreement: OCNLI, CMNLI) are dropped and counted in `dropped_rows`
    (split -> count). Model selection and the reported number are on `valid`, the official dev file: the
    test files have no labels (`test_labelled = False`), only ids, and are predicted for submission.

    A batch holds `input_ids`, `attention_mask` [B, L], `index` [B] (the rows' positions in the split) and,
    for labelled splits, `labels` [B] (class ids). No token_type_ids: every segment id is 0.

    Args:
        root: the folder holding the files; `files` and `labels_file` are relative to it (or absolute).
        files: split name (train/valid/test) -> file name; `.xz`/`.gz` versions are found too.
        inputs: how a row becomes text(s): sentence | sentence_pair | abstract_keywords | marked_spans.
        submission: the leaderboard's file name for this task's test predictions (e.g. afqmc_predict.json).
        labels: the label set, as spelled in the files (its order gives the class ids); or
        labels_file: the official labels.json (TNEWS, IFLYTEK), whose order gives the class ids.
        max_length: tokens per input, [CLS] and [SEP]s included.
        train_limit: keep only the first N training rows (file order, after dropping "-" rows).
        name, source and the loader settings: see SplitFilesDataModule.
    """

    kinds = ("classification",)
    test_labelled = False

    def __init__(self, name: str, root: str, files: dict[str, str], inputs: str, submission: str, source: str,
                 labels: list[str] | None = None, labels_file: str | None = None, max_length: int = 128,
                 **common):
        if inputs not in INPUTS:
            raise ValueError(f"data.inputs must be one of {sorted(INPUTS)}, got {inputs!r}")
        if (labels is None) == (labels_file is None):
            raise ValueError(f"data={name}: set exactly one of data.labels (the label set) and data.labels_file "
                             f"(an official labels.json), got labels={labels!r}, labels_file={labels_file!r}")
        super().__init__(name=name, paths={split: Path(root) / file for split, file in files.items()}, source=source,
                         max_length=max_length, **common)
        self.inputs, self.submission = inputs, submission
        self.labels_path = None if labels_file is None else Path(root) / labels_file
        self._label_descriptions = None if labels is None else {label_string(label): None for label in labels}
        self.dropped_rows: dict[str, int] = {}
        self.examples: dict[str, Examples] = {}

    @classmethod
    def kinds_for(cls, node) -> tuple[str, ...]:
        """Binary sentence pairs (AFQMC) are joint pairs too: a cross-encoder scores them (class 1 = similar)."""
        binary_pairs = node.get("inputs") == "sentence_pair" and list(node.get("labels") or ()) == ["0", "1"]
        return cls.kinds + (("joint_pairs",) if binary_pairs else ())

    @property
    def label_descriptions(self) -> dict[str, str | None]:
        """Label as spelled in the files -> its official description (None without a labels file)."""
        if self._label_descriptions is None:
            path = find_file(self.labels_path)
            if path is None:
                raise MissingSplitError(f"data={self.name}: the labels file {self.labels_path} is not on disk. "
                                        f"Official data: {self.source}.")
            self._label_descriptions = read_label_file(path)
        return self._label_descriptions

    @property
    def label_names(self) -> list[str]:
        """The labels as spelled in the files; class id c is label_names[c]."""
        return list(self.label_descriptions)

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.name, num_labels=len(self.label_names), label_names=tuple(self.label_names))

    def read_split(self, split: str) -> Examples:
        """The split's rows (`limit`). The test split is read without labels; any other row needs a label from
        the label set, or "-" (dropped, counted in dropped_rows[split])."""
        path, build = self.file_of(split), INPUTS[self.inputs]
        labelled, class_of = self.labelled(split), {label: c for c, label in enumerate(self.label_names)}
        examples, dropped = Examples([], [] if labelled else None, []), 0
        for number, row in read_json_lines(path):
            try:
                label = label_string(row["label"]) if labelled else None
                if label == NO_GOLD_LABEL:
                    dropped += 1
                    continue
                if labelled and label not in class_of:
                    raise ValueError(f"label {label!r} is not one of the {len(class_of)} labels of data={self.name} "
                                     f"({', '.join(list(class_of)[:20])}{', …' if len(class_of) > 20 else ''})")
                texts = build(row)
                row_id = row["id"] if not labelled else row.get("id", row.get("idx", len(examples)))
            except KeyError as error:
                raise DataFormatError(f"{path}:{number}: missing key {error} (keys: {sorted(row)})") from None
            except (TypeError, ValueError) as error:
                raise DataFormatError(f"{path}:{number}: {error}") from None
            examples.texts.append(texts)
            examples.ids.append(row_id)
            if labelled:
                examples.labels.append(class_of[label])
        self.dropped_rows[split] = dropped
        if dropped:
            log.info("data=%s %s: dropped %d of %d rows labelled %r (no gold label)", self.name, split, dropped,
                     dropped + len(examples), NO_GOLD_LABEL)
        return self.limit(split, examples)

    def examples_of(self, split: str) -> Examples:
        if split not in self.examples:
            self.examples[split] = self.read_split(split)
        return self.examples[split]

    def tokenize_split(self, split: str) -> TokenizedExamples:
        """Token ids of every input; each text is tokenized on its own (cached) and pairs are joined after."""
        examples = self.examples_of(split)
        columns = {"first": [self.text_prefix + texts[0] for texts in examples.texts]}
        pairs = bool(examples.texts) and len(examples.texts[0]) == 2
        if pairs:
            columns["second"] = [texts[1] for texts in examples.texts]
        key = {"file": file_digest(self.file_of(split)), "inputs": self.inputs, "input_format": INPUT_FORMAT,
               "text_prefix": self.text_prefix, "rows": len(examples)}
        ids = cached_token_ids(self.cache_dir, key, columns, self.tokenizer, self.max_length)
        if not pairs:
            return TokenizedExamples(ids["first"], examples.labels)
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        joined = [join_pair(strip_specials(a, cls_id, sep_id), strip_specials(b, cls_id, sep_id), cls_id, sep_id,
                            self.max_length) for a, b in zip(ids["first"], ids["second"])]
        return TokenizedExamples(joined, examples.labels)

    def rows(self, items) -> tuple[list[dict], dict]:
        """`labels` only when the split is labelled (an unlabelled item's label is -1)."""
        index, token_ids, labels = zip(*items)
        fields = {"index": torch.tensor(index)} | ({"labels": torch.tensor(labels)} if min(labels) >= 0 else {})
        return [{"input_ids": ids} for ids in token_ids], fields

    def write_predictions(self, split: str, predictions: list[dict], folder: Path) -> list[Path]:
        """test: `folder/<submission>`, {"id", "label"} per test row in file order, the leaderboard's format.
        valid: `folder/dev/<submission>` (any other split: `folder/<split>/`), {"id", "label", "gold"} per row kept.
        `predictions`: one {"index", "label": class id, …} per row; duplicates (DDP padding) are dropped."""
        examples = self.examples_of(split)
        by_index = {int(p["index"]): int(p["label"]) for p in predictions}
        missing = [i for i in range(len(examples)) if i not in by_index]
        if missing or len(by_index) != len(examples):
            raise ValueError(f"data={self.name} {split}: predictions for {len(by_index)} rows, the split has "
                             f"{len(examples)} (missing: {missing[:10]})")
        names = self.label_names
        rows = [{"id": examples.ids[i], "label": names[by_index[i]]} for i in range(len(examples))]
        if examples.labels is not None:
            for row, gold in zip(rows, examples.labels):
                row["gold"] = names[gold]
        subfolder = {"test": ".", "valid": "dev"}.get(split, split)   # `zip -j` of folder: a submission
        return [write_json_lines(Path(folder) / subfolder / self.submission, rows)]
