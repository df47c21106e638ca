"""The official CMRC 2018 EM/F1 of one predicted answer against its references (kexue.fm/archives/8739).

CMRC 2018 is scored as its official script (ymcui/cmrc2018, squad-style-data/cmrc2018_evaluate.py, "v5 -
special") defines it, re-implemented here from that definition:

- normalization: lowercase, strip surrounding whitespace;
- punctuation: the script's list `PUNCTUATION` (ASCII - : _ * ^ / \\ ~ ` + = and Chinese ，。：？！“”；’《》·、「」（）－～『』).
  The list also holds "……" (two characters); the script compares it with single characters, so it never
  matches and "…" is not removed. We keep that behaviour, to score as the script does;
- mixed segmentation: each Chinese character (U+4E00–U+9FA5) and each punctuation mark is a segment of its own;
  the runs of other characters between them are split into words by nltk's word_tokenize, as in the script
  (`23~28℃` without its "~" is one word `2328℃`, `Henry A. Walsh` three). One difference: the runs are
  tokenized as one line each (`preserve_line=True`), since the script's sentence splitting first needs NLTK's
  downloaded punkt tables; a run splits differently only where it holds a sentence end followed by more text;
- F1 of a prediction against one reference: with the punctuation removed from both segmentations, L = the
  length of their longest common *contiguous* run of segments (the script's `find_lcs` is the longest common
  substring), precision = L / |prediction|, recall = L / |reference|, F1 = 2PR / (P + R), 0 when L = 0;
  a question's F1 is the maximum over its references;
- EM: 1 when the prediction equals some reference once both are normalized and stripped of punctuation.
The official script prints 100 × the means; we log the means in [0, 1], like every other metric here.
"""
from __future__ import annotations

import re
from functools import lru_cache

from nltk.tokenize import word_tokenize

PUNCTUATION = frozenset(['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=',
                         '，', '。', '：', '？', '！', '“', '”', '；', '’', '《', '》', '……', '·', '、',
                         '「', '」', '（', '）', '－', '～', '『', '』'])
CHINESE_CHARACTER = re.compile(r"[\u4e00-\u9fa5]")


@lru_cache(maxsize=65536)
def latin_words(text: str) -> tuple[str, ...]:
    """nltk.word_tokenize of a run of non-Chinese text, on one line (the Penn Treebank rules: 3.14 and 1,000
    stay whole, "don't" is "do" + "n't", a final period is split off)."""
    return tuple(word_tokenize(text, preserve_line=True))


def mixed_segmentation(text: str, remove_punctuation: bool = False) -> list[str]:
    """Chinese characters and punctuation one by one, other runs as words (official CMRC 2018 definition)."""
    segments, run = [], ""
    for char in str(text).lower().strip():
        if remove_punctuation and char in PUNCTUATION:
            continue
        if CHINESE_CHARACTER.match(char) or char in PUNCTUATION:
            segments += latin_words(run)
            run = ""
            segments.append(char)
        else:
            run += char
    return segments + list(latin_words(run))


def without_punctuation(text: str) -> str:
    """Lowercased, stripped, with every character of `PUNCTUATION` removed (what EM compares)."""
    return "".join(char for char in str(text).lower().strip() if char not in PUNCTUATION)


def longest_common_run(a: list[str], b: list[str]) -> int:
    """Length of the longest contiguous run of segments that `a` and `b` share (longest common substring)."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def cmrc_f1(prediction: str, references: list[str]) -> float:
    """max over references of 2PR/(P+R), P = L/|prediction segments|, R = L/|reference segments|."""
    predicted = mixed_segmentation(prediction, remove_punctuation=True)
    scores = [0.0]
    for reference in references:
        gold = mixed_segmentation(reference, remove_punctuation=True)
        common = longest_common_run(gold, predicted)
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            scores.append(2 * precision * recall / (precision + recall))
    return max(scores)


def cmrc_em(prediction: str, references: list[str]) -> float:
    """1.0 when the prediction equals a reference up to case, surrounding whitespace and punctuation."""
    predicted = without_punctuation(prediction)
    return float(any(without_punctuation(reference) == predicted for reference in references))
