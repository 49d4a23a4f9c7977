"""Words -> ids, built from the train split only (dev and test words it never saw map to
``<unk>``), saved beside the model as JSON."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["PAD", "UNK", "Vocabulary"]

PAD, UNK = "<pad>", "<unk>"


class Vocabulary:
    """Id 0 is padding, id 1 the unknown word; the rest in order of decreasing train count
    (ties alphabetical, so the same split always gives the same ids)."""

    def __init__(self, words: Sequence[str], lowercase: bool) -> None:
        if list(words[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD} and {UNK}")
        self.words = list(words)
        self.lowercase = lowercase
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("a vocabulary holds each word once")

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], lowercase: bool = True, min_freq: int = 1) -> "Vocabulary":
        counts = Counter(w.lower() if lowercase else w for tokens in sentences for w in tokens)
        kept = sorted((w for w, c in counts.items() if c >= min_freq and w not in (PAD, UNK)),
                      key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *kept], lowercase)

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, tokens: Sequence[str]) -> list[int]:
        unk = self.index[UNK]
        return [self.index.get(w.lower() if self.lowercase else w, unk) for w in tokens]

    def to_json(self) -> dict:
        return {"lowercase": self.lowercase, "words": self.words}

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False))

    @classmethod
    def load(cls, path: Path | str) -> "Vocabulary":
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(doc["words"], bool(doc["lowercase"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a vocabulary file ({e})") from e
