"""The review sentences: ASTE-Data-V2 sentences with their gold (aspect, sentiment) pairs.

A deliberately small reader: the data layer may not import ``rankmixer.text`` (which sits
above it and has the full reader, rankmixer.text.aste), and the generator needs only each
sentence's text and the aspect words and sentiment of its gold triples. The aspect spans are the
B/I runs of a triple's ``target_tags``; aspects are normalised as the review features normalise
them (lowercase, whitespace collapsed). A malformed entry is an error naming the file and the
sentence index; a missing directory is an error saying where the data is expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SENTIMENTS = ("positive", "neutral", "negative")


@dataclass(frozen=True)
class CorpusSentence:
    source: str  # "<dataset>/<split>#<index>"
    text: str
    aspects: tuple[tuple[str, str], ...]  # (normalised aspect, sentiment), one per gold triple and span


def normalize(term: str) -> str:
    return " ".join(term.lower().replace("|", "/").split())


def aspect_spans(tags: str, where: str) -> list[str]:
    """The words of each B/I run of a ``word\\TAG`` string."""
    spans: list[list[str]] = []
    inside = False
    for k, item in enumerate(tags.split()):
        word, sep, tag = item.rpartition("\\")
        if not sep or tag not in ("B", "I", "O"):
            raise ValueError(f"{where}: token {k} {item!r} is not word\\B, word\\I or word\\O")
        if tag == "B" or (tag == "I" and not inside):
            spans.append([word])
        elif tag == "I":
            spans[-1].append(word)
        inside = tag != "O"
    return [" ".join(s) for s in spans]


def read_corpus(aste_dir: str | Path, datasets: list[str], split: str) -> list[CorpusSentence]:
    """Every non-empty sentence of ``<aste_dir>/<dataset>/<split>.json`` for each dataset."""
    root = Path(aste_dir)
    out: list[CorpusSentence] = []
    for name in datasets:
        path = root / name / f"{split}.json"
        if not path.is_file():
            raise FileNotFoundError(f"ASTE-V2 file not found: {path} (the reviews set samples its sentences; "
                                    "set preset option aste_dir to the ASTE-Data-V2 directory, which holds "
                                    "lap14, res14, res15, res16)")
        try:
            packs = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a UTF-8 JSON list of sentences ({e})") from e
        if not isinstance(packs, list):
            raise ValueError(f"{path}: expected a JSON list of sentences")
        for index, pack in enumerate(packs):
            where = f"{path}: sentence {index}"
            if not isinstance(pack, dict) or not isinstance(pack.get("sentence"), str):
                raise ValueError(f"{where} is not an object with a 'sentence' string")
            aspects = []
            for t, triple in enumerate(pack.get("triples") or []):
                if not isinstance(triple, dict) or triple.get("sentiment") not in SENTIMENTS \
                        or not isinstance(triple.get("target_tags"), str):
                    raise ValueError(f"{where}, triple {t}: needs target_tags and a sentiment in {SENTIMENTS}")
                aspects += [(normalize(a), triple["sentiment"])
                            for a in aspect_spans(triple["target_tags"], f"{where}, triple {t}")]
            if pack["sentence"].strip():
                out.append(CorpusSentence(f"{name}/{split}#{index}", pack["sentence"], tuple(aspects)))
    if not out:
        raise ValueError(f"no sentences in {', '.join(datasets)} ({split}) under {root}")
    return out
