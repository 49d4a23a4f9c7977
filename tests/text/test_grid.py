"""The grid tagging scheme on hand-made sentences: the grids are written out by hand (not
produced by the encoder under test), and decoding gives back the spans and triplets."""

from __future__ import annotations

import numpy as np
import pytest

from rankmixer.text.aste import Triplet
from rankmixer.text.grid import (A, IGNORE, NEG, NEU, O, PAIR, POS, N, decode, decode_pairs, decode_spans,
                                 decode_triplets, encode_grid)

# "The hot dogs are top notch but the coffee is bad" (words 0..10)
#   aspects: hot dogs (1-2), coffee (8); opinions: top notch (4-5), bad (10)
HOT_DOGS = [Triplet((1, 2), (4, 5), "positive"), Triplet((8, 8), (10, 10), "negative")]


def hand_grid(n: int, cells: dict[tuple[int, int], int]) -> np.ndarray:
    g = np.full((n, n), IGNORE)
    for i in range(n):
        for j in range(i, n):
            g[i, j] = N
    for (i, j), tag in cells.items():
        g[i, j] = tag
    return g


def test_multi_word_spans_encode_as_written_by_hand():
    expected = hand_grid(11, {
        (1, 1): A, (1, 2): A, (2, 2): A,              # hot dogs
        (4, 4): O, (4, 5): O, (5, 5): O,              # top notch
        (8, 8): A, (10, 10): O,                       # coffee, bad
        (1, 4): POS, (1, 5): POS, (2, 4): POS, (2, 5): POS,
        (8, 10): NEG,
    })
    np.testing.assert_array_equal(encode_grid(11, HOT_DOGS, "triplet"), expected)
    pair = expected.copy()
    pair[pair >= NEG] = PAIR
    np.testing.assert_array_equal(encode_grid(11, HOT_DOGS, "pair"), pair)


def test_opinion_before_aspect_uses_the_upper_triangle():
    # "Great food" : opinion 0, aspect 1
    g = encode_grid(2, [Triplet((1, 1), (0, 0), "positive")])
    np.testing.assert_array_equal(g, [[O, POS], [IGNORE, A]])


@pytest.mark.parametrize("triplets,n", [
    (HOT_DOGS, 11),
    # two aspects sharing one opinion: "The pasta and the wine were excellent"
    ([Triplet((1, 1), (6, 6), "positive"), Triplet((4, 4), (6, 6), "positive")], 7),
    # one aspect with two opinions of different sentiment, one-word spans everywhere
    ([Triplet((0, 0), (2, 2), "neutral"), Triplet((0, 0), (4, 4), "negative")], 5),
    # opinion before aspect, multi-word both
    ([Triplet((5, 7), (0, 1), "negative")], 9),
])
def test_round_trip(triplets, n):
    g = encode_grid(n, triplets)
    ext = decode(g)
    assert set(ext.triplets) == set(triplets)
    assert set(ext.aspects) == {t.aspect for t in triplets}
    assert set(ext.opinions) == {t.opinion for t in triplets}
    assert set(decode_pairs(encode_grid(n, triplets, "pair"))) == {(t.aspect, t.opinion) for t in triplets}


def test_shared_opinion_grid_by_hand():
    # "The pasta and the wine were excellent": both aspects point at "excellent"
    g = encode_grid(7, [Triplet((1, 1), (6, 6), "positive"), Triplet((4, 4), (6, 6), "positive")])
    np.testing.assert_array_equal(g, hand_grid(7, {(1, 1): A, (4, 4): A, (6, 6): O, (1, 6): POS, (4, 6): POS}))


def test_decode_spans_ignores_padding_beyond_length():
    g = hand_grid(6, {(0, 0): A, (1, 1): A, (4, 4): A, (5, 5): A})
    assert decode_spans(g, A) == [(0, 1), (4, 5)]
    assert decode_spans(g, A, length=5) == [(0, 1), (4, 4)]
    assert decode_spans(g, O) == []


def test_sentiment_is_the_majority_with_ties_to_positive_then_neutral():
    # aspect 0-1, opinion 3-4: four cells (0,3) (0,4) (1,3) (1,4)
    base = {(0, 0): A, (0, 1): A, (1, 1): A, (3, 3): O, (3, 4): O, (4, 4): O}
    cases = [
        ({(0, 3): NEG, (0, 4): NEG, (1, 3): NEU, (1, 4): N}, "negative"),
        ({(0, 3): NEG, (0, 4): POS}, "positive"),         # tie NEG/POS -> POS
        ({(0, 3): NEG, (1, 4): NEU}, "neutral"),          # tie NEG/NEU -> NEU
        ({(0, 3): NEU, (1, 4): POS, (1, 3): NEU}, "neutral"),
    ]
    for cells, want in cases:
        assert decode_triplets(hand_grid(5, {**base, **cells})) == [Triplet((0, 1), (3, 4), want)]


def test_spans_without_a_pair_cell_form_no_triplet():
    g = hand_grid(4, {(0, 0): A, (2, 2): O, (3, 3): A})
    ext = decode(g)
    assert ext.triplets == () and ext.aspects == ((0, 0), (3, 3)) and ext.opinions == ((2, 2),)


def test_touching_spans_of_one_kind_merge():
    """The documented limit of the scheme (and of the paper's decoder)."""
    g = encode_grid(4, [Triplet((0, 0), (3, 3), "positive"), Triplet((1, 1), (3, 3), "positive")])
    assert decode(g).aspects == ((0, 1),)


def test_span_outside_the_sentence_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        encode_grid(3, [Triplet((2, 3), (0, 0), "positive")])
