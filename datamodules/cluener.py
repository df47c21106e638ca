"""CLUENER2020 (github.com/CLUEbenchmark/CLUENER2020) for GlobalPointer NER (kexue.fm/archives/8373, 8739).

Each line of the official files is a JSON object {"text": ..., "label": {type: {entity: [[start, end], ...]}}},
`end` inclusive (text[start:end + 1] == entity); the test file has {"id", "text"} and no label. Ten types,
in the fixed order `ENTITY_TYPES` (type index = position).

Character spans become token spans through the fast tokenizer's offset mapping, so any tokenizer works: the
character-level bert-base-chinese one, or e5's SentencePiece, whose pieces may join several characters
("球队") and whose "query: " prefix shifts every offset. A gold entity whose first or last character falls
inside a token (or beyond max_length) has no token span: it is counted (`unmapped`, logged), is no training
target, and still counts as a gold entity, missed, in evaluation. The helpers here (`fast_tokenizer`,
`encode_texts`) serve datamodules/cmrc2018.py too.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from datamodules.base import SplitFilesDataModule
from text.files import DataFormatError, file_digest, read_json_lines, write_json_lines
from text.info import DataInfo
from text.tokens import cached

log = logging.getLogger(__name__)
ENTITY_TYPES = ("address", "book", "company", "game", "government", "movie", "name", "organization", "position",
                "scene")
PREDICTION_FILE = "cluener_predict.json"
CACHE_FORMAT = 2


def fast_tokenizer(tokenizer):
    """`tokenizer` when it is a fast (Rust) one, which gives character offsets; else the fast tokenizer loaded
    from the same files, checked to have the same vocabulary, so token ids stay those of the backbone."""
    if tokenizer.is_fast:
        return tokenizer
    from transformers import AutoTokenizer

    fast = AutoTokenizer.from_pretrained(tokenizer.name_or_path, use_fast=True)
    if not fast.is_fast or fast.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"no fast tokenizer with the vocabulary of {tokenizer.name_or_path}: span tasks need "
                         f"character offsets (return_offsets_mapping)")
    return fast


def text_offsets(offsets: list, special: list[int], text: str, shift: int) -> list[list[int]]:
    """Each token's characters [start, end) in `text[shift:]`, whitespace trimmed; [-1, -1] for a token that
    covers no character of its own: a special token, a token of the prefix `text[:shift]`, a whitespace-only
    piece, or a piece starting where the next one starts (SentencePiece's lone "▁" before a text's first word
    carries the offsets of that word's first character)."""
    spans = []
    for (start, end), is_special in zip(offsets, special):
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        spans.append([start - shift, end - shift] if not is_special and start < end and start >= shift else [-1, -1])
    for t in range(len(spans) - 1):
        if spans[t][0] >= 0 and spans[t][0] == spans[t + 1][0]:
            spans[t] = [-1, -1]
    return spans


def encode_texts(tokenizer, texts: list[str], max_length: int, prefix: str = "",
                 special_tokens: bool = True) -> dict[str, list]:
    """Token ids of `prefix + text` (truncated to max_length) and their `text_offsets` in each text."""
    ids, offsets = [], []
    for start in range(0, len(texts), 4096):
        chunk = [prefix + text for text in texts[start:start + 4096]]
        encoded = tokenizer(chunk, max_length=max_length, truncation=True, add_special_tokens=special_tokens,
                            return_offsets_mapping=True, return_special_tokens_mask=True)
        ids += encoded["input_ids"]
        offsets += [text_offsets(o, s, text, len(prefix)) for o, s, text in
                    zip(encoded["offset_mapping"], encoded["special_tokens_mask"], chunk)]
    return {"input_ids": ids, "offsets": offsets}



def token_span(offsets: list[list[int]], first: int, last: int) -> tuple[int, int] | None:
    """Tokens (i, j) whose characters are exactly first…last (inclusive); None when a boundary falls inside a
    token or the span was truncated away."""
    starts = {start: t for t, (start, _) in enumerate(offsets) if start >= 0}
    ends = {end: t for t, (_, end) in enumerate(offsets) if end >= 0}
    i, j = starts.get(first), ends.get(last + 1)
    return (i, j) if i is not None and j is not None and i <= j else None


def parse_label(label, text: str, where: str) -> tuple[tuple[int, int, int], ...]:
    """(type index, first char, last char) of every entity of a CLUENER `label`, checked against the text."""
    if not isinstance(label, dict):
        raise DataFormatError(f"{where}: \"label\" must be an object {{type: {{entity: [[start, end]]}}}}")
    spans = set()
    for kind, entities in label.items():
        if kind not in ENTITY_TYPES:
            raise DataFormatError(f"{where}: unknown entity type {kind!r} (CLUENER types: {', '.join(ENTITY_TYPES)})")
        if not isinstance(entities, dict):
            raise DataFormatError(f"{where}: label[{kind!r}] must be an object {{entity: [[start, end]]}}")
        for entity, positions in entities.items():
            for position in positions if isinstance(positions, list) else [positions]:
                if not (isinstance(position, list) and len(position) == 2 and all(type(p) is int for p in position)
                        and 0 <= position[0] <= position[1] < len(text)):
                    raise DataFormatError(f"{where}: {kind} {entity!r}: {position!r} is not [start, end] with "
                                          f"0 <= start <= end < {len(text)}")
                first, last = position
                if text[first:last + 1] != entity:
                    raise DataFormatError(f"{where}: {kind} span [{first}, {last}] is {text[first:last + 1]!r} "
                                          f"in the text, not {entity!r}")
                spans.add((ENTITY_TYPES.index(kind), first, last))
    return tuple(sorted(spans))


def read_cluener(path: Path) -> list[dict]:
    """Examples {"text", "entities": ((type, first, last), ...), "id"} of a CLUENER JSON-lines file."""
    examples = []
    for number, record in read_json_lines(path):
        where = f"{path}:{number}"
        if not isinstance(record.get("text"), str) or not record["text"]:
            raise DataFormatError(f"{where}: expected an object with a non-empty \"text\"")
        entities = parse_label(record.get("label", {}), record["text"], where)
        examples.append({"text": record["text"], "entities": entities, "id": record.get("id")})
    return examples


def label_of(text: str, entities) -> dict:
    """CLUENER's label object {type: {entity text: [[first, last], ...]}} of (type, first, last) triples."""
    label: dict = {}
    for kind, first, last in sorted(entities, key=lambda e: (e[0], e[1], e[2])):
        label.setdefault(ENTITY_TYPES[kind], {}).setdefault(text[first:last + 1], []).append([first, last])
    return label


class CLUENERDataModule(SplitFilesDataModule):
    """CLUENER2020 as GlobalPointer inputs: `input_ids`, `attention_mask`, `offsets` [B, L, 2] (each token's
    characters, -1 for none), `span_mask` [B, L] (tokens a span may start or end at), `labels` [B, T, L, L]
    (True at the gold token spans of each of the T types), `gold_spans` [G, 4] (row, type, first, last
    character of every gold entity, mapped or not) and `index` [B].

    The test file is CLUE's unlabelled submission set: predict=true writes `cluener_predict.json`, one line
    {"id", "label"} per test text (the leaderboard's file); dev predictions go to dev/cluener_predict.json,
    with "text" and the "gold" label added.

    Args:
        root: the folder holding the files; `files` entries are relative to it.
        files: split name (train/valid/test) -> file.
        max_length: tokens per text, special tokens included (CLUENER texts have at most 50 characters).
        name, source and the loader settings: see SplitFilesDataModule.
    """

    kinds = ("spans",)
    test_labelled = False

    def __init__(self, name: str, root: str, files: dict[str, str], source: str, max_length: int = 128, **common):
        super().__init__(name=name, paths={split: Path(root) / file for split, file in files.items()}, source=source,
                         max_length=max_length, **common)
        self.unmapped: dict[str, int] = {}

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.name, entity_types=ENTITY_TYPES, span_extraction=False)

    def read_split(self, split: str) -> list[dict]:
        return self.limit(split, read_cluener(self.file_of(split)))

    def tokenize_split(self, split: str) -> list[dict]:
        examples = self.read_split(split)
        tokenizer = fast_tokenizer(self.tokenizer)
        key = {"file": file_digest(self.file_of(split)), "limit": self.limit_of(split), "max_length": self.max_length,
               "prefix": self.text_prefix, "kind": "cluener"}
        encoded = cached(self.cache_dir, key, tokenizer, lambda: encode_texts(
            tokenizer, [e["text"] for e in examples], self.max_length, self.text_prefix))
        items, unmapped = [], 0
        for index, (example, ids, offsets) in enumerate(zip(examples, encoded["input_ids"], encoded["offsets"])):
            spans = [(kind, token_span(offsets, first, last)) for kind, first, last in example["entities"]]
            unmapped += sum(span is None for _, span in spans)
            items.append({"index": index, "input_ids": ids, "offsets": offsets, "gold": example["entities"],
                          "labels": [(kind, *span) for kind, span in spans if span is not None]})
        self.unmapped[split] = unmapped
        if unmapped:
            total = sum(len(e["entities"]) for e in examples)
            log.warning("%s %s: %d of %d gold entities have a boundary inside a token (or past max_length=%d); "
                        "they are no training targets and count as missed", self.name, split, unmapped, total,
                        self.max_length)
        return items

    def rows(self, items: list[dict]) -> tuple[list[dict], dict]:
        """Token rows (ids, offsets, span_mask: a token with characters of its own) and the span targets."""
        length = self.padded_length(max(len(item["input_ids"]) for item in items))
        labels = torch.zeros((len(items), len(ENTITY_TYPES), length, length), dtype=torch.bool)
        for row, item in enumerate(items):
            for kind, i, j in item["labels"]:
                labels[row, kind, i, j] = True
        gold = [[row, *entity] for row, item in enumerate(items) for entity in item["gold"]]
        rows = [{"input_ids": item["input_ids"], "offsets": item["offsets"],
                 "span_mask": [start >= 0 for start, _ in item["offsets"]]} for item in items]
        return rows, {"labels": labels, "index": torch.tensor([item["index"] for item in items]),
                      "gold_spans": torch.tensor(gold, dtype=torch.long).reshape(-1, 4)}

    def write_predictions(self, split: str, predictions: list[dict], folder: Path) -> list[Path]:
        examples = self.read_split(split)
        found = {p["index"]: p["entities"] for p in predictions}  # DDP pads with repeats: keep one per index
        missing = [i for i in range(len(examples)) if i not in found]
        if missing:
            raise ValueError(f"{self.name} {split}: no prediction for {len(missing)} examples (first: {missing[:5]})")
        rows = []
        for index, example in enumerate(examples):
            row = {"id": index if example["id"] is None else example["id"],
                   "label": label_of(example["text"], found[index])}
            if split != "test":
                row |= {"text": example["text"], "gold": label_of(example["text"], example["entities"])}
            rows.append(row)
        return [write_json_lines(folder / PREDICTION_FILE if split == "test" else folder / "dev" / PREDICTION_FILE,
                                 rows)]
