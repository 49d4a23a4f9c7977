"""The BIO baseline: tags from gold and back, the nearest-span pairing rule on hand-made spans,
and the tagger's loss and extraction on a batch."""

from __future__ import annotations

import math

import numpy as np
import torch

from rankmixer.text.aste import Sentence, Triplet
from rankmixer.text.batches import make_batch
from rankmixer.text.bio import BIOTagger, bio_tag_names, decode_bio, nearest_pairs, word_tags
from rankmixer.text.config import ModelSection
from rankmixer.text.grid import Extraction
from rankmixer.text.model import build_model
from rankmixer.text.scoring import gold_extraction
from rankmixer.text.vocab import Vocabulary


def names(tags, task="triplet"):
    return [bio_tag_names(task)[t] for t in tags]


def test_tags_of_a_hand_made_sentence():
    # "the hot dogs are top notch but the coffee is bad"
    #   0   1    2   3   4   5     6   7   8     9  10
    ex = Extraction((Triplet((1, 2), (4, 5), "positive"), Triplet((8, 8), (10, 10), "negative")),
                    ((1, 2), (8, 8)), ((4, 5), (10, 10)))
    assert names(word_tags(ex, 11, "triplet")) == [
        "O", "B-POS", "I-POS", "O", "B-OP", "I-OP", "O", "O", "B-NEG", "O", "B-OP"]
    assert names(word_tags(ex, 11, "pair"), "pair") == [
        "O", "B-ASP", "I-ASP", "O", "B-OP", "I-OP", "O", "O", "B-ASP", "O", "B-OP"]


def test_an_aspect_in_several_triplets_takes_the_majority_then_positive():
    ex = Extraction((Triplet((0, 0), (2, 2), "negative"), Triplet((0, 0), (4, 4), "negative"),
                     Triplet((0, 0), (6, 6), "neutral")), ((0, 0),), ((2, 2), (4, 4), (6, 6)))
    assert names(word_tags(ex, 7, "triplet"))[0] == "B-NEG"
    tie = Extraction((Triplet((0, 0), (2, 2), "negative"), Triplet((0, 0), (4, 4), "positive")),
                     ((0, 0),), ((2, 2), (4, 4)))
    assert names(word_tags(tie, 5, "triplet"))[0] == "B-POS"


def test_nearest_pairs_by_hand():
    # one aspect, opinions on both sides: the nearer wins; the far one goes to its nearest aspect
    assert nearest_pairs([(5, 5)], [(0, 0), (7, 8)]) == [((5, 5), (0, 0)), ((5, 5), (7, 8))]
    # two aspects share the one opinion; an equal distance goes to the earlier opinion
    assert nearest_pairs([(0, 1), (6, 6)], [(3, 3)]) == [((0, 1), (3, 3)), ((6, 6), (3, 3))]
    assert nearest_pairs([(3, 3)], [(1, 1), (5, 5)]) == [((3, 3), (1, 1)), ((3, 3), (5, 5))]
    assert nearest_pairs([(3, 3)], [(1, 1), (6, 6)]) == [((3, 3), (1, 1)), ((3, 3), (6, 6))]
    assert nearest_pairs([], [(1, 1)]) == [] and nearest_pairs([(1, 1)], []) == []


def test_decoding_reads_spans_sentiments_and_pairs():
    ids = {n: i for i, n in enumerate(bio_tag_names("triplet"))}
    tags = [ids[t] for t in ["B-OP", "I-OP", "B-POS", "I-NEG", "I-POS", "O", "I-OP", "B-NEU", "B-NEU"]]
    ex = decode_bio(tags, "triplet")
    # "I-NEG" inside a positive aspect: the majority keeps it positive; a stray I-OP starts a
    # span; two touching B tags are two spans (which a grid cannot hold)
    assert ex.aspects == ((2, 4), (7, 7), (8, 8))
    assert ex.opinions == ((0, 1), (6, 6))
    assert set(ex.triplets) == {Triplet((2, 4), (0, 1), "positive"), Triplet((7, 7), (6, 6), "neutral"),
                                Triplet((8, 8), (6, 6), "neutral")}


def test_gold_round_trip_when_every_aspect_has_its_nearest_opinion():
    s = Sentence(tuple("the hot dogs are top notch but the coffee is bad".split()),
                 (Triplet((1, 2), (4, 5), "positive"), Triplet((8, 8), (10, 10), "negative")))
    gold = gold_extraction(s)
    assert decode_bio(word_tags(gold, len(s.tokens), "triplet"), "triplet") == gold


def test_the_tagger_trains_on_tags_from_the_gold_grid():
    sentences = [Sentence(tuple("the food was great".split()), (Triplet((1, 1), (3, 3), "positive"),)),
                 Sentence(tuple("rude staff".split()), (Triplet((1, 1), (0, 0), "negative"),))]
    vocab = Vocabulary.build((s.tokens for s in sentences), True, 1)
    batch = make_batch(sentences, [0, 1], vocab, "triplet")
    torch.manual_seed(0)
    model = build_model(len(vocab), ModelSection(tagger="bio", embedding_dim=8, lstm_dim=4))
    assert isinstance(model, BIOTagger)
    gold = model.gold_tags(batch)
    assert names(gold[0].tolist()) == ["O", "B-POS", "O", "B-OP"]
    assert names(gold[1, :2].tolist()) == ["B-OP", "B-NEG"] and gold[1, 2:].tolist() == [-1, -1]
    # the loss is the mean cross-entropy over the real words, computed here by hand
    model.eval()
    logits = model(batch.tokens, batch.lengths, batch.mask)
    logp = torch.log_softmax(logits, -1)
    by_hand = -np.mean([logp[b, i, gold[b, i]].item() for b in range(2) for i in range(int(batch.lengths[b]))])
    assert math.isclose(model.loss(batch).item(), by_hand, rel_tol=1e-5)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    assert model.extract(batch) == [gold_extraction(s) for s in sentences]
