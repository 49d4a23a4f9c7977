"""The columns of a synthetic data set: their names, their Arrow types and the feature Schema.

One row per impression:

* ``click`` (int8, 0/1): the label, Bernoulli(``bayes_p``).
* ``user``, ``item``, ``C1`` .. ``C{n_categorical-2}``: categorical ids, decimal strings
  (``id_type="str"``, default) or int64 (``id_type="int"``). Every field is Zipf-distributed
  (exponent ``zipf_exponent``; ``user_zipf_exponent`` for users, so no single user owns a large
  share of the rows). ``C1, C4, C7, ...`` are attributes of the user (a fixed value per user,
  like age or city), ``C2, C5, ...`` attributes of the item, ``C3, C6, ...`` per-impression
  context. Vocabulary sizes grow log-uniformly from ``vocab_min`` to ``vocab_max`` (C1
  smallest) unless ``vocab_sizes`` gives them.
* ``I1`` .. ``I{n_dense}`` (int64, nullable): Criteo-like counts: non-negative, log-normal heavy
  tails, many zeros, 0 .. ``dense_missing_max`` of each column missing (null).
* ``tags`` (string ``"a|b|c"``): 1 .. ``max_tags`` distinct tag ids of the item (an item always
  has the same tags).
* ``hist_items`` (string ``"a|b|c"``, null when empty): up to ``seq_len`` earlier items of the
  user, oldest first, in the vocabulary of ``item`` (the schema shares the table).
* ``bayes_p`` (float64): the true click probability. For auditing only: it is not in the
  schema, so preparation drops it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from rankmixer.data.datasets.synthetic.config import DAY_SECONDS, SyntheticConfig
from rankmixer.data.schema import (
    Bucketize,
    CategoricalFeature,
    DaySpec,
    LabelSpec,
    MultiCategoricalFeature,
    NumericalFeature,
    RawColumn,
    Schema,
    SequenceFeature,
    SourceSpec,
    SplitSpec,
)

_HASH_BUCKET_FACTOR = 2  # hashed fields get ~2x their vocabulary in buckets (fewer collisions)


# ---- the field layout (shared by the generator, the writer and the schema) ---------------------


@dataclass(frozen=True)
class Field:
    """A categorical field: its name, vocabulary size and which entity it describes."""

    name: str
    vocab: int
    side: Literal["user", "item", "context"]


def _generic_vocabs(cfg: SyntheticConfig) -> list[int]:
    m = cfg.n_categorical - 2
    if cfg.vocab_sizes is not None:
        return list(cfg.vocab_sizes)
    if m == 1:
        return [cfg.vocab_max]
    ratio = cfg.vocab_max / cfg.vocab_min
    return [round(cfg.vocab_min * ratio ** (k / (m - 1))) for k in range(m)]


def fields(cfg: SyntheticConfig) -> list[Field]:
    """user, item, C1 .. : C1, C4, .. describe the user, C2, C5, .. the item, C3, C6, .. context."""
    sides = ("user", "item", "context")
    out = [Field("user", cfg.n_users, "user"), Field("item", cfg.n_items, "item")]
    out += [Field(f"C{k + 1}", v, sides[k % 3]) for k, v in enumerate(_generic_vocabs(cfg))]
    return out


def dense_names(cfg: SyntheticConfig) -> list[str]:
    return [f"I{j + 1}" for j in range(cfg.n_dense)]


def column_names(cfg: SyntheticConfig) -> list[str]:
    """Every column of the written files, in file order."""
    return (
        ["click"]
        + [f.name for f in fields(cfg)]
        + dense_names(cfg)
        + ["tags", "hist_items", "bayes_p"]
        + (["ts", "request_id"] if cfg.timestamps else [])
    )


def arrow_schema(cfg: SyntheticConfig) -> pa.Schema:
    """The Arrow types of :func:`column_names` (only dense counts and ``hist_items`` take nulls)."""
    id_t = pa.string() if cfg.id_type == "str" else pa.int64()
    cols = [pa.field("click", pa.int8(), nullable=False)]
    cols += [pa.field(f.name, id_t, nullable=False) for f in fields(cfg)]
    cols += [pa.field(n, pa.int64()) for n in dense_names(cfg)]
    cols += [pa.field("tags", pa.string(), nullable=False), pa.field("hist_items", pa.string())]
    cols += [pa.field("bayes_p", pa.float64(), nullable=False)]
    if cfg.timestamps:
        cols += [pa.field("ts", pa.int64(), nullable=False), pa.field("request_id", pa.int64(), nullable=False)]
    return pa.schema(cols)


# ---- the feature schema ----------------------------------------------------------------------


def schema(cfg: SyntheticConfig | None = None) -> Schema:
    """The feature schema of data written by ``generate(cfg, ...)``.

    Parquet source (``bayes_p`` is deliberately not a column of it), split by files, label
    ``click``, group key ``user``. Categorical fields get a vocabulary (min_count 1) or, above
    ``hash_above`` ids, hash buckets; dense counts are log1p-normalised (or log-bucketized);
    ``tags`` is a bag, ``hist_items`` a sequence sharing ``item``'s table. Feature groups:
    ``user`` (user, its attributes, the history), ``item`` (item, its attributes, tags),
    ``context`` and ``dense``.
    """
    cfg = cfg or SyntheticConfig()
    id_raw = "str" if cfg.id_type == "str" else "int"
    layout = fields(cfg)
    dense = dense_names(cfg)
    columns = [RawColumn(name="click", type="int", required=True)]
    columns += [RawColumn(name=f.name, type=id_raw, required=True) for f in layout]
    columns += [RawColumn(name=n, type="int") for n in dense]
    columns += [RawColumn(name="tags", type="str"), RawColumn(name="hist_items", type="str")]
    if cfg.timestamps:
        columns += [RawColumn(name="ts", type="int", required=True), RawColumn(name="request_id", type="int", required=True)]

    features: list = []
    for f in layout:
        if cfg.hash_above is not None and f.vocab > cfg.hash_above:
            buckets = 1 << math.ceil(math.log2(_HASH_BUCKET_FACTOR * f.vocab))
            features.append(CategoricalFeature(name=f.name, hash_buckets=buckets))
        else:
            features.append(CategoricalFeature(name=f.name, min_count=1))
    for n in dense:
        if cfg.dense_encoding == "bucketize":
            features.append(NumericalFeature(name=n, bucketize=Bucketize(method="log")))
        else:
            features.append(NumericalFeature(name=n, normalize="log1p", fill_missing=0.0))
    features.append(MultiCategoricalFeature(name="tags", max_len=cfg.max_tags, min_count=1))
    features.append(SequenceFeature(name="hist_items", max_len=cfg.seq_len, share_with="item"))

    groups: dict[str, list[str]] = {
        "user": [f.name for f in layout if f.side == "user"] + ["hist_items"],
        "item": [f.name for f in layout if f.side == "item"] + ["tags"],
        "context": [f.name for f in layout if f.side == "context"],
        "dense": dense,
    }
    return Schema(
        name="synthetic",
        source=SourceSpec(format="parquet", columns=columns),
        labels=[LabelSpec(name="click")],
        features=features,
        group_key="user",
        feature_groups={k: v for k, v in groups.items() if v},
        split=SplitSpec(method="files"),
        **({"time_column": "ts", "days": DaySpec(seconds=DAY_SECONDS)} if cfg.timestamps else {}),
    )
