"""Multiple-choice reading comprehension of CLUE, C3 and CHID, scored option by option (kexue.fm/archives/8739).

The post's baseline turns one question with n options into n text pairs, scores each pair from [CLS] and
takes the softmax over the n scores; it found this better than every other simple baseline (for instance
all options in one input, classified n-way). Segment ids are all 0, as in the post's matching tasks.

C3 (github.com/nlpdata/c3): each of the d (dialogue) and m (mixed) files is a JSON list of
`[passage sentences, [{"question", "choice": [2-4 options], "answer"}, ...], document id]`; a split is the
d file and the m file. One option becomes

    [CLS] passage [SEP] question [SEP] option [SEP]      (XLM-R tokenizers: <s> … </s></s> … </s> … </s>)

and the passage is cut from its end to fit max_length, so the question and the option are always whole.
Questions with fewer than 4 options are padded with absent options (`choice_mask`), which get a −∞ logit.

CHID (CLUE's idiom cloze): passages with blanks, each line of a file sharing one candidate list among its
blanks. The official layout is JSON lines `{"candidates": [10 idioms], "content": [passages with
#idiomNNNNNN# blanks]}` with the answers in a separate `{"#idiomNNNNNN#": index}` file; FewCLUE's
(github.com/CLUEbenchmark/FewCLUE, datasets/chid) is `{"id", "candidates": [7 idioms], "content": one
passage with one #idiom# blank, "answer"}`. As in the post, a passage with several blanks gives one example
per blank: that blank becomes one marker token, every other blank 4 [MASK] tokens (the length of an idiom),
and each candidate is scored as

    [CLS] candidate [SEP] … left context [MARK] right context … [SEP]

with the context cut to max_length around the blank, as evenly to the left and right as it allows.
The marker is the first of `blank_marker` the tokenizer has as one token: the post's [unused1] in the
bert-base-chinese vocabulary (an unused token, free for fine-tuning to give a meaning); the e5/XLM-R
vocabulary has no unused token, so it takes ※, a rare symbol both vocabularies hold. Answers of blanks that
share a candidate list are distinct; the task's `hungarian` option uses that (each example carries its
`group`, the line it comes from).

Batches hold only the options that exist: `input_ids`/`attention_mask` [N, L] for the N options of the B
questions in row-major order, `choice_mask` [B, num_choices] (True where an option exists), `labels` [B]
(the answer's position; −1 in unlabelled files), `index` [B] and `group` [B].
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch.utils.data import Dataset

from datamodules.base import SplitFilesDataModule
from text.choices import choose_options
from text.files import (
    DataFormatError,
    file_digest,
    load_json,
    read_json_lines,
    write_json_lines,
)
from text.info import DataInfo
from text.tokens import cached

log = logging.getLogger(__name__)
CACHE_FORMAT = 1
UNLABELLED = -1
MASKS_PER_OTHER_BLANK = 4  # an idiom's four characters
OFFICIAL_BLANK = re.compile(r"#idiom\d{6}#")
FEWCLUE_BLANK = "#idiom#"


@dataclass
class C3Question:
    id: int | str       # the file's question id (CLUE's test files), else the question's number in the split
    passage: str
    question: str
    options: list[str]
    answer: int         # position of the answer among the options; UNLABELLED when the file has none
    group: int          # every question is its own group


@dataclass
class Blank:
    key: str | int      # the blank's marker (official layout) or the line's id (FewCLUE)
    group: int          # the line: blanks of one line share the candidates and have distinct answers
    pieces: list[str]   # the passage cut at its blanks
    position: int       # this blank lies between pieces[position] and pieces[position + 1]
    candidates: list[str]
    answer: int


class ChoiceSequences(Dataset):
    """Per question: the token ids of each option's sequence, the answer, the question's group."""

    def __init__(self, options: list[list[list[int]]], labels: list[int], groups: list[int]):
        self.options, self.labels, self.groups = options, labels, groups

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.options[i], self.labels[i], i, self.groups[i]


def is_text_list(value, min_length: int = 1, max_length: int | None = None) -> bool:
    return (isinstance(value, list) and min_length <= len(value) <= (max_length or len(value))
            and all(isinstance(v, str) and v.strip() for v in value))


def read_c3(path: Path, labelled: bool, first_number: int = 0, max_options: int = 4) -> list[C3Question]:
    """The questions of one C3 file, numbered from `first_number`; a malformed entry raises DataFormatError
    naming the file, the document and the question (0-based)."""
    documents = load_json(path)
    if not isinstance(documents, list):
        raise DataFormatError(f"{path}: expected a JSON list of [passage sentences, questions, id] documents")
    questions = []
    for d, document in enumerate(documents):
        where = f"{path}: document {d}"
        if not (isinstance(document, list) and len(document) == 3 and is_text_list(document[0])
                and isinstance(document[1], list) and document[1]):
            raise DataFormatError(f"{where}: expected [passage sentences, [questions], id], got {str(document)[:120]!r}")
        passage = "\n".join(document[0])
        for q, entry in enumerate(document[1]):
            question = c3_question(entry, f"{where} question {q}", labelled, max_options)
            questions.append(C3Question(entry.get("id", first_number + len(questions)), passage, *question,
                                        group=first_number + len(questions)))
    return questions


def c3_question(entry, where: str, labelled: bool, max_options: int) -> tuple[str, list[str], int]:
    """(question, options, answer position) of one C3 question entry."""
    if not (isinstance(entry, dict) and isinstance(entry.get("question"), str)
            and is_text_list(entry.get("choice"), 2, max_options)):
        raise DataFormatError(f"{where}: expected {{'question': str, 'choice': [2-{max_options} options], "
                              f"'answer': one of them}}, got {str(entry)[:160]!r}")
    options = entry["choice"]
    if "answer" not in entry:
        if labelled:
            raise DataFormatError(f"{where}: no 'answer' (an unlabelled test file needs data.test_labelled=false)")
        return entry["question"], options, UNLABELLED
    if entry["answer"] not in options:
        raise DataFormatError(f"{where}: answer {entry['answer']!r} is not among the options {options}")
    return entry["question"], options, options.index(entry["answer"])


def read_official_chid(path: Path, answers: dict | None, num_candidates: int, distinct: bool) -> list[Blank]:
    """Every blank of an official CHID file; `answers` maps each #idiomNNNNNN# to its candidate index."""
    blanks = []
    for group, (number, record) in enumerate(read_json_lines(path)):
        where = f"{path}:{number}"
        if not (is_text_list(record.get("candidates"), num_candidates, num_candidates)
                and isinstance(record.get("content"), list) and record["content"]
                and all(isinstance(c, str) for c in record["content"])):
            raise DataFormatError(f"{where}: expected {{'candidates': [{num_candidates} idioms], 'content': "
                                  f"[passages with #idiomNNNNNN# blanks]}}, got {str(record)[:160]!r}")
        line_blanks = []
        for passage in record["content"]:
            keys, pieces = OFFICIAL_BLANK.findall(passage), OFFICIAL_BLANK.split(passage)
            if not keys:
                raise DataFormatError(f"{where}: a passage has no #idiomNNNNNN# blank: {passage[:80]!r}")
            for position, key in enumerate(keys):
                answer = official_answer(answers, key, where, num_candidates)
                line_blanks.append(Blank(key, group, pieces, position, record["candidates"], answer))
        check_distinct(line_blanks, where, distinct)
        blanks.extend(line_blanks)
    return blanks


def official_answer(answers: dict | None, key: str, where: str, num_candidates: int) -> int:
    if answers is None:
        return UNLABELLED
    answer = answers.get(key)
    if not isinstance(answer, int) or not 0 <= answer < num_candidates:
        raise DataFormatError(f"{where}: blank {key} has no answer in 0..{num_candidates - 1} in the answer file "
                              f"(got {answer!r})")
    return answer


def check_distinct(blanks: list[Blank], where: str, distinct: bool) -> None:
    labelled = [b.answer for b in blanks if b.answer != UNLABELLED]
    if distinct and len(set(labelled)) < len(labelled):
        raise DataFormatError(f"{where}: blanks sharing the candidates have repeated answers {labelled}; "
                              f"set data.distinct_answers=false (and task.hungarian=false) for such data")


def read_fewclue_chid(path: Path, labelled: bool, num_candidates: int) -> list[Blank]:
    """FewCLUE's chid: one #idiom# blank per line, its candidates and (when labelled) its answer index."""
    blanks = []
    for group, (number, record) in enumerate(read_json_lines(path)):
        content, answer = record.get("content"), record.get("answer", UNLABELLED)
        if not (is_text_list(record.get("candidates"), num_candidates, num_candidates) and isinstance(content, str)
                and content.count(FEWCLUE_BLANK) == 1 and "id" in record):
            raise DataFormatError(f"{path}:{number}: expected {{'id', 'candidates': [{num_candidates} idioms], "
                                  f"'content': a passage with one {FEWCLUE_BLANK} blank, 'answer'}}, "
                                  f"got {str(record)[:160]!r}")
        if labelled and not (isinstance(answer, int) and 0 <= answer < num_candidates):
            raise DataFormatError(f"{path}:{number}: 'answer' must be a candidate index 0..{num_candidates - 1}, "
                                  f"got {answer!r}")
        blanks.append(Blank(record["id"], group, content.split(FEWCLUE_BLANK), 0, record["candidates"],
                            answer if labelled else UNLABELLED))
    return blanks


def token_ids(tokenizer, texts: Iterable[str]) -> dict[str, list[int]]:
    """Token ids without special tokens of each distinct text, tokenized in one batch."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return {}
    return dict(zip(unique, tokenizer(unique, add_special_tokens=False, verbose=False)["input_ids"]))


def pair_template(tokenizer) -> tuple[list[int], list[int], list[int]]:
    """The special tokens a tokenizer puts before, between and after the two texts of a pair:
    ([CLS]), ([SEP]), ([SEP]) for BERT, (<s>), (</s> </s>), (</s>) for XLM-R."""
    ids = tokenizer(tokenizer.mask_token, tokenizer.mask_token)["input_ids"]
    first, second = (i for i, token in enumerate(ids) if token == tokenizer.mask_token_id)
    return ids[:first], ids[first + 1:second], ids[second + 1:]


def join_pair(template: tuple[list[int], list[int], list[int]], first: list[int], second: list[int]) -> list[int]:
    before, between, after = template
    return before + first + between + second + after


def cut_in_turn(budget: int, *parts: list[int]) -> list[list[int]]:
    """Cut the parts from their ends, the first part first, until their total length is at most `budget`."""
    excess, out = sum(map(len, parts)) - budget, []
    for part in parts:
        cut = min(max(excess, 0), len(part))
        out.append(part[:len(part) - cut])
        excess -= cut
    return out


def centred(left: list[int], right: list[int], budget: int) -> tuple[list[int], list[int]]:
    """The end of `left` and the start of `right`, at most `budget` tokens together, as even as the sides allow."""
    keep_left = min(len(left), max(budget // 2, budget - len(right)))
    keep_right = min(len(right), budget - keep_left)
    return left[len(left) - keep_left:], right[:keep_right]


def vocabulary_token(tokenizer, tokens: Sequence[str]) -> int:
    """The id of the first of `tokens` that the tokenizer's vocabulary holds as one token."""
    for token in tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and token_id != tokenizer.unk_token_id:
            return token_id
    raise ValueError(f"none of data.blank_marker={list(tokens)} is one token of the {type(tokenizer).__name__} "
                     f"vocabulary; add a token it has (a rare symbol, or an unused token)")




class MultipleChoiceDataModule(SplitFilesDataModule):
    """What C3 and CHID share: each question is a list of option sequences, and predictions are decided per
    question (or per group of blanks, `task.hungarian`) and written in the CLUE submission format.

    Subclasses set `num_choices` (and `distinct_answers` when questions of a group have distinct answers) and
    implement `read_split` (-> items with .answer and .group), `encode(items)` (-> per item, the token ids of
    each option) and `write_split(items, choices, folder, with_gold)`.
    """

    kinds = ("choices",)
    num_choices: int
    distinct_answers = False
    leaderboard_split = "test"

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.name, num_choices=self.num_choices, distinct_answers=self.distinct_answers)

    def predict_dataloader(self):
        return self.loader(self.leaderboard_split)

    def encode(self, items: list) -> list[list[list[int]]]:
        raise NotImplementedError

    def cache_key(self, split: str) -> dict:
        return {"data": self.name, "files": [file_digest(p) for p in self.files_of(split)],
                "labelled": self.labelled(split), "limit": self.limit_of(split),
                "max_length": self.max_length, "prefix": self.text_prefix}

    def tokenize_split(self, split: str) -> ChoiceSequences:
        def build():
            items = self.read_split(split)
            return {"options": self.encode(items), "labels": [item.answer for item in items],
                    "groups": [item.group for item in items]}
        return ChoiceSequences(**cached(self.cache_dir, self.cache_key(split), self.tokenizer, build))

    def rows(self, items) -> tuple[list[dict], dict]:
        """Every existing option of the batch's questions is a row; `choice_mask` places them."""
        options, labels, indices, groups = zip(*items)
        counts = torch.tensor([len(item) for item in options])
        return [{"input_ids": seq} for item in options for seq in item], {
            "choice_mask": torch.arange(self.num_choices) < counts[:, None], "labels": torch.tensor(labels),
            "index": torch.tensor(indices), "group": torch.tensor(groups)}

    def write_predictions(self, split: str, predictions: list[dict], folder: Path) -> list[Path]:
        """Decide each question from the task's per-example log-probabilities (by groups when the task's
        `hungarian` is on) and write the split's submission file: the leaderboard split in `folder`, valid
        in `folder/dev`, any other split in `folder/<split>`; files off the leaderboard carry the gold answer."""
        unique = {p["index"]: p for p in predictions}  # a distributed sampler pads with repeated examples
        items = self.read_split(split)
        if sorted(unique) != list(range(len(items))):
            raise ValueError(f"predictions of the {split} split cover {len(unique)} of its {len(items)} examples")
        ordered = [unique[i] for i in range(len(items))]
        choices = choose_options(torch.tensor([p["log_probs"] for p in ordered]),
                                 torch.tensor([p["group"] for p in ordered]), ordered[0]["hungarian"])
        target = Path(folder) / {self.leaderboard_split: "", "valid": "dev"}.get(split, split)
        target.mkdir(parents=True, exist_ok=True)
        return self.write_split(items, choices.tolist(), target, with_gold=split != self.leaderboard_split)

    def write_split(self, items: list, choices: list[int], folder: Path, with_gold: bool) -> list[Path]:
        raise NotImplementedError



class C3DataModule(MultipleChoiceDataModule):
    """C3 (kexue.fm/archives/8739): every split is the questions of its d file, then of its m file.

    Args:
        root: the folder of the files; `files` maps each split to its list of files (relative to root).
        test_labelled: the nlpdata/c3 release has the test answers (true); CLUE's test1.1.json has none.
        max_length: tokens per (passage, question, option) sequence, special tokens included.
    Predictions: `c311_predict.json`, lines {"id": question id, "label": option index} (CLUE's format; the
    id is the file's question id, or the question's number in the split when the file has none, as in the
    nlpdata release, whose test set is not CLUE 1.1's); valid lines also carry "gold".
    """

    num_choices = 4
    submission_file = "c311_predict.json"

    def __init__(self, name: str, root: str, files: dict[str, Sequence[str]], source: str, test_labelled: bool = True,
                 max_length: int = 256, batch_size: int = 16, **common):
        paths = {split: [Path(root) / f for f in ([names] if isinstance(names, str) else names)]
                 for split, names in files.items()}
        super().__init__(name=name, paths=paths, source=source, max_length=max_length, batch_size=batch_size, **common)
        self.test_labelled = test_labelled

    def read_split(self, split: str) -> list[C3Question]:
        questions = []
        for path in self.files_of(split):
            questions += read_c3(path, self.labelled(split), first_number=len(questions), max_options=self.num_choices)
        return self.limit(split, questions)

    def encode(self, questions: list[C3Question]) -> list[list[list[int]]]:
        ids = token_ids(self.tokenizer, [self.text_prefix + q.passage for q in questions]
                        + [text for q in questions for text in [q.question, *q.options]])
        template, sep = pair_template(self.tokenizer), [self.tokenizer.sep_token_id]
        budget = self.max_length - sum(map(len, template)) - len(sep)
        encoded = []
        for q in questions:
            passage, question = ids[self.text_prefix + q.passage], ids[q.question]
            encoded.append([])
            for option in q.options:
                p, q_ids, o = cut_in_turn(budget, passage, question, ids[option])
                encoded[-1].append(join_pair(template, p, q_ids + sep + o))
        return encoded

    def write_split(self, questions: list[C3Question], choices: list[int], folder: Path, with_gold: bool) -> list[Path]:
        rows = ({"id": q.id, "label": choice, **({"gold": q.answer} if with_gold else {})}
                for q, choice in zip(questions, choices))
        return [write_json_lines(folder / self.submission_file, rows)]


class ChIDDataModule(MultipleChoiceDataModule):
    """CHID (kexue.fm/archives/8739) in the official layout (`format: clue`) or FewCLUE's (`format: fewclue`).

    Args:
        format: which of `layouts` to read.
        layouts: per format, {root, files: split -> file, answers: split -> answer file (official layout),
            test_labelled, source}. FewCLUE's `submission` split is its unlabelled test.json.
        distinct_answers: the answers of blanks sharing a candidate list are distinct (checked on the gold
            answers); the task reads it from `info` (task=multiple_choice: its `hungarian` default).
        blank_marker: the token that stands for the blank being filled: the first the vocabulary holds.
        max_length: tokens per (candidate, context) sequence, special tokens included (the post: 64).
    Predictions: official layout `chid11_predict.json`, one JSON object {"#idiomNNNNNN#": index}, valid with
    the gold answers in `chid11_answer.json` beside it; FewCLUE `chidf_predict.json`, lines {"id", "answer"},
    plus "gold" off the leaderboard split.
    """

    NUM_CANDIDATES = {"clue": 10, "fewclue": 7}
    SUBMISSION_FILES = {"clue": "chid11_predict.json", "fewclue": "chidf_predict.json"}

    def __init__(self, name: str, format: str, layouts: dict[str, dict], distinct_answers: bool = True,
                 blank_marker: Sequence[str] = ("[unused1]", "※"), max_length: int = 64, batch_size: int = 16,
                 **common):
        if format not in self.NUM_CANDIDATES or format not in layouts:
            raise ValueError(f"data.format must be one of {sorted(set(self.NUM_CANDIDATES) & set(layouts))}, "
                             f"got {format!r}")
        layout = layouts[format]
        root, answers = Path(layout["root"]), dict(layout.get("answers") or {})
        paths = {split: [root / file] + ([root / answers[split]] if split in answers else [])
                 for split, file in layout["files"].items()}
        super().__init__(name=name, paths=paths, source=layout["source"], max_length=max_length,
                         batch_size=batch_size, **common)
        self.format, self.answer_splits = format, set(answers)
        self.test_labelled = bool(layout.get("test_labelled", False))
        if format == "clue":
            unanswered = [s for s in paths if self.labelled(s) and s not in answers]
            if unanswered:
                raise ValueError(f"data.layouts.clue.answers names no answer file for the labelled split(s) "
                                 f"{unanswered}")
        self.num_choices = self.NUM_CANDIDATES[format]
        self.distinct_answers, self.blank_marker = distinct_answers, list(blank_marker)
        self.prediction_splits = tuple(s for s in ("valid", "test", "submission") if s in paths)
        self.leaderboard_split = "submission" if "submission" in paths else "test"

    def read_split(self, split: str) -> list[Blank]:
        files = self.files_of(split)
        if self.format == "fewclue":
            return self.limit(split, read_fewclue_chid(files[0], self.labelled(split), self.num_choices))
        answers = load_json(files[1]) if split in self.answer_splits and self.labelled(split) else None
        if answers is not None and not isinstance(answers, dict):
            raise DataFormatError(f"{files[1]}: expected a JSON object {{'#idiomNNNNNN#': answer index}}")
        return self.limit(split, read_official_chid(files[0], answers, self.num_choices, self.distinct_answers))

    def cache_key(self, split: str) -> dict:
        return dict(super().cache_key(split), format=self.format, marker=self.blank_marker)

    def encode(self, blanks: list[Blank]) -> list[list[list[int]]]:
        ids = token_ids(self.tokenizer, [piece for b in blanks for piece in b.pieces]
                        + [self.text_prefix + c for b in blanks for c in b.candidates])
        template = pair_template(self.tokenizer)
        marker = vocabulary_token(self.tokenizer, self.blank_marker)
        masks = [self.tokenizer.mask_token_id] * MASKS_PER_OTHER_BLANK
        encoded = []
        for b in blanks:
            candidates = [ids[self.text_prefix + c] for c in b.candidates]
            budget = max(self.max_length - sum(map(len, template)) - max(map(len, candidates)) - 1, 0)
            left = self.with_masks([ids[p] for p in b.pieces[:b.position + 1]], masks)
            right = self.with_masks([ids[p] for p in b.pieces[b.position + 1:]], masks)
            left, right = centred(left, right, budget)
            encoded.append([join_pair(template, c, left + [marker] + right) for c in candidates])
        return encoded

    @staticmethod
    def with_masks(pieces: list[list[int]], masks: list[int]) -> list[int]:
        """The pieces joined by the mask tokens of the blanks between them."""
        out = list(pieces[0])
        for piece in pieces[1:]:
            out += masks + piece
        return out

    def write_split(self, blanks: list[Blank], choices: list[int], folder: Path, with_gold: bool) -> list[Path]:
        path = folder / self.SUBMISSION_FILES[self.format]
        if self.format == "fewclue":
            rows = ({"id": b.key, "answer": choice, **({"gold": b.answer} if with_gold else {})}
                    for b, choice in zip(blanks, choices))
            return [write_json_lines(path, rows)]
        written = [write_object(path, {b.key: choice for b, choice in zip(blanks, choices)})]
        if with_gold:
            written.append(write_object(folder / "chid11_answer.json", {b.key: b.answer for b in blanks}))
        return written


def write_object(path: Path, mapping: dict) -> Path:
    path.write_text(json.dumps(mapping, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path
