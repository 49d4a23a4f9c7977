"""The paper's evaluation: exact-match precision, recall and F1 over a whole split.

A predicted triplet counts as correct only when its aspect span, its opinion span (first and
last word, exactly) and its sentiment all equal a gold triplet of the same sentence; a pair
ignores the sentiment. Aspect and opinion terms are scored as spans: all spans decoded from the
grid's diagonal, paired or not, as the reference code scores them. Counts are pooled over the
split (micro-averaged) before P = correct / predicted and R = correct / gold; an empty
denominator gives 0, as in the reference code.

Gold, as in the paper's code, is what the gold grid decodes to (:func:`gold_extraction`). The
grid cannot hold overlapping spans (a word that is both aspect and opinion, nested opinions), so
a few annotated triplets (res14 test: 12 of 492 sentences) differ from their decoded gold;
``protocol="annotation"`` scores against the annotated triplets themselves instead.
"""

from __future__ import annotations

from typing import Literal, Sequence

from rankmixer.text.aste import Sentence
from rankmixer.text.grid import Extraction, Task, decode, encode_grid

__all__ = ["Protocol", "gold_extraction", "prf", "score_split"]

Protocol = Literal["paper", "annotation"]


def prf(predicted: set, gold: set) -> dict[str, float]:
    """Precision, recall and F1 of two sets of hashable items (plus the three counts)."""
    correct = len(predicted & gold)
    p = correct / len(predicted) if predicted else 0.0
    r = correct / len(gold) if gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"precision": p, "recall": r, "f1": f1, "correct": correct, "predicted": len(predicted), "gold": len(gold)}


def gold_extraction(sentence: Sentence, task: Task = "triplet", protocol: Protocol = "paper") -> Extraction:
    """The gold of one sentence: its grid decoded (``paper``) or its annotation as given."""
    if protocol == "paper":
        return decode(encode_grid(len(sentence.tokens), sentence.triplets, task), task=task)
    ts = sentence.triplets
    return Extraction(ts, tuple(sorted({t.aspect for t in ts})), tuple(sorted({t.opinion for t in ts})))


def score_split(
    predicted: Sequence[Extraction],
    gold: Sequence[Extraction],
    with_sentiment: bool = True,
) -> dict[str, dict[str, float]]:
    """``triplet`` (only when ``with_sentiment``; a pair-task model predicts no sentiment),
    ``pair``, ``aspect`` and ``opinion`` scores of one split; ``predicted[k]`` and ``gold[k]``
    belong to sentence k."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted sentences for {len(gold)} gold ones")
    names = ("triplet", "pair", "aspect", "opinion")
    sets: dict[str, tuple[set, set]] = {k: (set(), set()) for k in names}
    for k, sides in enumerate(zip(predicted, gold)):
        for side, extraction in enumerate(sides):
            for t in extraction.triplets:
                sets["triplet"][side].add((k, t.aspect, t.opinion, t.sentiment))
                sets["pair"][side].add((k, t.aspect, t.opinion))
            sets["aspect"][side].update((k, a) for a in extraction.aspects)
            sets["opinion"][side].update((k, o) for o in extraction.opinions)
    return {k: prf(*sets[k]) for k in names if with_sentiment or k != "triplet"}
