"""Tokenize a split once and keep the token ids on disk, keyed by file content, tokenizer and max length."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of everything that decides the token ids: class, vocabulary, normalizer and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None), state.pop("padding", None)  # call settings, changed by every call
        state = json.dumps(state, sort_keys=True)
    else:
        state = json.dumps(sorted(tokenizer.get_vocab().items()))
    state += type(tokenizer).__name__ + json.dumps(tokenizer.special_tokens_map, sort_keys=True)
    return hashlib.sha256(state.encode("utf-8")).hexdigest()[:16]


def tokenize(tokenizer, texts: Sequence[str], max_length: int, prefix: str = "", chunk: int = 8192) -> list[list[int]]:
    ids: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        batch = [prefix + t for t in texts[start:start + chunk]]
        ids.extend(tokenizer(batch, max_length=max_length, truncation=True)["input_ids"])
    return ids


def cached(cache_dir: str | Path | None, key: dict, tokenizer, build: Callable[[], dict]) -> dict:
    """`build()` (token ids and the like: lists, ints, tensors), kept in `cache_dir` under a digest of `key`
    and the tokenizer, so a split is tokenized once per file content, tokenizer and settings."""
    if cache_dir is None:
        return build()
    full_key = dict(key, tokenizer=tokenizer_fingerprint(tokenizer), format=CACHE_FORMAT)
    digest = hashlib.sha256(json.dumps(full_key, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"{digest}.pt"
    if path.is_file():
        log.info("token ids from cache %s", path)
        return torch.load(path, weights_only=True)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(value, tmp)
    os.replace(tmp, path)  # atomic: parallel runs never read a half-written cache file
    return value


def cached_token_ids(cache_dir: str | Path | None, key: dict, columns: dict[str, Sequence[str]], tokenizer,
                     max_length: int, prefix: str = "") -> dict[str, list[list[int]]]:
    """Token ids of each text column, loaded from `cache_dir` when `key` (plus the tokenizer) was seen before."""
    def build():
        return {name: tokenize(tokenizer, texts, max_length, prefix) for name, texts in columns.items()}

    return cached(cache_dir, dict(key, max_length=max_length, prefix=prefix, columns=sorted(columns)), tokenizer,
                  build)
