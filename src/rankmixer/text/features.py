"""Per-item review features from extracted triplets: pure aggregation, no model, no files.

Input: one entry per review, ``(item, triplets)``, each triplet ``(aspect, opinion,
sentiment)`` as ``rankmixer text extract`` writes them; ``triplets`` is ``None`` for a review
that was skipped (empty text), so its item still gets a row. Terms are normalised (lowercase,
runs of whitespace -> one space, a ``|`` -> ``/`` so that it cannot split a multi-valued
value). Output, one row per item (sorted by item):

* ``review_count`` (reviews with text), ``review_triplets`` (triplets extracted);
* ``review_sentiment``: the mean of positive = +1, neutral = 0, negative = -1 over the item's
  triplets; ``review_positive_share``, ``review_negative_share``: the shares of positive and
  negative triplets; all three null when the item has no triplet;
* ``review_<aspect>_<pos|neu|neg>``: the count of triplets per sentiment on each of the
  ``top_k`` aspects most frequent over the whole input (ties: alphabetical), so that the
  columns are the same for every item;
* ``review_aspects``, ``review_opinions``: the item's ``max_terms`` most frequent aspect and
  opinion terms (ties: alphabetical), ``|``-joined (null when none): multi-categorical features.

:func:`schema_snippet` declares these columns as ordinary features of a rankmixer schema.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["SENTIMENT_VALUE", "SEPARATOR", "ReviewFeatures", "aggregate", "normalize_term", "schema_snippet",
           "top_aspects"]

SENTIMENT_VALUE = {"positive": 1, "neutral": 0, "negative": -1}
SHORT = {"positive": "pos", "neutral": "neu", "negative": "neg"}
SEPARATOR = "|"  # the multi_categorical separator of rankmixer.data.schema
PREFIX = "review_"

Triplet = tuple[str, str, str]  # aspect, opinion, sentiment


def normalize_term(term: str) -> str:
    """Lowercase, whitespace runs collapsed to one space, ``|`` replaced by ``/``."""
    return " ".join(term.lower().replace(SEPARATOR, "/").split())


def ranked(counts: Counter) -> list[str]:
    """Keys by count descending, ties alphabetical."""
    return [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def top_aspects(reviews: Iterable[tuple[Hashable, Sequence[Triplet] | None]], k: int) -> list[str]:
    """The ``k`` normalised aspects with the most triplets over all reviews (ties: alphabetical)."""
    counts = Counter(normalize_term(a) for _, triplets in reviews for a, _, _ in triplets or ())
    return ranked(counts)[:k]


def column_names(aspects: Sequence[str]) -> list[str]:
    """One column stem per aspect: ``review_`` + the aspect with non-word runs as ``_`` (a
    stem already taken gets ``_2``, ``_3``, ...)."""
    stems: list[str] = []
    for aspect in aspects:
        base = PREFIX + (re.sub(r"\W+", "_", aspect).strip("_") or "aspect")
        stem, n = base, 1
        while stem in stems:
            n += 1
            stem = f"{base}_{n}"
        stems.append(stem)
    return stems


@dataclass
class ReviewFeatures:
    """The per-item columns (name -> values, in row order; ``item`` first) and the top aspects
    with their column stems."""

    columns: dict[str, list]
    aspects: list[str]
    stems: list[str]
    max_terms: int

    @property
    def count_columns(self) -> list[str]:
        return [f"{stem}_{SHORT[s]}" for stem in self.stems for s in SENTIMENT_VALUE]


def aggregate(reviews: Sequence[tuple[Hashable, Sequence[Triplet] | None]], top_k: int = 20,
              max_terms: int = 8, item_column: str = "item") -> ReviewFeatures:
    """Per-item features of ``reviews`` (see the module docstring)."""
    if top_k < 0 or max_terms < 1:
        raise ValueError(f"top_k must be >= 0 and max_terms >= 1 (got {top_k}, {max_terms})")
    aspects = top_aspects(reviews, top_k)
    stems = column_names(aspects)
    index = {a: k for k, a in enumerate(aspects)}
    per_item: dict[Hashable, dict] = {}
    for item, triplets in reviews:
        acc = per_item.setdefault(item, {"reviews": 0, "sentiments": Counter(), "aspects": Counter(),
                                         "opinions": Counter(), "grid": Counter()})
        if triplets is None:
            continue
        acc["reviews"] += 1
        for aspect, opinion, sentiment in triplets:
            if sentiment not in SENTIMENT_VALUE:
                raise ValueError(f"item {item!r}: sentiment {sentiment!r} is not one of {', '.join(SENTIMENT_VALUE)}")
            aspect, opinion = normalize_term(aspect), normalize_term(opinion)
            acc["sentiments"][sentiment] += 1
            acc["aspects"][aspect] += 1
            acc["opinions"][opinion] += 1
            if aspect in index:
                acc["grid"][(index[aspect], sentiment)] += 1
    items = sorted(per_item)
    features = ReviewFeatures({item_column: items}, aspects, stems, max_terms)
    cols = features.columns
    for name in ("count", "triplets", "sentiment", "positive_share", "negative_share"):
        cols[PREFIX + name] = []
    for name in features.count_columns:
        cols[name] = []
    cols[PREFIX + "aspects"], cols[PREFIX + "opinions"] = [], []
    for item in items:
        acc = per_item[item]
        s = acc["sentiments"]
        n = sum(s.values())
        cols[PREFIX + "count"].append(acc["reviews"])
        cols[PREFIX + "triplets"].append(n)
        cols[PREFIX + "sentiment"].append(sum(SENTIMENT_VALUE[k] * v for k, v in s.items()) / n if n else None)
        cols[PREFIX + "positive_share"].append(s["positive"] / n if n else None)
        cols[PREFIX + "negative_share"].append(s["negative"] / n if n else None)
        for k, stem in enumerate(stems):
            for sentiment in SENTIMENT_VALUE:
                cols[f"{stem}_{SHORT[sentiment]}"].append(acc["grid"][(k, sentiment)])
        for name, key in (("aspects", "aspects"), ("opinions", "opinions")):
            terms = ranked(acc[key])[:max_terms]
            cols[PREFIX + name].append(SEPARATOR.join(terms) if terms else None)
    return features


def schema_snippet(features: ReviewFeatures, item_column: str = "item") -> dict:
    """The feature columns as a piece of a rankmixer schema: ``columns`` (raw column types, for
    ``source.columns`` of a schema that reads them joined), ``features`` (counts numerical with
    log1p, mean and shares numerical with standard scaling and missing -> 0, the term lists
    multi-categorical) and a ``feature_groups`` entry ``review``; the join key is
    ``join_on``."""
    numeric = [PREFIX + "count", PREFIX + "triplets", *features.count_columns]
    scaled = [PREFIX + "sentiment", PREFIX + "positive_share", PREFIX + "negative_share"]
    bags = [PREFIX + "aspects", PREFIX + "opinions"]
    columns = ([{"name": n, "type": "int"} for n in numeric] + [{"name": n, "type": "float"} for n in scaled]
               + [{"name": n, "type": "str"} for n in bags])
    feats = ([{"name": n, "type": "numerical", "normalize": "log1p"} for n in numeric]
             + [{"name": n, "type": "numerical", "normalize": "standard", "fill_missing": 0.0} for n in scaled]
             + [{"name": n, "type": "multi_categorical", "separator": SEPARATOR, "max_len": features.max_terms}
                for n in bags])
    return {"join_on": item_column, "columns": columns, "features": feats,
            "feature_groups": {"review": [f["name"] for f in feats]}, "aspects": features.aspects}
