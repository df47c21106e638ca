"""CMRC 2018 (github.com/ymcui/cmrc2018, CLUE release) as GlobalPointer span extraction (kexue.fm/archives/8739).

Files are SQuAD-style JSON: data → paragraphs → {context, qas → {id, question, answers [{text, answer_start}]}}.
Train questions have one answer, dev questions three references (all kept: EM/F1 take the best); the test
file's answers are placeholders ("FAKE_ANSWER_1", start −1) and are ignored. Some answer_start values are a
character or two off (21 train answers, 200 dev references); an answer is placed at the occurrence of its
text nearest to answer_start (`answer_counts` counts them). 193 dev references (never the first) are
paraphrases not in the context: they stay references for EM/F1, and only the first answer gives labels.

Windows, as the post's code: contexts longer than max_length are cut into windows whose starts are
`doc_stride` = 128 context tokens apart (the step between windows, as BERT's run_squad.py doc_stride; Hugging
Face's `stride` counts the overlap instead, here max_length − question − specials − 128 tokens). Each window is
[CLS] question [SEP] context[l:r] [SEP] (the backbone tokenizer's own special tokens), with no segment ids,
as in the post's code. The label of a window is the smallest token span covering the answer, or (0, 0) =
[CLS] when the answer is not wholly inside. Train keeps every window as one example; valid and test keep
the windows of a question together, so that a batch holds all of them and the best-scoring span over the
windows is the question's answer. The "query: " prefix (e5) goes before the question.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch.utils.data import Dataset

from datamodules.base import SplitFilesDataModule
from datamodules.cluener import encode_texts, fast_tokenizer
from text.cmrc import cmrc_em, cmrc_f1
from text.files import DataFormatError, file_digest, load_json, read_text
from text.info import DataInfo
from text.tokens import cached

log = logging.getLogger(__name__)
PREDICTION_FILE = "cmrc2018_predict.json"


def line_of(raw: str, needle: str) -> int:
    """1-based line of the first occurrence of `needle` in `raw` (the file's line for an error message)."""
    return raw.count("\n", 0, max(raw.find(needle), 0)) + 1


def nearest_occurrence(context: str, text: str, start: int) -> int | None:
    """The position of `text` in `context` nearest to `start`; None when it does not occur."""
    positions, found = [], context.find(text)
    while found >= 0:
        positions.append(found)
        found = context.find(text, found + 1)
    return min(positions, key=lambda p: abs(p - start)) if positions else None


def read_cmrc2018(path: Path, labelled: bool) -> tuple[list[dict], dict[str, int]]:
    """Questions {"id", "question", "context", "answers": [(text, start)]} in file order, and the counts of
    answers "realigned" and "not_in_context" (start None: a reference for EM/F1 only). The first answer, the
    training target, must be in the context. Unlabelled (the test file): answers are left empty."""
    try:
        data = load_json(path)["data"]
    except (KeyError, TypeError) as error:
        raise DataFormatError(f"{path}: not SQuAD-style JSON {{\"data\": [...]}}: {error}") from None
    questions, counts = [], {"realigned": 0, "not_in_context": 0}
    for article in data:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                try:
                    questions.append(parse_question(qa, paragraph.get("context"), labelled, counts))
                except ValueError as error:
                    line = line_of(read_text(path), json.dumps(qa.get("id"), ensure_ascii=False))
                    raise DataFormatError(f"{path}:{line}: question {qa.get('id')!r}: {error}") from None
    return questions, counts


def parse_question(qa: dict, context, labelled: bool, counts: dict[str, int]) -> dict:
    """One question of a paragraph, its answers placed in the context (ValueError when malformed)."""
    if not isinstance(context, str) or not context or not all(isinstance(qa.get(k), str) for k in ("id", "question")):
        raise ValueError("a question needs string \"id\" and \"question\" and a non-empty context")
    answers = []
    for answer in qa.get("answers", []) if labelled else []:
        text, start = answer.get("text"), answer.get("answer_start")
        if not isinstance(text, str) or not text.strip() or type(start) is not int:
            raise ValueError(f"an answer needs a non-empty \"text\" and an integer \"answer_start\", got {answer!r}")
        if context[start:start + len(text)] != text:
            start = nearest_occurrence(context, text, start)
            counts["realigned" if start is not None else "not_in_context"] += 1
        answers.append((text, start))
    if labelled and not answers:
        raise ValueError("no answer")
    if answers and answers[0][1] is None:
        raise ValueError(f"the first answer {answers[0][0]!r}, the training target, is not in the context")
    return {"id": qa["id"], "question": qa["question"], "context": context, "answers": answers}


def pair_template(tokenizer) -> tuple[list[int], list[int], list[int]]:
    """The special tokens of a text pair: before the first text, between the two, after the second
    (BERT: [CLS] | [SEP] | [SEP]; XLM-R/e5: <s> | </s></s> | </s>)."""
    encoded = tokenizer("a", "b")
    ids, sequence = encoded["input_ids"], encoded.sequence_ids()
    first = [t for t, s in enumerate(sequence) if s == 0]
    second = [t for t, s in enumerate(sequence) if s == 1]
    before, between, after = ids[:first[0]], ids[first[-1] + 1:second[0]], ids[second[-1] + 1:]
    if not before:
        raise ValueError(f"{type(tokenizer).__name__} puts no special token before a text pair: the no-answer "
                         f"position (0, 0) = [CLS] needs one")
    return before, between, after


def covering_span(offsets: list[list[int]], start: int, end: int) -> tuple[int, int] | None:
    """The smallest token span (i, j) whose characters cover [start, end); None if no token does."""
    inside = [t for t, (s, e) in enumerate(offsets) if s >= 0 and e > start and s < end]
    return (inside[0], inside[-1]) if inside else None


def window_starts(context_length: int, capacity: int, doc_stride: int) -> list[int]:
    """First context token of each window: 0, doc_stride, 2·doc_stride, … until a window reaches the end."""
    starts = [0]
    while starts[-1] + capacity < context_length:
        starts.append(starts[-1] + doc_stride)
    return starts


class QuestionWindows(Dataset):
    """Items: the windows of one question (`per_window` false) or single windows (true, for training).

    An item is {"index": question position in the split, "windows": [{"input_ids", "offsets", "span_mask",
    "label"}], "context", "answers": [texts]}; windows are built on access, from each question's and each
    context's token ids, so only those are held in memory.
    """

    def __init__(self, questions: list[dict], question_ids: list[list[int]], contexts: dict[str, dict],
                 template: tuple[list[int], list[int], list[int]], max_length: int, doc_stride: int, per_window: bool):
        self.questions, self.question_ids, self.contexts, self.template = questions, question_ids, contexts, template
        self.max_length = max_length
        self.windows = []                    # per question: [(l, r), ...] token ranges of its context
        specials = sum(len(part) for part in template)
        for question, ids in zip(questions, question_ids):
            capacity = max_length - len(ids) - specials
            if capacity < doc_stride:
                raise ValueError(f"max_length={max_length} leaves {capacity} context tokens beside a {len(ids)}-token "
                                 f"question, fewer than doc_stride={doc_stride}: raise max_length or lower "
                                 f"doc_stride/max_question_tokens")
            length = len(contexts[question["context"]]["input_ids"])
            self.windows.append([(l, min(l + capacity, length)) for l in window_starts(length, capacity, doc_stride)])
        self.items = ([(q, [w]) for q, windows in enumerate(self.windows) for w in windows] if per_window
                      else list(enumerate(self.windows)))

    def __len__(self):
        return len(self.items)

    def answer_tokens(self, question: dict) -> tuple[int, int] | None:
        if not question["answers"]:
            return None
        text, start = question["answers"][0]
        return covering_span(self.contexts[question["context"]]["offsets"], start, start + len(text))

    def window(self, q: int, l: int, r: int) -> dict:
        question, (before, between, after) = self.questions[q], self.template
        context = self.contexts[question["context"]]
        head = before + self.question_ids[q] + between
        ids = head + context["input_ids"][l:r] + after
        offsets = [[-1, -1]] * len(head) + context["offsets"][l:r] + [[-1, -1]] * len(after)
        span_mask = ([True] + [False] * (len(head) - 1)                    # [CLS]: "no answer in this window"
                     + [s >= 0 for s, _ in context["offsets"][l:r]] + [False] * len(after))
        answer, label = self.answer_tokens(question), (0, 0)
        if answer is not None and l <= answer[0] and answer[1] < r:
            label = (answer[0] - l + len(head), answer[1] - l + len(head))
        return {"input_ids": ids, "offsets": offsets, "span_mask": span_mask, "label": label}

    def __getitem__(self, k: int) -> dict:
        q, windows = self.items[k]
        question = self.questions[q]
        return {"index": q, "windows": [self.window(q, l, r) for l, r in windows], "context": question["context"],
                "answers": [text for text, _ in question["answers"]]}


class CMRC2018DataModule(SplitFilesDataModule):
    """CMRC 2018 as GlobalPointer span extraction over windows (module docstring). `batch_size` counts windows
    in training, questions in evaluation. A batch of B questions with N windows holds `input_ids`,
    `attention_mask`, `offsets` [N, L, 2], `span_mask` [N, L] (positions an answer may start or end at, [CLS]
    included), `labels` [N, 2] (the answer's token span, (0, 0) when outside the window), `question` [N]
    (each window's question in the batch), `index` [B], and the lists `contexts` and `answers` (references).

    The test file is CLUE's unlabelled submission set: predict=true writes `cmrc2018_predict.json`, one JSON
    object {question id: answer text} (the leaderboard's file); for dev, dev/cmrc2018_predict.json in the same
    form (the official script scores it against dev.json) and dev/cmrc2018_scored.json, one line per question
    with its references and EM/F1.

    Args:
        root: the folder holding the files; `files` maps each split to its file.
        max_length: tokens per window, special tokens included (512 as the post).
        doc_stride: context tokens between the starts of consecutive windows (128 as the post).
        max_question_tokens: questions are cut to this many tokens (the "query: " prefix included).
        train_limit: keep only the first N training questions (file order).
        name, source and the loader settings: see SplitFilesDataModule.
    """

    kinds = ("spans",)
    test_labelled = False

    def __init__(self, name: str, root: str, files: dict[str, str], source: str, max_length: int = 512,
                 doc_stride: int = 128, max_question_tokens: int = 64, **common):
        super().__init__(name=name, paths={split: Path(root) / file for split, file in files.items()}, source=source,
                         max_length=max_length, **common)
        self.doc_stride, self.max_question_tokens = doc_stride, max_question_tokens
        self.answer_counts: dict[str, dict[str, int]] = {}

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.name, entity_types=("answer",), span_extraction=True)

    def read_split(self, split: str) -> list[dict]:
        questions, counts = read_cmrc2018(self.file_of(split), labelled=self.labelled(split))
        self.answer_counts[split] = counts
        return self.limit(split, questions)

    def tokenize_split(self, split: str) -> QuestionWindows:
        questions = self.read_split(split)
        counts = self.answer_counts[split]
        if any(counts.values()):
            log.info("%s %s: %d answer starts moved to the nearest occurrence of their text; %d references are not "
                     "in their context (scored as references only)", self.name, split, counts["realigned"],
                     counts["not_in_context"])
        tokenizer = fast_tokenizer(self.tokenizer)
        contexts = list(dict.fromkeys(q["context"] for q in questions))
        key = {"file": file_digest(self.file_of(split)), "limit": self.limit_of(split),
               "max_question_tokens": self.max_question_tokens, "prefix": self.text_prefix, "kind": "cmrc2018"}

        def encode():
            return {"contexts": encode_texts(tokenizer, contexts, 10 ** 6, special_tokens=False),
                    "questions": encode_texts(tokenizer, [q["question"] for q in questions], self.max_question_tokens,
                                              self.text_prefix, special_tokens=False)["input_ids"]}

        encoded = cached(self.cache_dir, key, tokenizer, encode)
        by_context = {context: {"input_ids": ids, "offsets": offsets} for context, ids, offsets in
                      zip(contexts, encoded["contexts"]["input_ids"], encoded["contexts"]["offsets"])}
        return QuestionWindows(questions, encoded["questions"], by_context, pair_template(tokenizer), self.max_length,
                               self.doc_stride, per_window=split == "train")

    def rows(self, items: list[dict]) -> tuple[list[dict], dict]:
        """Every window of the batch's questions is a row."""
        windows = [w for item in items for w in item["windows"]]
        return windows, {"labels": torch.tensor([w["label"] for w in windows], dtype=torch.long),
                         "question": torch.tensor([k for k, item in enumerate(items) for _ in item["windows"]]),
                         "index": torch.tensor([item["index"] for item in items]),
                         "contexts": [item["context"] for item in items],
                         "answers": [item["answers"] for item in items]}

    def write_predictions(self, split: str, predictions: list[dict], folder: Path) -> list[Path]:
        questions = self.read_split(split)
        found = {p["index"]: p for p in predictions}  # DDP pads with repeats: keep one per index
        missing = [i for i in range(len(questions)) if i not in found]
        if missing:
            raise ValueError(f"{self.name} {split}: no prediction for {len(missing)} questions (first: {missing[:5]})")
        answers = {q["id"]: q["context"][found[i]["start"]:found[i]["end"]] for i, q in enumerate(questions)}
        folder = folder if split == "test" else folder / "dev"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / PREDICTION_FILE
        path.write_text(json.dumps(answers, ensure_ascii=False, indent=1), encoding="utf-8")
        if split == "test":
            return [path]
        scored = folder / "cmrc2018_scored.json"
        with open(scored, "w", encoding="utf-8") as f:
            for q in questions:
                references = [text for text, _ in q["answers"]]
                prediction = answers[q["id"]]
                f.write(json.dumps({"id": q["id"], "question": q["question"], "prediction": prediction,
                                    "answers": references, "em": cmrc_em(prediction, references),
                                    "f1": round(cmrc_f1(prediction, references), 4)}, ensure_ascii=False) + "\n")
        return [path, scored]
