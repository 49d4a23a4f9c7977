"""P/R/F1 on hand-made predictions against numbers computed by hand."""

from __future__ import annotations

import pytest

from rankmixer.text.aste import Sentence, Triplet
from rankmixer.text.grid import Extraction
from rankmixer.text.scoring import gold_extraction, prf, score_split


def ext(triplets, aspects=None, opinions=None):
    return Extraction(tuple(triplets),
                      tuple(aspects if aspects is not None else sorted({t.aspect for t in triplets})),
                      tuple(opinions if opinions is not None else sorted({t.opinion for t in triplets})))


GOLD = [
    ext([Triplet((1, 2), (4, 5), "positive"), Triplet((8, 8), (10, 10), "negative")]),
    ext([Triplet((0, 0), (2, 2), "neutral")]),
    ext([Triplet((3, 3), (1, 1), "positive")]),
]
PRED = [
    # right; right pair but wrong sentiment
    ext([Triplet((1, 2), (4, 5), "positive"), Triplet((8, 8), (10, 10), "positive")]),
    # opinion span one word too long, and an aspect (5, 5) decoded without any opinion
    ext([Triplet((0, 0), (2, 3), "neutral")], aspects=[(0, 0), (5, 5)]),
    # nothing found in sentence 2
    ext([]),
]


def test_scores_by_hand():
    s = score_split(PRED, GOLD)
    # triplets: predicted 3, gold 4, correct 1 -> P 1/3, R 1/4, F1 2/7
    assert s["triplet"]["correct"] == 1 and s["triplet"]["predicted"] == 3 and s["triplet"]["gold"] == 4
    assert s["triplet"]["precision"] == pytest.approx(1 / 3)
    assert s["triplet"]["recall"] == pytest.approx(1 / 4)
    assert s["triplet"]["f1"] == pytest.approx(2 / 7)
    # pairs: correct 2 of 3 predicted, 4 gold -> P 2/3, R 1/2, F1 4/7
    assert (s["pair"]["precision"], s["pair"]["recall"], s["pair"]["f1"]) == pytest.approx((2 / 3, 1 / 2, 4 / 7))
    # aspects: predicted {(0,(1,2)), (0,(8,8)), (1,(0,0)), (1,(5,5))}, gold 4 -> 3 correct: 3/4, 3/4
    assert (s["aspect"]["precision"], s["aspect"]["recall"], s["aspect"]["f1"]) == pytest.approx((3 / 4, 3 / 4, 3 / 4))
    # opinions: predicted {(0,(4,5)), (0,(10,10)), (1,(2,3))}, gold 4 -> 2 correct: 2/3, 1/2, 4/7
    assert (s["opinion"]["precision"], s["opinion"]["recall"], s["opinion"]["f1"]) == pytest.approx((2 / 3, 1 / 2, 4 / 7))


def test_same_triplet_in_another_sentence_is_wrong():
    s = score_split([ext([]), GOLD[0]], [GOLD[0], ext([])])
    assert s["triplet"]["correct"] == 0 and s["triplet"]["f1"] == 0.0


def test_empty_denominators_give_zero():
    assert prf(set(), set()) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "correct": 0, "predicted": 0, "gold": 0}
    assert prf({1}, set())["precision"] == 0.0


def test_pair_task_has_no_triplet_score():
    assert "triplet" not in score_split(PRED, GOLD, with_sentiment=False)


def test_gold_protocols_differ_only_on_overlapping_spans():
    # word 2 is both inside the aspect (1-2) and the opinion (2-3): the grid keeps one tag
    s = Sentence(("a", "b", "c", "d"), (Triplet((1, 2), (2, 3), "positive"),))
    assert gold_extraction(s, protocol="annotation").triplets == s.triplets
    assert gold_extraction(s, protocol="paper").triplets != s.triplets
    plain = Sentence(("a", "b", "c", "d"), (Triplet((0, 1), (3, 3), "negative"),))
    assert gold_extraction(plain, protocol="paper") == gold_extraction(plain, protocol="annotation")


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="predicted sentences"):
        score_split(PRED[:2], GOLD)
