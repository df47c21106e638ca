"""Dialogues as DialoGPT samples (kexue.fm/archives/7718): LCCC's character tokenization undone, turns joined
by [SEP] after a leading [CLS] with alternating segment ids, and the prompt a reply is generated from.
Shared by the dialogue data (training samples, datamodules/lccc.py) and task (generation) modules."""
from __future__ import annotations

import re

from text.padding import IGNORE_INDEX
from text.tokens import tokenize

LATIN_WORD = re.compile(r"[A-Za-z0-9]{2,}")


def join_characters(text: str) -> str:
    """Undo LCCC's character tokenization: drop the spaces between tokens.

    "我 最 近 吃 了 3 1 个" → "我最近吃了31个". LCCC separates every character, Latin letters included
    ("伤 心 p l u s" → "伤心plus"), so the spaces between Latin words of the original text are not
    recoverable. A space is kept only between two tokens that are both Latin words of two or more letters
    or digits, which text that was never character-tokenized (or a WordPiece decode, "hello world")
    still has.
    """
    tokens = text.split()
    out = tokens[:1]
    for previous, token in zip(tokens, tokens[1:]):
        if LATIN_WORD.fullmatch(previous) and LATIN_WORD.fullmatch(token):
            out.append(" ")
        out.append(token)
    return "".join(out)


def build_sample(turns: list[list[int]], cls_id: int, sep_id: int, max_length: int, keep_turns: int = 2,
                 predict_first_turn: bool = True) -> dict[str, list[int]]:
    """input_ids, token_type_ids and labels of a dialogue (layout in the module docstring).

    `turns`: each turn's token ids, without special tokens. When [CLS] + the turns with their [SEP]
    exceed `max_length`, whole leading turns are dropped first, keeping at least the last `keep_turns`;
    if those are still too long, the longest turn loses its last token, repeatedly (longest-first
    truncation; every kept turn keeps its [SEP]). Segment ids count from the first turn kept: turn i of
    the sample has segment i mod 2.
    """
    turns = list(turns)
    while 1 + sum(len(t) + 1 for t in turns) > max_length and len(turns) > keep_turns:
        turns.pop(0)
    excess = 1 + sum(len(t) + 1 for t in turns) - max_length
    while excess > 0:
        longest = max(range(len(turns)), key=lambda i: len(turns[i]))
        if not turns[longest]:
            raise ValueError(f"max_length={max_length} cannot hold [CLS] and {len(turns)} turns with their [SEP]")
        turns[longest] = turns[longest][:-1]
        excess -= 1
    input_ids, token_type_ids, labels = [cls_id], [0], [IGNORE_INDEX]
    for i, turn in enumerate(turns):
        ids = turn + [sep_id]
        input_ids += ids
        token_type_ids += [i % 2] * len(ids)
        labels += ids if i > 0 or predict_first_turn else [IGNORE_INDEX] * len(ids)
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "labels": labels}


def turn_contents(token_ids: list[list[int]]) -> list[list[int]]:
    """Each turn tokenized on its own ([CLS] … [SEP], cut to max_length) without its [CLS] and [SEP]."""
    return [ids[1:-1] for ids in token_ids]


def prompt_of(turns: list[list[int]], cls_id: int, sep_id: int, max_length: int) -> tuple[list[int], list[int], int]:
    """The context a reply is generated from: [CLS] h₁ [SEP] … hₙ [SEP], built like a training sample
    (leading turns dropped to fit `max_length`, keeping at least the last one).

    `turns`: token ids of each turn without special tokens. Returns input_ids, token_type_ids and the
    segment id of the reply, the speaker after the last turn kept."""
    sample = build_sample(turns, cls_id, sep_id, max_length, keep_turns=1)
    reply_segment = 1 - sample["token_type_ids"][-1] if turns else 0
    return sample["input_ids"], sample["token_type_ids"], reply_segment


def encode_prompt(tokenizer, history: list[str], max_length: int,
                  text_prefix: str = "") -> tuple[list[int], list[int], int]:
    """prompt_of the texts of `history`, normalized and tokenized as the training dialogues."""
    texts = [join_characters(text) for text in history]
    turns = turn_contents(tokenize(tokenizer, texts, max_length, text_prefix))
    return prompt_of(turns, tokenizer.cls_token_id, tokenizer.sep_token_id, max_length)


def split_turns(input_ids: list[int], sep_id: int) -> list[list[int]]:
    """[CLS] a … [SEP] b … [SEP] → [[a …], [b …]]: the turns of an encoded dialogue."""
    turns, current = [], []
    for token in input_ids[1:]:
        if token == sep_id:
            turns.append(current)
            current = []
        else:
            current.append(token)
    return turns
