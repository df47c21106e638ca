"""LCCC (Large-scale Cleaned Chinese Conversation, github.com/thu-coai/CDial-GPT) as DialoGPT samples.

The files are JSON: a list of dialogues, each a list of at least two utterances, character-tokenized with
spaces (`"我 最 近 天 天 吃 火 锅"`). CDial-GPT's toy_data.json is an object {"train", "valid", "test"} of
such lists, named in the config as `toy_data.json#valid`.

One sample is one whole dialogue, as in kexue.fm/archives/7718 ("动手做个DialoGPT"): the turns joined
by [SEP] after a leading [CLS], each turn's segment id alternating 0/1 by speaker, and every turn
predicted by a left-to-right language model:

    input_ids       [CLS] u₁ … [SEP] v₁ … [SEP] w₁ … [SEP]
    token_type_ids    0   0  …   0    1  …   1    0  …   0
    labels          -100  u₁ …  SEP   v₁ …  SEP   w₁ …  SEP

`labels` are aligned with `input_ids` (labels[t] = input_ids[t] where token t is a target, -100 elsewhere);
the model shifts them, so position t is trained to predict token t + 1. Each turn's closing [SEP] is a
target too: it is the end-of-turn token at which generation stops. The post's model predicts the whole
dialogue, the first turn included (bojone/nezha_gpt_dialog masks only padding), and so do we by default;
`predict_first_turn=false` trains on replies only, the first turn being context.
"""
from __future__ import annotations

import json
from pathlib import Path

from datamodules.base import SplitFilesDataModule
from text.dialogue import build_sample, join_characters, turn_contents
from text.files import DataFormatError, file_digest, load_json
from text.info import DataInfo
from text.tokens import cached_token_ids


def read_dialogues(path: Path, key: str | None = None) -> list[list[str]]:
    """The dialogues of `path` with their characters joined: the JSON list, or entry `key` of a JSON object.

    Raises DataFormatError naming the file (and line for invalid JSON, the 0-based index for a dialogue
    that is not a list of at least two non-empty strings)."""
    data = load_json(path)
    where = str(path)
    if isinstance(data, dict):
        if key not in data:
            raise DataFormatError(f"{path}: a JSON object of {sorted(data)}; name one as {path.name}#<key>"
                                  + (f", not #{key}" if key else ""))
        data, where = data[key], f"{path} [{key!r}]"
    elif key is not None:
        raise DataFormatError(f"{path}: #{key} given, but the file holds a {type(data).__name__}, not a JSON object")
    if not isinstance(data, list):
        raise DataFormatError(f"{where}: expected a JSON list of dialogues, got {type(data).__name__}")
    dialogues = []
    for index, dialogue in enumerate(data):
        if not (isinstance(dialogue, list) and len(dialogue) >= 2
                and all(isinstance(turn, str) and turn.strip() for turn in dialogue)):
            raise DataFormatError(f"{where}: dialogue {index} (0-based): expected a list of at least 2 non-empty "
                                  f"strings, got {json.dumps(dialogue, ensure_ascii=False)[:120]}")
        dialogues.append([join_characters(turn) for turn in dialogue])
    return dialogues


class LCCCDataModule(SplitFilesDataModule):
    """Multi-turn dialogues as causal-LM samples (kexue.fm/archives/7718), one dialogue per sample.

    A batch holds `input_ids`, `token_type_ids`, `attention_mask` and `labels`, each [B, L], padded to the
    longest dialogue of the batch (layout and labels in the module docstring). The predict split is test.

    Args:
        root: the folder holding the files; `files` entries are relative to it (or absolute).
        files: split name (train/valid/test) -> JSON file, `file#key` for an entry of a JSON object.
        max_length: tokens per sample, [CLS] and every [SEP] included (see build_sample for the truncation).
        predict_first_turn: whether the first turn of a sample is a target (the post: yes) or only context.
        train_limit: keep only the first N training dialogues (file order).
        name, source and the loader settings: see SplitFilesDataModule.
    """

    kinds = ("dialogues",)

    def __init__(self, name: str, root: str, files: dict[str, str], source: str, max_length: int = 256,
                 predict_first_turn: bool = True, **common):
        specs = {split: spec.partition("#") for split, spec in files.items()}
        super().__init__(name=name, paths={split: Path(root) / file for split, (file, _, _) in specs.items()},
                         source=source, max_length=max_length, **common)
        self.keys = {split: key or None for split, (_, _, key) in specs.items()}
        self.predict_first_turn = predict_first_turn

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.name, max_length=self.max_length)

    def read_split(self, split: str) -> list[list[str]]:
        return self.limit(split, read_dialogues(self.file_of(split), self.keys[split]))

    def tokenize_split(self, split: str) -> list[dict[str, list[int]]]:
        """Every turn is tokenized once (cached); samples are assembled from the cached turns."""
        dialogues = self.read_split(split)
        key = {"file": file_digest(self.file_of(split)), "key": self.keys[split], "limit": self.limit_of(split)}
        turns = [turn for dialogue in dialogues for turn in dialogue]
        ids = cached_token_ids(self.cache_dir, key, {"turns": turns}, self.tokenizer, self.max_length,
                               self.text_prefix)["turns"]
        contents, samples, start = turn_contents(ids), [], 0
        for dialogue in dialogues:
            samples.append(build_sample(contents[start:start + len(dialogue)], self.tokenizer.cls_token_id,
                                        self.tokenizer.sep_token_id, self.max_length,
                                        predict_first_turn=self.predict_first_turn))
            start += len(dialogue)
        return samples
