"""The ASTE-V2 reader: what it reads from a hand-written file, and its errors on bad tags."""

from __future__ import annotations

import json

import pytest

from rankmixer.text.aste import AsteFormatError, Triplet, read_aste


def tags(words, spans):
    out = []
    for i, w in enumerate(words):
        tag = "O"
        for l, r in spans:
            if i == l:
                tag = "B"
            elif l < i <= r:
                tag = "I"
        out.append(f"{w}\\{tag}")
    return " ".join(out)


def write(tmp_path, packs, name="train.json"):
    path = tmp_path / name
    path.write_text(json.dumps(packs))
    return path


WORDS = "The hot dogs are top notch but the coffee is bad".split()
GOOD = {"sentence": " ".join(WORDS), "triples": [
    {"target_tags": tags(WORDS, [(1, 2)]), "opinion_tags": tags(WORDS, [(4, 5)]), "sentiment": "positive"},
    {"target_tags": tags(WORDS, [(8, 8)]), "opinion_tags": tags(WORDS, [(10, 10)]), "sentiment": "negative"},
]}


def test_reads_spans_and_sentiments(tmp_path):
    split = read_aste(write(tmp_path, [GOOD]))
    (s,) = split.sentences
    assert s.tokens == tuple(WORDS)
    assert s.triplets == (Triplet((1, 2), (4, 5), "positive"), Triplet((8, 8), (10, 10), "negative"))


@pytest.mark.parametrize("bad_item,needle", [
    ("hot\\X", "token 1 'hot\\\\X'"),      # unknown tag
    ("hot", "token 1 'hot'"),              # no backslash
    ("cold\\B", "tags 'cold'"),            # word differs from the sentence
])
def test_malformed_tag_names_file_sentence_and_token(tmp_path, bad_item, needle):
    items = tags(WORDS, [(1, 2)]).split()
    items[1] = bad_item
    bad = {"sentence": " ".join(WORDS), "triples": [
        {"target_tags": " ".join(items), "opinion_tags": tags(WORDS, [(4, 5)]), "sentiment": "positive"}]}
    path = write(tmp_path, [GOOD, bad])
    with pytest.raises(AsteFormatError) as e:
        read_aste(path)
    msg = str(e.value)
    assert str(path) in msg and "sentence 1" in msg and needle in msg


def test_other_malformed_entries(tmp_path):
    cases = [
        ({**GOOD, "triples": [{**GOOD["triples"][0], "sentiment": "happy"}]}, "sentiment 'happy'"),
        ({**GOOD, "triples": [{**GOOD["triples"][0], "target_tags": tags(WORDS, [])}]}, "no aspect span"),
        ({**GOOD, "triples": [{**GOOD["triples"][0], "target_tags": tags(WORDS[:-1], [(1, 2)])}]}, "10 tagged words"),
        ({**GOOD, "triples": [{**GOOD["triples"][0],
                               "target_tags": tags(WORDS, [(1, 2)]).replace("hot\\B", "hot\\I")}]}, "continues no B"),
        ({"sentence": 3}, "not an object"),
    ]
    for pack, needle in cases:
        with pytest.raises(AsteFormatError, match=needle):
            read_aste(write(tmp_path, [pack]))
    (tmp_path / "x.json").write_text("[{")
    with pytest.raises(AsteFormatError, match="not JSON"):
        read_aste(tmp_path / "x.json")


def test_empty_sentences_are_skipped_and_long_ones_truncated(tmp_path):
    split = read_aste(write(tmp_path, [GOOD, {"sentence": "  ", "triples": []}, GOOD]), max_len=9)
    assert split.skipped_empty == 1
    assert split.truncated == 2 and len(split.sentences) == 2
    assert split.triplets_dropped == 2  # coffee/bad reaches word 10
    assert all(len(s.tokens) == 9 and s.triplets == (Triplet((1, 2), (4, 5), "positive"),) for s in split.sentences)
