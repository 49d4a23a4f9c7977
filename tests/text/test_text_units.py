"""The tokenizer, the vocabulary and the packaged config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rankmixer.text.config import GTSConfig, default_config, load_gts_config
from rankmixer.text.tokenize import tokenize
from rankmixer.text.vocab import PAD, UNK, Vocabulary


@pytest.mark.parametrize("text,words", [
    ("The food wasn't great, it's 3.5 stars!", ["The", "food", "was", "n't", "great", ",", "it", "'s", "3.5", "stars", "!"]),
    ("well-done steak -- ok", ["well-done", "steak", "-", "-", "ok"]),
    ("Cafe\u0301 au lait", ["Caf\u00e9", "au", "lait"]),  # decomposed accent composed (NFC)
    ("  \t\n", []),
])
def test_tokenize_like_the_corpus(text, words):
    assert tokenize(text) == words


def test_vocabulary_from_train_only():
    v = Vocabulary.build([["The", "food", "the"], ["food", "x"]], lowercase=True, min_freq=1)
    assert v.words == [PAD, UNK, "food", "the", "x"]  # count desc, then alphabetical
    assert v.ids(["FOOD", "unseen", "The"]) == [2, 1, 3]
    rare = Vocabulary.build([["a", "a", "b"]], lowercase=False, min_freq=2)
    assert rare.words == [PAD, UNK, "a"] and rare.ids(["A"]) == [1]


def test_vocabulary_round_trips_and_rejects_junk(tmp_path):
    v = Vocabulary.build([["crème", "brûlée"]])
    v.save(tmp_path / "v.json")
    w = Vocabulary.load(tmp_path / "v.json")
    assert w.words == v.words and w.lowercase == v.lowercase
    (tmp_path / "bad.json").write_text('{"words": ["a"]}')
    with pytest.raises(ValueError, match="bad.json"):
        Vocabulary.load(tmp_path / "bad.json")


def test_packaged_config_is_the_documented_default():
    assert default_config() == GTSConfig()


def test_config_refuses_unknown_keys_and_bad_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  encodr: cnn\n")
    with pytest.raises(ValidationError, match="encodr"):
        load_gts_config(path)
    path.write_text("model:\n  rounds: -1\n")
    with pytest.raises(ValidationError, match="rounds"):
        load_gts_config(path)
    path.write_text("train:\n  device: gpu0\n")
    with pytest.raises(ValidationError, match="not a torch device"):
        load_gts_config(path)
    path.write_text("optim: {}\n")
    with pytest.raises(ValueError, match="optim"):
        load_gts_config(path)
