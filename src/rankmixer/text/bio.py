"""The simple baseline GTS is compared with: a BIO tagger and a nearest-span pairing rule.

Each word gets one tag: outside (``O``), the beginning or inside of an opinion span (``B-OP``,
``I-OP``) or of an aspect span, the aspect's tags carrying its sentiment for the triplet task
(``B-POS`` ... ``I-NEG``; the pair task has plain ``B-ASP``/``I-ASP``). The tags are
predicted per word from the same word encoder as GTS (embeddings, BiLSTM or CNN) by one linear
layer, with no word-pair modelling at all; that is what the baseline measures.

Decoding: a ``B`` tag starts a span; an ``I`` tag continues the span before it when that span
is of the same kind (aspect or opinion) and ends at the previous word, else it starts one. An
aspect's sentiment is the most frequent among its words' tags (ties: positive, neutral,
negative). Pairing, the heuristic: every aspect is paired with its nearest opinion span, and
every opinion span no aspect chose with its nearest aspect (distance: words between the spans
plus one; ties go to the earlier span). The triplet takes the aspect's sentiment.

Training targets come from the gold grid of the batch (what scoring also treats as gold): its
decoded spans and triplets; an aspect in several triplets takes their most frequent sentiment,
one in none (possible only where the grid merged touching spans) is tagged positive, the
commonest.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rankmixer.text.aste import Span, Triplet
from rankmixer.text.batches import GridBatch
from rankmixer.text.config import ModelSection
from rankmixer.text.encoders import WordModel
from rankmixer.text.grid import IGNORE, Extraction, Task, decode

__all__ = ["BIOTagger", "bio_tag_names", "decode_bio", "nearest_pairs", "word_tags"]

SENTIMENTS = ("negative", "neutral", "positive")
PREFERENCE = ("positive", "neutral", "negative")  # tie order of a sentiment vote
OUT, B_OP, I_OP = 0, 1, 2


def bio_tag_names(task: Task) -> tuple[str, ...]:
    """The tag of each id: O, B-OP, I-OP, then per sentiment B-/I- (triplet) or B-ASP, I-ASP."""
    aspects = [f"{p}-{s[:3].upper()}" for s in SENTIMENTS for p in ("B", "I")] if task == "triplet" \
        else ["B-ASP", "I-ASP"]
    return ("O", "B-OP", "I-OP", *aspects)


def _aspect_tag(begin: bool, sentiment: str | None) -> int:
    base = 3 + 2 * SENTIMENTS.index(sentiment) if sentiment is not None else 3
    return base if begin else base + 1


def _vote(sentiments: Sequence[str]) -> str:
    counts = Counter(sentiments)
    return max(PREFERENCE, key=lambda s: counts[s])  # first maximum in preference order


def word_tags(extraction: Extraction, length: int, task: Task) -> np.ndarray:
    """The BIO tag ids [length] of one sentence's gold extraction."""
    tags = np.full(length, OUT, dtype=np.int64)
    for left, right in extraction.opinions:
        tags[left], tags[left + 1:right + 1] = B_OP, I_OP
    for aspect in extraction.aspects:
        if task == "triplet":
            votes = [t.sentiment for t in extraction.triplets if t.aspect == aspect]
            sentiment: str | None = _vote(votes) if votes else "positive"
        else:
            sentiment = None
        tags[aspect[0]] = _aspect_tag(True, sentiment)
        tags[aspect[0] + 1:aspect[1] + 1] = _aspect_tag(False, sentiment)
    return tags


def _spans(tags: Sequence[int]) -> list[tuple[str, Span, list[int]]]:
    """(kind, span, the span's tag ids) in order; kind is ``aspect`` or ``opinion``."""
    out: list[tuple[str, Span, list[int]]] = []
    for i, t in enumerate(tags):
        if t == OUT:
            continue
        kind = "opinion" if t in (B_OP, I_OP) else "aspect"
        inside = t == I_OP or (t >= 3 and (t - 3) % 2 == 1)
        if inside and out and out[-1][0] == kind and out[-1][1][1] == i - 1:
            out[-1] = (kind, (out[-1][1][0], i), out[-1][2] + [t])
        else:
            out.append((kind, (i, i), [t]))
    return out


def _gap(a: Span, b: Span) -> int:
    return max(b[0] - a[1], a[0] - b[1])


def nearest_pairs(aspects: Sequence[Span], opinions: Sequence[Span]) -> list[tuple[Span, Span]]:
    """Each aspect with its nearest opinion, then each unchosen opinion with its nearest aspect
    (ties: the earlier span); sorted."""
    if not aspects or not opinions:
        return []
    pairs = {(a, min(opinions, key=lambda o: (_gap(a, o), o))) for a in aspects}
    chosen = {o for _, o in pairs}
    pairs |= {(min(aspects, key=lambda a: (_gap(a, o), a)), o) for o in opinions if o not in chosen}
    return sorted(pairs)


def decode_bio(tags: Sequence[int], task: Task) -> Extraction:
    """One sentence's tag ids -> its spans and triplets (pairs: sentiment ``None``)."""
    spans = _spans([int(t) for t in tags])
    sentiment = {span: (_vote([SENTIMENTS[(t - 3) // 2] for t in ts]) if task == "triplet" else None)
                 for kind, span, ts in spans if kind == "aspect"}
    aspects = tuple(span for kind, span, _ in spans if kind == "aspect")
    opinions = tuple(span for kind, span, _ in spans if kind == "opinion")
    triplets = tuple(Triplet(a, o, sentiment[a]) for a, o in nearest_pairs(aspects, opinions))  # type: ignore[arg-type]
    return Extraction(triplets, aspects, opinions)


class BIOTagger(WordModel):
    """Word encoder -> linear layer -> BIO tag logits [B, n, tags]."""

    def __init__(self, vocab_size: int, cfg: ModelSection) -> None:
        super().__init__(vocab_size, cfg)
        self.tagger = nn.Linear(self.encoder.out_dim, len(bio_tag_names(cfg.task)))

    def forward(self, tokens: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        return self.tagger(self.words(tokens, lengths, mask))

    def gold_tags(self, batch: GridBatch) -> Tensor:
        """[B, n] tag ids from the batch's gold grids (``IGNORE`` on padding)."""
        grids = batch.tags.cpu().numpy()
        out = np.full(grids.shape[:2], IGNORE, dtype=np.int64)
        for row, m in enumerate(batch.lengths.tolist()):
            out[row, :m] = word_tags(decode(grids[row, :m, :m], m, self.cfg.task), m, self.cfg.task)
        return torch.from_numpy(out).to(batch.tags.device)

    def loss(self, batch: GridBatch) -> Tensor:
        """Cross-entropy of every word's tag."""
        logits = self(batch.tokens, batch.lengths, batch.mask)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.gold_tags(batch).reshape(-1),
                               ignore_index=IGNORE)

    @torch.no_grad()
    def extract(self, batch: GridBatch) -> list[Extraction]:
        tags = self(batch.tokens, batch.lengths, batch.mask).argmax(dim=-1).cpu().numpy()
        return [decode_bio(tags[row, :m], self.cfg.task) for row, m in enumerate(batch.lengths.tolist())]
