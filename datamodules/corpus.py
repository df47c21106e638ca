"""data=corpus: a sentence corpus for masked-LM pretraining, with BERT's dynamic masking in the collate.

The pretraining data of task=masked_lm (BERT's MLM, whose head kexue.fm/archives/8747 discusses; the
whole-word variant is the one GAU-α is pretrained with, kexue.fm/archives/9052). The corpus is made of
the *train* files of the STS, CLUE and LCCC sets:

1. every `sources` file is read (its format says which texts a record gives), LCCC's character-spaced
   utterances are joined back, long texts may be cut into sentences;
2. sentences are deduplicated on their text without whitespace, and every sentence that also occurs in
   an `exclude` file (the valid/test splits the hub evaluates on) is dropped: AFQMC's train file, for
   one, holds 13.8k of ATEC's 39.7k test sentences;
3. each sentence's blake2b hash decides its split, whatever files it came from and in which order:
   u = first 8 bytes / 2⁶⁴, test if u < test_fraction, valid if u < test_fraction + valid_fraction,
   train otherwise. Each split lists its sentences in the order of the hash's last 8 bytes, so
   `max_sentences` keeps a uniform sample of train, smaller caps are subsets of larger ones, and valid/test
   stay the same for every cap.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from datamodules.base import SplitFilesDataModule
from datamodules.lccc import read_dialogues
from text.dialogue import join_characters
from text.files import (
    DataFormatError,
    EmptySplitError,
    MissingSplitError,
    candidates,
    file_digest,
    find_file,
    numbered_lines,
)
from text.info import DataInfo
from text.padding import IGNORE_INDEX, pad_batch
from text.tokens import cached_token_ids

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
FORMATS = ("tsv", "json_lines", "json_dialogues")
SENTENCE_END = re.compile(r"(?<=[。！？!?])(?![。！？!?”’」』])|(?<=[。！？!?][”’」』])|(?<=[\u4e00-\u9fff]\.)(?=[\u4e00-\u9fff])")


@dataclass(frozen=True)
class Source:
    """One file of the corpus (or of its exclusions) and how to take texts from it.

    format: `tsv`: TAB-separated fields, `fields` are column numbers (STS pairs: [0, 1]);
            `json_lines`: one JSON object a line, `fields` are its text keys (CLUE);
            `json_dialogues`: LCCC's JSON list of dialogues, each a list of character-spaced utterances,
            under `key` when the file is an object (toy_data.json: "train"); utterances come out joined
            (datamodules/lccc.py).
    join_characters: undo LCCC's character spacing in tsv/json_lines texts (toy_train.txt: "你 好" → "你好").
    split_sentences: cut each text after 。！？!? (and "." between two Chinese characters), e.g. CSL abstracts.
    optional: a missing file is skipped with a logged warning instead of failing the run.
    """
    file: str
    format: str
    fields: tuple = ()
    key: str | None = None
    join_characters: bool = False
    split_sentences: bool = False
    optional: bool = False

    @classmethod
    def of(cls, spec) -> Source:
        """A Source from its config entry (a dict or DictConfig)."""
        return cls(**{k: tuple(v) if k == "fields" else v for k, v in dict(spec).items()})

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"data.sources: {self.file} has format {self.format!r}; formats are {'|'.join(FORMATS)}")
        if self.format != "json_dialogues" and not self.fields:
            raise ValueError(f"data.sources: {self.file} ({self.format}) needs `fields`: the columns or keys of text")


def read_tsv(path: Path, columns: Sequence[int]) -> Iterator[str]:
    """The texts in `columns` of each TAB-separated line; a short line or an empty text is a file:line error."""
    need = max(columns) + 1
    for number, line in numbered_lines(path):
        fields = line.split("\t")
        if len(fields) < need or not all(fields[c].strip() for c in columns):
            raise DataFormatError(f"{path}:{number}: expected at least {need} TAB-separated fields with text in "
                                  f"columns {list(columns)}, got {line[:120]!r}")
        yield from (fields[c] for c in columns)


def read_json_lines(path: Path, keys: Sequence[str]) -> Iterator[str]:
    """The string fields `keys` of each JSON-lines record; invalid JSON or a missing field is a file:line error."""
    for number, line in numbered_lines(path):
        try:
            record = json.loads(line)
            texts = [record[k] for k in keys]
            if not all(isinstance(t, str) for t in texts):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise DataFormatError(f"{path}:{number}: expected a JSON object with text fields {list(keys)}, "
                                  f"got {line[:120]!r}") from None
        yield from texts


def split_sentences(text: str) -> list[str]:
    """'好。”然后走了。真的吗？！是的' → ['好。”', '然后走了。', '真的吗？！', '是的']."""
    return SENTENCE_END.split(text)


def texts_of(source: Source, path: Path) -> Iterator[str]:
    """The non-empty, stripped texts of one file, after the source's joining and sentence splitting."""
    if source.format == "tsv":
        raw = read_tsv(path, [int(c) for c in source.fields])
    elif source.format == "json_lines":
        raw = read_json_lines(path, list(source.fields))
    else:
        raw = (utterance for dialogue in read_dialogues(path, source.key) for utterance in dialogue)
    for text in raw:
        if source.join_characters:
            text = join_characters(text)
        for sentence in split_sentences(text) if source.split_sentences else [text]:
            sentence = sentence.strip()
            if sentence:
                yield sentence


def dedup_key(sentence: str) -> str:
    """What two copies of a sentence share: its text without any whitespace (BQ's files differ by spaces)."""
    return "".join(sentence.split())


def hash_position(key: str) -> tuple[float, int]:
    """(u ∈ [0, 1) that picks the split, rank that orders it) of a sentence's dedup key, from its blake2b."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64, int.from_bytes(digest[8:], "big")


def load_segmenter() -> Callable[[str], list[str]]:
    """jieba's word segmentation (`jieba.lcut`), for whole-word masking; jieba is not a dependency of the hub."""
    try:
        import jieba
    except ImportError:
        raise ModuleNotFoundError("data.whole_word=true segments words with the package jieba, which is not "
                                  "installed: `pip install jieba`, or set data.whole_word=false") from None
    jieba.setLogLevel(logging.WARNING)
    return jieba.lcut


def word_ids_of(tokens: Sequence[str], segment: Callable[[str], list[str]], specials: set[str]) -> list[int]:
    """The word each WordPiece token belongs to under `segment`, -1 for special tokens.

    The text is rebuilt from the tokens ('##' pieces glued to the token before, a space only between two
    ASCII letters/digits), segmented, and a token belongs to the word holding its first character; a '##'
    piece always stays with the token before it. For "我爱北京" segmented 我|爱|北京 → [0, 1, 2, 2].
    """
    text, starts = "", []
    for token in tokens:
        if token in specials:
            starts.append(None)
            continue
        piece = token[2:] if token.startswith("##") else token
        if not token.startswith("##") and text and text[-1].isascii() and text[-1].isalnum() \
                and piece[:1].isascii() and piece[:1].isalnum():
            text += " "
        starts.append(len(text))
        text += piece
    words = segment(text)
    if "".join(words) != text:
        raise ValueError(f"the segmenter changed the text: {text!r} → {words!r}")
    word_of_char = [index for index, word in enumerate(words) for _ in word]
    ids, previous = [], -1
    for token, start in zip(tokens, starts):
        if start is None:
            ids.append(-1)
            continue
        previous = previous if token.startswith("##") and previous >= 0 else word_of_char[start]
        ids.append(previous)
    return ids


def mask_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, *, mask_token_id: int, random_ids: torch.Tensor,
                probability: float = 0.15, mask_ratio: float = 0.8, random_ratio: float = 0.1,
                word_ids: torch.Tensor | None = None, segment_ids: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM corruption of a padded batch: (corrupted input_ids, labels), both [B, L].

    Each row with n maskable tokens gets k = max(1, round(p·n)) predicted positions (BERT's
    create_pretraining_data): its words are visited in random order and taken while they fit in k (the
    first is always taken). A word is one token, or with `word_ids` [B, L] all tokens sharing an id
    (whole-word masking). A row that packs several sentences (`segment_ids` [B, L]: 1, 2, … per sentence) has
    a budget per sentence, so packing masks what the sentences alone would. Of the predicted tokens, `mask_ratio` become [MASK], `random_ratio` a random
    token of `random_ids`, the rest stay; labels hold the original id there and IGNORE_INDEX elsewhere.
    `generator` None draws from torch's global generator (seeded per DataLoader worker by PyTorch).
    """
    B, L = input_ids.shape
    texts = segment_ids if segment_ids is not None else torch.ones(B, L, dtype=torch.long)
    if word_ids is None:
        selected = choose_tokens(maskable.bool(), texts, probability, generator)
    else:
        selected = torch.zeros(B, L, dtype=torch.bool)
        for row, (words, row_texts) in enumerate(zip(word_ids.masked_fill(~maskable.bool(), -1).tolist(),
                                                     texts.tolist())):
            groups: dict[int, dict[int, list[int]]] = {}
            for position, (word, text) in enumerate(zip(words, row_texts)):
                if word >= 0:
                    groups.setdefault(text, {}).setdefault(word, []).append(position)
            for words_of_text in groups.values():
                selected[row, choose_words(list(words_of_text.values()), probability, generator)] = True
    draw = torch.rand(B, L, generator=generator)
    to_mask = selected & (draw < mask_ratio)
    to_random = selected & (draw >= mask_ratio) & (draw < mask_ratio + random_ratio)
    random_tokens = random_ids[torch.randint(len(random_ids), (B, L), generator=generator)]
    corrupted = torch.where(to_random, random_tokens, input_ids.masked_fill(to_mask, mask_token_id))
    return corrupted, input_ids.masked_fill(~selected, IGNORE_INDEX)


def choose_tokens(maskable: torch.Tensor, texts: torch.Tensor, probability: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """[B, L] the predicted tokens when every token is a word: in each sentence (a row's tokens of one `texts`
    number) with n maskable tokens, the k = max(1, round(p·n)) with the smallest uniform random keys, i.e. a
    uniform k-subset, as `choose_words` draws with one-token words, in a few tensor operations instead of a
    Python loop over tokens (the collate of packed rows of 128 tokens spent ~50 ms per batch of 256 in it)."""
    B, L = maskable.shape
    sentence = (torch.arange(B).unsqueeze(1) * (L + 1) + texts).masked_fill(~maskable, -1).flatten()
    keys = torch.rand(B * L, generator=generator, dtype=torch.float64)
    order = torch.argsort(sentence.to(torch.float64) + keys)    # by sentence, then by key within it
    grouped = sentence[order]
    _, counts = torch.unique_consecutive(grouped, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(B * L) - torch.repeat_interleave(starts, counts)
    budget = torch.round(probability * counts.to(torch.float64)).clamp(min=1).long()
    chosen = (rank < torch.repeat_interleave(budget, counts)) & (grouped >= 0)
    selected = torch.zeros(B * L, dtype=torch.bool)
    selected[order] = chosen
    return selected.view(B, L)


def choose_words(spans: list[list[int]], probability: float, generator: torch.Generator | None) -> list[int]:
    """The positions of the words one sentence predicts: words in random order, taken while they fit in
    k = max(1, round(p·n)), the first always."""
    budget = max(1, round(probability * sum(map(len, spans))))
    chosen: list[int] = []
    for index in torch.randperm(len(spans), generator=generator).tolist():
        if not chosen or len(chosen) + len(spans[index]) <= budget:
            chosen += spans[index]
        if len(chosen) >= budget:
            break
    return chosen


def pack(rows: list[list[int]], max_length: int) -> list[dict[str, list[int]]]:
    """Sentences concatenated in order into rows of at most max_length tokens, each token with its sentence's
    number in the row (`segment_ids`: 1, 2, …); a sentence never straddles two rows."""
    packed, ids, segments = [], [], []
    for row in rows:
        if ids and len(ids) + len(row) > max_length:
            packed.append({"input_ids": ids, "segment_ids": segments})
            ids, segments = [], []
        segments = segments + [(segments[-1] if segments else 0) + 1] * len(row)
        ids = ids + row
    return packed + ([{"input_ids": ids, "segment_ids": segments}] if ids else [])


def masked_positions(labels: torch.Tensor, multiple_of: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [M], labels [M]) of the batch's predicted tokens, positions as flat indices into its B·L tokens,
    M their count rounded up to a multiple of `multiple_of` (few distinct shapes, at most multiple_of − 1 unused
    slots, which point at token 0 with label IGNORE_INDEX). Counted here on the host, so the task gathers the
    hidden states there without boolean indexing, which would wait for the GPU."""
    flat = labels.flatten()
    predicted = (flat != IGNORE_INDEX).nonzero().flatten()
    slots = max(multiple_of, -(-len(predicted) // multiple_of) * multiple_of)
    positions = torch.zeros(slots, dtype=torch.long)
    positions[:len(predicted)] = predicted
    targets = torch.full((slots,), IGNORE_INDEX, dtype=flat.dtype)
    targets[:len(predicted)] = flat[predicted]
    return positions, targets


class CorpusDataModule(SplitFilesDataModule):
    """Sentences for masked-LM pretraining (module docstring: sources, exclusions, hash split).

    Training batches are masked anew in the collate (dynamic masking, as RoBERTa): 15% of the tokens,
    never a special token ([CLS], [SEP], [PAD], [UNK], [MASK]), 80% [MASK] / 10% random / 10% kept
    (`mask_tokens`). Valid/test are masked once at setup with `eval_seed`, so every validation scores the
    same predictions. A batch: `input_ids`, `attention_mask` [B, L], `labels` [B, L] (-100 where not
    predicted) and the predicted tokens' flat positions with their labels, `masked_positions` and
    `masked_labels` [M] (`masked_positions`). With `packing`, training rows hold several sentences each (`pack`), with
    `segment_ids` [B, L] that keep them apart in attention and restart their positions (TransformerEncoder). Sentences of [CLS] [SEP] only (nothing to predict) are left out at setup. A split is made of
    every source file, so each split needs them all on disk.

    Args:
        root: the data folder; `sources`/`exclude` files are relative to it (or absolute).
        sources: the files the corpus is made of (`Source` fields). Each must exist unless `optional: true`:
            a silently smaller corpus would change what a pretraining run means.
        exclude: files whose sentences are removed from every split. A missing one is skipped with a
            logged message: an evaluation file that is not on disk cannot be evaluated on.
        valid_fraction, test_fraction: the share of hash space held out for valid and test.
        max_sentences: keep at most this many training sentences (a hash-random sample); valid/test are not capped
            (train_limit/eval_limit, as every data choice, keep the first N of a split: a hash-random sample too).
        max_length: tokens per sentence, [CLS] and [SEP] included (longer ones are truncated).
        whole_word: mask whole words of jieba's segmentation (the post's whole-word MLM, with jieba for LAC).
        packing: training rows of up to max_length tokens made of whole sentences, fewer rows of padding;
            valid/test stay one sentence per row, so their losses compare with unpacked runs.
        source: where the files come from, quoted when one is missing.
        name and the loader settings: see SplitFilesDataModule.
    """

    kinds = ("corpus",)

    def __init__(self, name: str, root: str, sources: Sequence[dict], exclude: Sequence[dict] = (),
                 valid_fraction: float = 0.01, test_fraction: float = 0.01, max_sentences: int | None = None,
                 max_length: int = 128, batch_size: int = 64, mask_probability: float = 0.15, mask_ratio: float = 0.8,
                 random_ratio: float = 0.1, whole_word: bool = False, eval_seed: int = 0, source: str = "",
                 packing: bool = False, **common):
        if not (valid_fraction >= 0 and test_fraction >= 0 and valid_fraction + test_fraction < 1):
            raise ValueError(f"data.valid_fraction + data.test_fraction must lie in [0, 1), got "
                             f"{valid_fraction} + {test_fraction}")
        if not 0 < mask_probability < 1 or mask_ratio + random_ratio > 1:
            raise ValueError("data.mask_probability must lie in (0, 1) and data.mask_ratio + data.random_ratio ≤ 1")
        self.root, self.sources = Path(root), [Source.of(s) for s in sources]
        required = [self.path_of(s) for s in self.sources if not s.optional]
        super().__init__(name=name, paths={split: required for split in SPLITS}, source=source, max_length=max_length,
                         batch_size=batch_size, **common)
        self.exclude = [Source.of(s) for s in exclude]
        self.valid_fraction, self.test_fraction, self.max_sentences = valid_fraction, test_fraction, max_sentences
        self.masking = {"probability": mask_probability, "mask_ratio": mask_ratio, "random_ratio": random_ratio}
        self.segment = load_segmenter() if whole_word else None
        self.whole_word, self.eval_seed, self.packing = whole_word, eval_seed, packing
        self.splits: dict[str, list[str]] | None = None
        self.files: dict[str, list[tuple[Source, Path]]] | None = None
        self.digests: dict[str, list[dict]] | None = None

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.name, max_length=self.max_length)

    def path_of(self, source: Source) -> Path:
        """Where a source is looked for (a .xz/.gz copy of it is found too)."""
        return self.root / source.file

    def require(self, splits) -> None:
        """Fail now, naming the files looked for, if a split is unknown or a required source is not on disk."""
        for split in splits:
            if split not in SPLITS:
                raise MissingSplitError(f"data={self.name} has no {split} split (splits: {list(SPLITS)})")
        for source in self.sources:
            if not source.optional and find_file(self.path_of(source)) is None:
                looked = ", ".join(str(p) for p in candidates(self.path_of(source)))
                raise MissingSplitError(
                    f"data={self.name}: the corpus source {source.file} is not on disk. Looked for: {looked}. "
                    f"Official data: {self.source}. Point paths.data_dir (or HUB_DATA_DIR) at the folder that "
                    f"holds it, remove it from data.sources, or mark it `optional: true`.")

    def present_files(self) -> dict[str, list[tuple[Source, Path]]]:
        """The sources and exclusion files on disk, each with its path; missing optional ones are logged once."""
        if self.files is None:
            self.require(SPLITS)
            self.files = {"sources": [], "exclude": []}
            for role, sources in (("sources", self.sources), ("exclude", self.exclude)):
                for source in sources:
                    path = find_file(self.path_of(source))
                    if path is None:
                        log.warning("data=%s: %s file %s is not on disk, skipped", self.name,
                                    "optional source" if role == "sources" else "exclusion", self.path_of(source))
                    else:
                        self.files[role].append((source, path))
        return self.files

    def _build_splits(self) -> dict[str, list[str]]:
        """Read, deduplicate, exclude and split the corpus (module docstring), logging what each step kept."""
        files = self.present_files()
        excluded = {dedup_key(t) for source, path in files["exclude"] for t in texts_of(source, path)}
        seen: set[str] = set()
        splits: dict[str, list[tuple[int, str]]] = {split: [] for split in SPLITS}
        read = dropped = 0
        for source, path in files["sources"]:
            for sentence in texts_of(source, path):
                read += 1
                key = dedup_key(sentence)
                if key in seen:
                    continue
                seen.add(key)
                if key in excluded:
                    dropped += 1
                    continue
                u, rank = hash_position(key)
                if u < self.test_fraction:
                    splits["test"].append((rank, sentence))
                elif u < self.test_fraction + self.valid_fraction:
                    splits["valid"].append((rank, sentence))
                else:
                    splits["train"].append((rank, sentence))
        out = {split: [s for _, s in sorted(items)] for split, items in splits.items()}
        if self.max_sentences is not None:
            out["train"] = out["train"][:self.max_sentences]
        log.info("data=%s: %d texts read, %d distinct, %d in evaluation files removed; train/valid/test = %d/%d/%d",
                 self.name, read, len(seen), dropped, *(len(out[s]) for s in SPLITS))
        return out

    def read_split(self, split: str) -> list[str]:
        """The sentences of one split (the whole corpus is read once per DataModule)."""
        self.require([split])
        if self.splits is None:
            self.splits = self._build_splits()
        return self.limit(split, self.splits[split])

    def set_tokenizer(self, tokenizer, text_prefix: str = "", pair_encoding: str = "separate") -> None:
        """The backbone's tokenizer: token ids, the special tokens never masked, the ids a random replacement draws."""
        super().set_tokenizer(tokenizer, text_prefix, pair_encoding)
        self.fill["segment_ids"] = 0
        special = set(tokenizer.all_special_ids)
        self.special_ids = torch.tensor(sorted(special))
        self.random_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in special])

    def corpus_key(self, split: str) -> dict:
        """What decides a split's sentences: every file's content and spec, and the split settings."""
        if self.digests is None:
            self.digests = {role: [{**asdict(s), "digest": file_digest(p)} for s, p in files]
                            for role, files in self.present_files().items()}
        return {**self.digests, "valid_fraction": self.valid_fraction, "test_fraction": self.test_fraction,
                "split": split, "max_sentences": self.max_sentences if split == "train" else None,
                "limit": self.limit_of(split)}

    def tokenize_split(self, split: str) -> list[dict[str, list[int]]]:
        """Token ids of a split (cached), sentences with nothing to predict left out; valid/test masked once."""
        ids = cached_token_ids(self.cache_dir, self.corpus_key(split), {"text": self.read_split(split)},
                               self.tokenizer, self.max_length, self.text_prefix)["text"]
        special = set(self.special_ids.tolist())
        ids = [row for row in ids if any(t not in special for t in row)]
        if split != "train":
            return self._mask_once(ids)
        return pack(ids, self.max_length) if self.packing else [{"input_ids": row} for row in ids]

    def empty_split(self, split: str) -> EmptySplitError:
        """The error for a split left without sentences: raised on setup, before any training step."""
        share = {"valid": self.valid_fraction, "test": self.test_fraction}.get(
            split, 1 - self.valid_fraction - self.test_fraction)
        fraction = (f"raise data.{split}_fraction" if split != "train"
                    else "lower data.valid_fraction + data.test_fraction")
        files = ", ".join(str(path) for _, path in self.present_files()["sources"]) or "(no source file)"
        return EmptySplitError(f"{files}: the {split} split of data={self.name} holds no sentences (its share of the "
                               f"corpus: {share:g}); add text to the sources or {fraction}")

    def maskable(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] True at the tokens that may be predicted: real tokens that are not special."""
        return attention_mask.bool() & ~torch.isin(input_ids, self.special_ids)

    def word_ids(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """[B, L] word of each token under jieba's segmentation (whole_word), else None (every token a word)."""
        if self.segment is None:
            return None
        specials = set(self.tokenizer.all_special_tokens)
        return torch.tensor([word_ids_of(self.tokenizer.convert_ids_to_tokens(row), self.segment, specials)
                             for row in input_ids.tolist()])

    def mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator | None = None,
             segment_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`mask_tokens` with this corpus's settings: (corrupted input_ids, labels)."""
        return mask_tokens(input_ids, self.maskable(input_ids, attention_mask),
                           mask_token_id=self.tokenizer.mask_token_id, random_ids=self.random_ids,
                           word_ids=self.word_ids(input_ids), segment_ids=segment_ids, generator=generator,
                           **self.masking)

    def _mask_once(self, ids: list[list[int]], chunk: int = 1024) -> list[dict[str, list[int]]]:
        """Valid/test: corrupted ids and labels per sentence, drawn once from a generator seeded with eval_seed."""
        generator = torch.Generator().manual_seed(self.eval_seed)
        examples = []
        for start in range(0, len(ids), chunk):
            rows = ids[start:start + chunk]
            batch = pad_batch([{"input_ids": row} for row in rows], self.fill)
            corrupted, labels = self.mask(batch["input_ids"], batch["attention_mask"], generator)
            examples += [{"input_ids": c[:len(r)], "labels": y[:len(r)]}
                         for c, y, r in zip(corrupted.tolist(), labels.tolist(), rows)]
        return examples

    def collate(self, items: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Padded rows; training rows come without labels and are masked anew here (torch's generator: per
        worker, seeded by PyTorch), valid/test rows were masked at setup."""
        batch = super().collate(items)
        if "labels" not in batch:
            batch["input_ids"], batch["labels"] = self.mask(batch["input_ids"], batch["attention_mask"],
                                                            segment_ids=batch.get("segment_ids"))
        batch["masked_positions"], batch["masked_labels"] = masked_positions(batch["labels"])
        return batch
