"""Right-padding of a batch's token-aligned fields into tensors: the one padder every DataModule uses."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

IGNORE_INDEX = -100  # the label of a position no loss reads: padding, and tokens that are not targets


def pad_batch(rows: Sequence[Mapping[str, Sequence]], fill: Mapping[str, int | bool]) -> dict[str, torch.Tensor]:
    """Each field of `fill` that the rows have, padded to the longest row with its fill value, and
    `attention_mask`, 1 over each row's `input_ids` and 0 over the padding.

    A field is a list per row: token ids ([B, L] long), bools ([B, L] bool, fill False) or [start, end] pairs
    ([B, L, 2] long). E.g. fill {"input_ids": 0, "labels": -100}: labels are -100 past each row's end.
    """
    batch = {key: pad_sequence([torch.tensor(row[key], dtype=torch.bool if isinstance(value, bool) else torch.long)
                                for row in rows], batch_first=True, padding_value=value)
             for key, value in fill.items() if key in rows[0]}
    lengths = torch.tensor([len(row["input_ids"]) for row in rows])
    batch["attention_mask"] = (torch.arange(batch["input_ids"].shape[1]) < lengths[:, None]).long()
    return batch
