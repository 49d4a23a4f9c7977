"""Batching: every sentence exactly once, pools sorted by length, seeded order, padded grids."""

from __future__ import annotations

import torch

from rankmixer.text.aste import Sentence, Triplet
from rankmixer.text.batches import iterate_batches
from rankmixer.text.grid import IGNORE, POS, encode_grid
from rankmixer.text.vocab import Vocabulary

SENTENCES = [Sentence(tuple(f"w{k}" for k in range(n))) for n in (5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 3, 5)]
VOCAB = Vocabulary.build([s.tokens for s in SENTENCES])


def indices(batches):
    return [b.index for b in batches]


def test_each_sentence_once_and_seeded():
    for pool in (0, 2):
        runs = [indices(iterate_batches(SENTENCES, VOCAB, "triplet", 3, torch.Generator().manual_seed(7), pool))
                for _ in range(2)]
        assert runs[0] == runs[1]
        assert sorted(i for b in runs[0] for i in b) == list(range(len(SENTENCES)))
    other = indices(iterate_batches(SENTENCES, VOCAB, "triplet", 3, torch.Generator().manual_seed(8), 2))
    assert other != runs[0]


def test_pools_are_sorted_by_length_and_evaluation_is_in_length_order():
    batches = list(iterate_batches(SENTENCES, VOCAB, "triplet", 3, torch.Generator().manual_seed(1), pool=4))
    for b in batches:  # one pool holds all 12: every batch is a run of the sorted lengths
        lens = b.lengths.tolist()
        assert lens == sorted(lens)
    spans = sorted((min(b.lengths.tolist()), max(b.lengths.tolist())) for b in batches)
    assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:]))
    ordered = [len(SENTENCES[i].tokens) for b in iterate_batches(SENTENCES, VOCAB, "triplet", 5) for i in b.index]
    assert ordered == sorted(ordered)


def test_batch_tensors_are_padded():
    s = [Sentence(("good", "food"), (Triplet((1, 1), (0, 0), "positive"),)), Sentence(("a", "b", "c", "d"))]
    (b,) = iterate_batches(s, Vocabulary.build([x.tokens for x in s]), "triplet", 2)
    short = b.index.index(0)
    assert b.tokens.shape == (2, 4) and b.tags.shape == (2, 4, 4)
    assert b.mask[short].tolist() == [1, 1, 0, 0] and b.tokens[short, 2:].tolist() == [0, 0]
    torch.testing.assert_close(b.tags[short, :2, :2], torch.from_numpy(encode_grid(2, s[0].triplets)))
    assert b.tags[short, 0, 1] == POS and (b.tags[short, 2:, :] == IGNORE).all() and (b.tags[short, :, 2:] == IGNORE).all()
