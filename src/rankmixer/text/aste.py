"""The ASTE-Data-V2 reader (the GTS repository's ``<dataset>/{train,dev,test}.json``).

A file is a JSON list of ``{"sentence": str, "triples": [{"target_tags", "opinion_tags",
"sentiment"}]}``. The sentence is already tokenised: its words are split on whitespace. Each tag
string repeats the words with a BIO tag, ``word\\B``, ``word\\I`` or ``word\\O``; the B/I runs of
``target_tags`` are the aspect span(s), those of ``opinion_tags`` the opinion span(s), and every
aspect span pairs with every opinion span of the same triple (as the reference code reads them).

Bad input: a malformed tag (no ``\\``, a tag other than B/I/O, an ``I`` that continues nothing,
a word that differs from the sentence's, a different number of words) or an unknown sentiment is
a :class:`AsteFormatError` naming the file, the sentence index and the token. A sentence with no
words is skipped and counted. A sentence longer than ``max_len`` words is cut to ``max_len``;
triplets reaching past the cut are dropped; both are counted (:class:`AsteSplit`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SENTIMENTS", "AsteFormatError", "AsteSplit", "Sentence", "Span", "Triplet", "read_aste", "read_aste_dir"]

SENTIMENTS = ("negative", "neutral", "positive")
SPLITS = ("train", "dev", "test")

Span = tuple[int, int]  # first and last word index, inclusive


class AsteFormatError(ValueError):
    """An ASTE file cannot be read; the message names the file, sentence index and token."""


@dataclass(frozen=True)
class Triplet:
    """An aspect span, an opinion span and the sentiment expressed on the aspect."""

    aspect: Span
    opinion: Span
    sentiment: str


@dataclass(frozen=True)
class Sentence:
    """A tokenised sentence and its (deduplicated, sorted) triplets."""

    tokens: tuple[str, ...]
    triplets: tuple[Triplet, ...] = ()


@dataclass
class AsteSplit:
    """The sentences of one file and what reading them skipped or cut."""

    path: str
    sentences: list[Sentence] = field(default_factory=list)
    skipped_empty: int = 0
    truncated: int = 0
    triplets_dropped: int = 0

    def report(self) -> dict:
        return {"path": self.path, "sentences": len(self.sentences), "skipped_empty": self.skipped_empty,
                "truncated": self.truncated, "triplets_dropped_by_truncation": self.triplets_dropped}


def bio_spans(tag_string: str, words: list[str], path: str, index: int, field_name: str) -> list[Span]:
    """The B/I runs of one tag string, checked word by word against the sentence."""
    items = tag_string.split()
    where = f"{path}: sentence {index}, {field_name}"
    if len(items) != len(words):
        raise AsteFormatError(f"{where}: {len(items)} tagged words, but the sentence has {len(words)}")
    spans: list[Span] = []
    start = -1
    for i, item in enumerate(items):
        word, sep, tag = item.rpartition("\\")
        if not sep or tag not in ("B", "I", "O"):
            raise AsteFormatError(f"{where}: token {i} {item!r} is not word\\B, word\\I or word\\O")
        if word != words[i]:
            raise AsteFormatError(f"{where}: token {i} {item!r} tags {word!r}, but the sentence has {words[i]!r}")
        if tag == "I" and start == -1:
            raise AsteFormatError(f"{where}: token {i} {item!r} is I but continues no B")
        if tag != "I" and start != -1:
            spans.append((start, i - 1))
            start = -1
        if tag == "B":
            start = i
    if start != -1:
        spans.append((start, len(items) - 1))
    return spans


def parse_sentence(pack: object, path: str, index: int) -> Sentence:
    """One JSON entry -> a :class:`Sentence` (full length, before truncation)."""
    if not isinstance(pack, dict) or not isinstance(pack.get("sentence"), str) \
            or not isinstance(pack.get("triples", []), list):
        raise AsteFormatError(f"{path}: sentence {index} is not an object with a 'sentence' string "
                              "and a 'triples' list")
    words = pack["sentence"].split()
    triplets = set()
    for t, triple in enumerate(pack.get("triples", [])):
        if not isinstance(triple, dict) or not all(isinstance(triple.get(k), str)
                                                   for k in ("target_tags", "opinion_tags", "sentiment")):
            raise AsteFormatError(f"{path}: sentence {index}, triple {t} lacks target_tags, opinion_tags "
                                  "or sentiment strings")
        if triple["sentiment"] not in SENTIMENTS:
            raise AsteFormatError(f"{path}: sentence {index}, triple {t}: sentiment {triple['sentiment']!r} "
                                  f"is not one of {', '.join(SENTIMENTS)}")
        aspects = bio_spans(triple["target_tags"], words, path, index, f"triple {t} target_tags")
        opinions = bio_spans(triple["opinion_tags"], words, path, index, f"triple {t} opinion_tags")
        if not aspects or not opinions:
            raise AsteFormatError(f"{path}: sentence {index}, triple {t} has no "
                                  f"{'aspect' if not aspects else 'opinion'} span")
        triplets |= {Triplet(a, o, triple["sentiment"]) for a in aspects for o in opinions}
    return Sentence(tuple(words), tuple(sorted(triplets, key=lambda x: (x.aspect, x.opinion, x.sentiment))))


def read_aste(path: Path | str, max_len: int = 100) -> AsteSplit:
    """Read one ASTE-V2 file; sentences longer than ``max_len`` words are truncated (counted)."""
    path = Path(path)
    try:
        packs = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"ASTE file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise AsteFormatError(f"{path}: byte {e.start} is not UTF-8") from e
    except json.JSONDecodeError as e:
        raise AsteFormatError(f"{path}: not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    if not isinstance(packs, list):
        raise AsteFormatError(f"{path}: expected a JSON list of sentences")
    split = AsteSplit(str(path))
    for index, pack in enumerate(packs):
        sentence = parse_sentence(pack, str(path), index)
        if not sentence.tokens:
            split.skipped_empty += 1
            continue
        if len(sentence.tokens) > max_len:
            kept = tuple(t for t in sentence.triplets if max(t.aspect[1], t.opinion[1]) < max_len)
            split.truncated += 1
            split.triplets_dropped += len(sentence.triplets) - len(kept)
            sentence = Sentence(sentence.tokens[:max_len], kept)
        split.sentences.append(sentence)
    return split


def read_aste_dir(directory: Path | str, max_len: int = 100) -> dict[str, AsteSplit]:
    """``train``, ``dev`` and ``test`` of one dataset directory (e.g. ``aste-v2/res14``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"ASTE dataset directory not found: {directory}")
    return {name: read_aste(directory / f"{name}.json", max_len) for name in SPLITS}
