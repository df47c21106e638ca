"""Every `backbone=` choice: an encoder plus the tokenizer that feeds it.

A backbone maps (input_ids, attention_mask) to the hidden states of every layer, the embedding output
first. `from_scratch` says whether the `init` group draws its weights.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
from torch import nn

from lit_models.components.nn.attention import (
    MultiHeadAttention,
    TokenMixer,
    attention_factory,
    attention_spec,
)
from lit_models.components.nn.transformer import TransformerConfig, TransformerEncoder

log = logging.getLogger(__name__)
VOCAB_DIR = Path(__file__).resolve().parent / "vocab"


class ScratchBackbone(nn.Module):
    """Our own Transformer encoder (lit_models/components/nn) over a shipped WordPiece vocabulary (bert-base-chinese).

    `attention`: the `attention=` group instantiated, a partial that builds one token-mixing layer given the
    model's sizes (lit_models/components/nn/attention.py); None: the checkpoint's attention, else softmax. The
    other architecture keys (norm, position, activation, sizes, ...) come from the backbone's YAML, see
    lit_models/components/nn/transformer.py.
    `checkpoint`: a file saved by task=masked_lm (`backbone.pt`); its weights replace the init, and the
    architecture keys must match the ones it was pretrained with.
    """

    TAKES_ATTENTION = True   # the `attention=` group builds its token mixing
    pooler = None            # no BERT pooler: task.pooling=pooler is refused

    def __init__(self, vocab: str = "bert-base-chinese", text_prefix: str = "", finetune_lr: float = 1e-3,
                 checkpoint: str | None = None, attention: Callable[..., TokenMixer] | None = None, **transformer):
        super().__init__()
        from transformers import BertTokenizer

        # from_pretrained on the folder: BertTokenizer(vocab_file=...) ignores the file in transformers 5.x
        self.tokenizer = BertTokenizer.from_pretrained(str(VOCAB_DIR / vocab))
        expected = sum(1 for _ in open(VOCAB_DIR / vocab / "vocab.txt", encoding="utf-8"))
        if len(self.tokenizer) != expected:
            raise RuntimeError(f"tokenizer loaded {len(self.tokenizer)} tokens from {VOCAB_DIR / vocab}, "
                               f"vocab.txt has {expected}")
        self.text_prefix, self.finetune_lr = text_prefix, finetune_lr
        state = torch.load(checkpoint, map_location="cpu", weights_only=True) if checkpoint is not None else {}
        if attention is None:
            attention = state.get("config", {}).get("attention", MultiHeadAttention)
        self.encoder = TransformerEncoder(TransformerConfig(
            vocab_size=len(self.tokenizer), pad_token_id=self.tokenizer.pad_token_id, attention=attention,
            **transformer))
        self.hidden_size = self.encoder.cfg.hidden_size
        self.from_scratch = checkpoint is None
        if checkpoint is not None:
            self.load_pretrained(checkpoint, state)

    def load_pretrained(self, path: str, state: dict) -> None:
        """The weights of backbone.pt. Its attention class must be ours: the multi-head variants share their
        parameters, so another one would load silently and mix tokens differently."""
        saved, ours = state.get("config", {}).get("attention"), self.encoder.cfg.attention
        saved = attention_spec(attention_factory(saved)) if saved is not None else ours
        if saved["_target_"] != ours["_target_"]:
            raise ValueError(f"backbone.checkpoint={path} was pretrained with attention {saved}, this backbone "
                             f"builds {ours}: choose the attention= it was pretrained with")
        if saved != ours:
            log.warning("backbone.checkpoint=%s was pretrained with attention %s, now %s", path, saved, ours)
        try:
            self.encoder.load_state_dict(state["encoder"])
        except RuntimeError as error:
            raise ValueError(f"backbone.checkpoint={path} does not fit this backbone's architecture keys "
                             f"(pretrained with {state.get('config')}): {error}") from None
        log.info("backbone weights from %s", path)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                causal: bool = False, segment_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
        """segment_ids: rows that pack several texts (TransformerEncoder.forward)."""
        return self.encoder(input_ids, attention_mask, token_type_ids, causal, segment_ids)


class PretrainedBackbone(nn.Module):
    """A Hugging Face encoder (AutoModel + AutoTokenizer) from a hub id or a local folder.

    `name_or_path` is used as is when it is a folder or already in the HF cache. Otherwise the hub is
    tried when reachable; with no network, `local_dir` is used instead (with a message), so a run
    never hangs on a download. `text_prefix` is prepended to every text (E5 wants "query: "). `pooling`, the
    task's: BERT's pooler is kept (as `self.pooler`) only when it is "pooler".
    """

    from_scratch = False
    TAKES_ATTENTION = False  # a pretrained checkpoint fixes its attention

    def __init__(self, name_or_path: str, local_dir: str | None = None, text_prefix: str = "",
                 finetune_lr: float = 2e-5, gradient_checkpointing: bool = False, pooling: str | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        source = resolve_pretrained(name_or_path, local_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source).train()  # from_pretrained returns eval mode: dropout off,
        # and Lightning keeps each submodule's mode, so fine-tuning would silently run without dropout
        # BERT's pooler is kept only where the task's pooling reads it (pooling=pooler): unused parameters
        # would stall DDP. It runs outside the model, on the last layer's output.
        self.pooler = getattr(self.model, "pooler", None) if pooling == "pooler" else None
        self.model.pooler = None
        if self.pooler is not None and not any(p.any() for p in self.pooler.parameters()):
            raise ValueError(f"task.pooling=pooler: the pooler of {source} is all zeros (its checkpoint ships no "
                             f"trained pooler): use cls, mean or first_last_avg")
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.text_prefix, self.finetune_lr = text_prefix, finetune_lr
        self.hidden_size = self.model.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                causal: bool = False) -> list[torch.Tensor]:
        if causal:
            raise ValueError("a pretrained encoder backbone cannot run causally; use backbone=scratch_*")
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         output_hidden_states=True)
        return list(out.hidden_states)


def reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to host:port opens within `timeout` seconds, name lookup included: getaddrinfo
    ignores socket timeouts, so the probe runs in a daemon thread that is left behind when it is late."""
    opened = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (1, on, yes, true)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_reachable(timeout: float = 2.0) -> bool:
    """The Hugging Face hub (HF_ENDPOINT, e.g. a mirror, else huggingface.co) is allowed and answers."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    return not hub_offline() and reachable(endpoint.hostname, port, timeout)


def resolve_pretrained(name_or_path: str, local_dir: str | None) -> str:
    """Where to load a pretrained model from: a folder, the HF cache, the hub, or the local fallback."""
    if Path(name_or_path).is_dir():
        return name_or_path
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        return name_or_path
    if hub_reachable():
        return name_or_path
    if local_dir and Path(local_dir).is_dir():
        log.warning("Hugging Face hub not reachable (%s): loading %s from the local folder %s",
                    "HF_HUB_OFFLINE is set" if hub_offline() else "no connection", name_or_path, local_dir)
        return local_dir
    raise FileNotFoundError(
        f"backbone {name_or_path!r} is neither a folder nor in the Hugging Face cache, the hub is not reachable, "
        f"and the local fallback backbone.local_dir={local_dir!r} does not exist. Put the model there "
        f"(for e5-small-zh: python <shared>/tools/expand_pretrained.py <shared>/models/e5-small-zh {local_dir}) or pass "
        f"backbone.name_or_path=/path/to/model")
