"""A tiny ASTE-V2 dataset written to a temporary directory: 30 train, 8 dev and 8 test
sentences from a few templates (multi-word aspects, opinions before and after the aspect), a
tiny config, and a GTS-BiLSTM trained two epochs on them through the CLI (``trained``: the model
directory and the command's output; shared by the extraction and review-feature tests)."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from rankmixer.cli import app

ASPECTS = ["food", "service", "hot dogs", "wine list", "staff", "battery life", "screen", "price"]
GOOD = ["great", "top notch", "friendly", "excellent"]
BAD = ["awful", "too slow", "rude", "bad"]
TEMPLATES = ["the {a} was {o} .", "{o} {a} , we will come back", "i think the {a} is {o} here"]


def tag_string(words, start, length):
    return " ".join(f"{w}\\{'B' if i == start else 'I' if start < i < start + length else 'O'}"
                    for i, w in enumerate(words))


def make_pack(rng: random.Random) -> dict:
    aspect = rng.choice(ASPECTS)
    positive = rng.random() < 0.5
    opinion = rng.choice(GOOD if positive else BAD)
    text = rng.choice(TEMPLATES).format(a=aspect, o=opinion)
    words = text.split()
    a_words, o_words = aspect.split(), opinion.split()
    a_start = next(i for i in range(len(words)) if words[i:i + len(a_words)] == a_words)
    o_start = next(i for i in range(len(words)) if words[i:i + len(o_words)] == o_words)
    return {"sentence": text, "triples": [{
        "target_tags": tag_string(words, a_start, len(a_words)),
        "opinion_tags": tag_string(words, o_start, len(o_words)),
        "sentiment": "positive" if positive else "negative"}]}


@pytest.fixture(scope="session")
def tiny_aste(tmp_path_factory):
    root = tmp_path_factory.mktemp("aste") / "tiny"
    root.mkdir()
    rng = random.Random(0)
    for name, n in (("train", 30), ("dev", 8), ("test", 8)):
        (root / f"{name}.json").write_text(json.dumps([make_pack(rng) for _ in range(n)]))
    return root


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text("model:\n  embedding_dim: 16\n  lstm_dim: 8\n  cnn_dim: 16\n"
                    "train:\n  max_len: 12\n  batch_size: 8\n  lr: 0.01\n  epochs: 2\n")
    return path


@pytest.fixture(scope="session")
def trained(tiny_aste, tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gts"
    r = CliRunner().invoke(app, ["text", "train-gts", "--data", str(tiny_aste), "--encoder", "bilstm", "--out",
                                 str(out), "--seed", "3", "--epochs", "2", "-c", str(tiny_config)])
    assert r.exit_code == 0, r.output
    return out, r.output
