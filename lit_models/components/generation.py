"""Decoding a causal language model one token at a time (kexue.fm/archives/7500, "根本停不下来").

An autoregressive model gives p(y_t | y_<t, x); a decoder picks y_t, appends it, and repeats until the
end token <eos> or a length limit. Here <eos> is the end-of-turn [SEP] of a dialogue (kexue.fm/archives/7718).

- greedy: y_t = argmax p(y_t | y_<t, x), deterministic (beam search with beam 1).
- top-k sampling (Fan et al. 2018): sample from the k most probable tokens, renormalized.
- top-p / nucleus sampling (Holtzman et al. 2020): sample from the smallest set of most probable tokens
  whose total probability reaches p.

Sampling uses p ∝ exp(logits / T) with temperature T. A truncated candidate set can lose <eos> and then
the decoder can never stop; post 7500's fix (from Welleck et al. 2020) is to always put <eos> back into
the top-k / top-p set, so that it keeps a non-zero probability at every step.

Every step recomputes the model on the whole sequence (no key/value cache): O(n²) forwards for n new
tokens, which is simple and fast enough for the short replies of a chit-chat model.
"""
from __future__ import annotations

from typing import Callable

import torch

# (input_ids [1, L], token_type_ids [1, L]) -> logits [V] of the token after position L - 1
NextTokenLogits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
STRATEGIES = ("greedy", "top_k", "top_p")


def top_k_filter(logits: torch.Tensor, k: int, keep_id: int | None = None) -> torch.Tensor:
    """Logits [..., V] with everything below the k-th largest set to -inf, except `keep_id` (<eos>).

    Ties with the k-th value are kept. With `keep_id`, <eos> stays a candidate however small its logit
    (kexue.fm/archives/7500, 主动添加<eos>)."""
    if k <= 0:
        raise ValueError(f"top_k must be positive, got {k}")
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    remove = logits < kth
    if keep_id is not None:
        remove[..., keep_id] = False
    return logits.masked_fill(remove, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float, keep_id: int | None = None) -> torch.Tensor:
    """Logits [..., V] outside the nucleus set to -inf, except `keep_id` (<eos>).

    The nucleus is the smallest set of most probable tokens whose probabilities sum to ≥ p: a token is
    dropped when the tokens ranked above it already reach p, so the most probable one is always kept.
    With `keep_id`, <eos> stays a candidate however small its probability (kexue.fm/archives/7500)."""
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p == 1:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs
    remove = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, mass_above >= p)
    if keep_id is not None:
        remove[..., keep_id] = False
    return logits.masked_fill(remove, float("-inf"))


def decode(next_token_logits: NextTokenLogits, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
           choose: Callable[[torch.Tensor], int], *, eos_id: int, segment_id: int, max_new_tokens: int) -> list[int]:
    """The decoding loop: append `choose(logits)` until it returns `eos_id` or `max_new_tokens` are made.

    input_ids / token_type_ids [1, L] are the prompt; every new token gets `segment_id` (the speaker of
    the reply). Returns the new token ids, ending with `eos_id` when the model stopped by itself."""
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = choose(next_token_logits(input_ids, token_type_ids).float())
        new.append(token)
        if token == eos_id:
            break
        input_ids = torch.cat([input_ids, input_ids.new_tensor([[token]])], dim=1)
        token_type_ids = torch.cat([token_type_ids, token_type_ids.new_tensor([[segment_id]])], dim=1)
    return new


def sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> int:
    """One token drawn from softmax(logits); -inf logits have probability 0."""
    return int(torch.multinomial(logits.softmax(dim=-1), 1, generator=generator))


def greedy(next_token_logits: NextTokenLogits, input_ids: torch.Tensor, token_type_ids: torch.Tensor, *,
           eos_id: int, segment_id: int, max_new_tokens: int) -> list[int]:
    """Greedy search (kexue.fm/archives/7500, 确定解码): y_t = argmax_y p(y | y_<t, x).

    Deterministic; it stops only if <eos> becomes the most probable token, so `max_new_tokens` bounds it."""
    return decode(next_token_logits, input_ids, token_type_ids, lambda logits: int(logits.argmax()),
                  eos_id=eos_id, segment_id=segment_id, max_new_tokens=max_new_tokens)


def top_k_sampling(next_token_logits: NextTokenLogits, input_ids: torch.Tensor, token_type_ids: torch.Tensor, *,
                   eos_id: int, segment_id: int, max_new_tokens: int, k: int = 40, temperature: float = 1.0,
                   generator: torch.Generator | None = None) -> list[int]:
    """Top-k sampling (kexue.fm/archives/7500, 随机解码): y_t ~ softmax(logits / T) over the k most
    probable tokens plus <eos>. k = 1 is greedy search, up to the <eos> kept beside the top token."""
    return decode(next_token_logits, input_ids, token_type_ids,
                  lambda logits: sample(top_k_filter(logits / temperature, k, eos_id), generator),
                  eos_id=eos_id, segment_id=segment_id, max_new_tokens=max_new_tokens)


def top_p_sampling(next_token_logits: NextTokenLogits, input_ids: torch.Tensor, token_type_ids: torch.Tensor, *,
                   eos_id: int, segment_id: int, max_new_tokens: int, p: float = 0.9, temperature: float = 1.0,
                   generator: torch.Generator | None = None) -> list[int]:
    """Nucleus (top-p) sampling (kexue.fm/archives/7500, Nucleus随机解码): y_t ~ softmax(logits / T) over the
    smallest set of most probable tokens whose probability sums to ≥ p, plus <eos>. p = 1 is plain sampling."""
    return decode(next_token_logits, input_ids, token_type_ids,
                  lambda logits: sample(top_p_filter(logits / temperature, p, eos_id), generator),
                  eos_id=eos_id, segment_id=segment_id, max_new_tokens=max_new_tokens)


def generate(next_token_logits: NextTokenLogits, input_ids: torch.Tensor, token_type_ids: torch.Tensor, *,
             strategy: str, eos_id: int, segment_id: int, max_new_tokens: int = 32, temperature: float = 1.0,
             top_k: int = 40, top_p: float = 0.9, generator: torch.Generator | None = None) -> list[int]:
    """Dispatch on `strategy` (greedy | top_k | top_p); temperature applies to the sampling strategies."""
    common = {"eos_id": eos_id, "segment_id": segment_id, "max_new_tokens": max_new_tokens}
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if strategy == "greedy":
        return greedy(next_token_logits, input_ids, token_type_ids, **common)
    if strategy == "top_k":
        return top_k_sampling(next_token_logits, input_ids, token_type_ids, k=top_k, temperature=temperature,
                              generator=generator, **common)
    if strategy == "top_p":
        return top_p_sampling(next_token_logits, input_ids, token_type_ids, p=top_p, temperature=temperature,
                              generator=generator, **common)
    raise ValueError(f"decoding strategy must be one of {STRATEGIES}, got {strategy!r}")
