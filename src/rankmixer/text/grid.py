"""The grid tagging scheme (GTS, Wu et al. 2020, section 2): spans <-> a word-pair grid.

A sentence of n words gets an n x n grid; only the upper triangle (i <= j) is tagged, the rest
is :data:`IGNORE` (left out of the loss and of decoding). A cell (i, j) holds

* ``A`` when words i and j both lie in one aspect span (the diagonal cell (i, i): word i is
  part of an aspect), ``O`` likewise for an opinion span;
* for the triplet task, the sentiment ``NEG``, ``NEU`` or ``POS`` when one of the words lies in
  an aspect span and the other in an opinion span paired with it (the cell is
  (min(i, j), max(i, j))); for the pair task, ``PAIR`` instead;
* ``N`` otherwise.

Tag ids follow the reference implementation: N=0, A=1, O=2, then NEG=3, NEU=4, POS=5 (triplet)
or PAIR=3 (pair).

Decoding (the paper's Algorithm 1, as the reference code runs it): aspect spans are the
maximal runs of ``A`` on the diagonal, opinion spans the maximal runs of ``O``; an aspect span
and an opinion span form a pair when any cell between them holds a pair/sentiment tag, and the
triplet's sentiment is the most frequent sentiment tag among those cells (ties: POS, then NEU,
then NEG). Two spans of the same kind that touch (no word between them) decode as one: the
scheme cannot tell them apart, and neither can the paper's decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

import numpy as np

from rankmixer.text.aste import Span, Triplet

__all__ = ["A", "IGNORE", "N", "NEG", "NEU", "O", "PAIR", "POS", "SENTIMENT_TAGS", "TAG_NAMES", "Task",
           "Extraction", "decode", "decode_pairs", "decode_spans", "decode_triplets", "encode_grid", "num_tags"]

Task = Literal["triplet", "pair"]

IGNORE = -1
N, A, O = 0, 1, 2
NEG, NEU, POS = 3, 4, 5
PAIR = 3
SENTIMENT_TAGS = {"negative": NEG, "neutral": NEU, "positive": POS}
TAG_NAMES = {"triplet": ("N", "A", "O", "NEG", "NEU", "POS"), "pair": ("N", "A", "O", "PAIR")}
TAG_SENTIMENT = {v: k for k, v in SENTIMENT_TAGS.items()}


def num_tags(task: Task) -> int:
    return len(TAG_NAMES[task])


def encode_grid(length: int, triplets: Iterable[Triplet], task: Task = "triplet") -> np.ndarray:
    """The gold grid [length, length] (int64) of one sentence: tags on the upper triangle,
    :data:`IGNORE` below it. Spans are tagged first, then the aspect-opinion cells."""
    grid = np.full((length, length), IGNORE, dtype=np.int64)
    grid[np.triu_indices(length)] = N
    triplets = list(triplets)
    for t in triplets:
        for (l, r), tag in ((t.aspect, A), (t.opinion, O)):
            if not 0 <= l <= r < length:
                raise ValueError(f"span {(l, r)} is outside a sentence of {length} words")
            block = grid[l:r + 1, l:r + 1]
            block[np.triu_indices(r - l + 1)] = tag
    for t in triplets:
        tag = PAIR if task == "pair" else SENTIMENT_TAGS[t.sentiment]
        for i in range(t.aspect[0], t.aspect[1] + 1):
            for j in range(t.opinion[0], t.opinion[1] + 1):
                grid[min(i, j), max(i, j)] = tag
    return grid


def decode_spans(grid: np.ndarray, tag: int, length: int | None = None) -> list[Span]:
    """Maximal runs of ``tag`` on the diagonal of the first ``length`` words."""
    n = grid.shape[0] if length is None else length
    diag = np.asarray(grid).diagonal()[:n]
    spans, start = [], -1
    for i, t in enumerate(diag):
        if t == tag and start == -1:
            start = i
        elif t != tag and start != -1:
            spans.append((start, i - 1))
            start = -1
    if start != -1:
        spans.append((start, n - 1))
    return spans


def _block(grid: np.ndarray, aspect: Span, opinion: Span) -> np.ndarray:
    """The cells between an aspect and an opinion span, read from the upper triangle."""
    cells = [grid[min(i, j), max(i, j)] for i in range(aspect[0], aspect[1] + 1)
             for j in range(opinion[0], opinion[1] + 1)]
    return np.asarray(cells)


def decode_pairs(grid: np.ndarray, length: int | None = None) -> list[tuple[Span, Span]]:
    """(aspect, opinion) pairs: any cell between the spans holds a pair or sentiment tag
    (tag id >= 3 in both tasks)."""
    grid = np.asarray(grid)
    aspects, opinions = decode_spans(grid, A, length), decode_spans(grid, O, length)
    return [(a, o) for a in aspects for o in opinions if (_block(grid, a, o) >= PAIR).any()]


def decode_triplets(grid: np.ndarray, length: int | None = None) -> list[Triplet]:
    """Triplets of a triplet-task grid: each pair with the majority sentiment of its cells."""
    grid = np.asarray(grid)
    out = []
    for a, o in decode_pairs(grid, length):
        cells = _block(grid, a, o)
        counts = {tag: int((cells == tag).sum()) for tag in (POS, NEU, NEG)}
        best = max(counts, key=lambda tag: counts[tag])  # first maximum in POS, NEU, NEG order
        out.append(Triplet(a, o, TAG_SENTIMENT[best]))
    return out


@dataclass(frozen=True)
class Extraction:
    """What one sentence's grid decodes to: its triplets (a pair-task grid gives sentiment
    ``None``) and every aspect and opinion span on the diagonal, paired or not."""

    triplets: tuple[Triplet, ...]
    aspects: tuple[Span, ...]
    opinions: tuple[Span, ...]


def decode(grid: np.ndarray, length: int | None = None, task: Task = "triplet") -> Extraction:
    """All of a grid's content: triplets (or pairs) and the aspect and opinion spans."""
    grid = np.asarray(grid)
    if task == "triplet":
        triplets = tuple(decode_triplets(grid, length))
    else:
        triplets = tuple(Triplet(a, o, None) for a, o in decode_pairs(grid, length))  # type: ignore[arg-type]
    return Extraction(triplets, tuple(decode_spans(grid, A, length)), tuple(decode_spans(grid, O, length)))
