"""Right-padding of a batch's token-aligned fields into tensors: the one padder every DataModule uses."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

IGNORE_INDEX = -100  # the label of a position no loss reads: padding, and tokens that are not targets


def pad_batch(rows: Sequence[Mapping[str, Sequence]], fill: Mapping[str, int | bool], length: int | None = None
              ) -> dict[str, torch.Tensor]:
    """Each field of `fill` that the rows have, padded to `length` (None: the longest row) with its fill value,
    and `attention_mask`, 1 over each row's `input_ids` and 0 over the padding.

    A field is a list per row: token ids ([B, L] long), bools ([B, L] bool, fill False) or [start, end] pairs
    ([B, L, 2] long). E.g. fill {"input_ids": 0, "labels": -100}: labels are -100 past each row's end.
    """
    batch = {key: pad_sequence([torch.tensor(row[key], dtype=torch.bool if isinstance(value, bool) else torch.long)
                                for row in rows], batch_first=True, padding_value=value)
             for key, value in fill.items() if key in rows[0]}
    longest = batch["input_ids"].shape[1]
    if length is not None and length > longest:
        batch = {key: F.pad(value, (0, 0) * (value.ndim - 2) + (0, length - longest), value=fill[key])
                 for key, value in batch.items()}
    lengths = torch.tensor([len(row["input_ids"]) for row in rows])
    batch["attention_mask"] = (torch.arange(batch["input_ids"].shape[1]) < lengths[:, None]).long()
    return batch


def padded_length(longest: int, multiple_of: int | None, max_length: int) -> int:
    """`longest` rounded up to a multiple of `multiple_of`, but not past max_length (nor below longest): a batch
    then takes one of a few lengths (16, 32, 48, 64 for 16 and 64), so compiled or captured steps recur."""
    if not multiple_of:
        return longest
    return max(longest, min(-(-longest // multiple_of) * multiple_of, max_length))
