"""Deciding multiple-choice questions from per-option log-probabilities, alone or with distinct answers within
a group (CHID's blanks sharing one candidate list, kexue.fm/archives/8739). Shared by the multiple-choice data
(prediction files) and task (accuracy) modules, so both decide the same way."""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

ABSENT_SCORE = -1e9  # an absent option (−∞) in the assignment: finite, so scipy sees a feasible problem


def assign_distinct(log_probs: np.ndarray) -> np.ndarray:
    """Distinct options for m questions over the same n options, maximizing the summed log-probability:

        argmax_{σ injective} Σ_i log p_i(σ(i))      (linear_sum_assignment on the m × n matrix)

    With more questions than options (m > n) only n can be distinct; the others keep their argmax.
    """
    scores = np.nan_to_num(np.asarray(log_probs, dtype=np.float64), neginf=ABSENT_SCORE)
    choices = scores.argmax(1)
    rows, columns = linear_sum_assignment(scores, maximize=True)
    choices[rows] = columns
    return choices


def choose_options(log_probs: torch.Tensor, groups: torch.Tensor, distinct: bool) -> torch.Tensor:
    """Each question's option: the argmax of log_probs [N, C], or with `distinct` the assignment of
    `assign_distinct` within each group of questions (groups [N])."""
    choices = log_probs.argmax(-1).cpu().numpy()
    if distinct:
        groups = groups.cpu().numpy()
        order = np.argsort(groups, kind="stable")
        starts = np.unique(groups[order], return_index=True)[1]
        for rows in np.split(order, starts[1:]):
            if len(rows) > 1:
                choices[rows] = assign_distinct(log_probs[rows].float().cpu().numpy())
    return torch.as_tensor(choices, dtype=torch.long)
