"""The columns of a review-ranking set: names, Arrow types and the feature schema.

Impressions, one row each (``train.parquet``, ``valid.parquet``, ``test.parquet``):

* ``click`` (int8, 0/1): the label, Bernoulli(``bayes_p``).
* ``user``, ``item`` (decimal strings).
* ``taste_00`` .. ``taste_<K-1>`` (float64): the user's taste for each taste aspect (the
  aspects, in this order, are the meta's ``planted_model.aspects``).
* ``bayes_p`` (float64): the true click probability; for auditing only (not in the schema).

Reviews (``reviews.parquet``), one row per review, grouped by item: ``item``, ``text`` (an
ASTE-V2 sentence, already tokenised on spaces) and ``source`` (``<dataset>/<split>#<index>``:
where the sentence comes from, for auditing).

The schema has user and item (categorical) and the tastes (numerical); with review features
(:func:`schema_dict`'s ``review_features``: the schema snippet ``rankmixer features reviews``
writes) their features are added, in a feature group ``review``.
"""

from __future__ import annotations

import pyarrow as pa

from rankmixer.data.schema import Schema

IDS = ("user", "item")


def taste_columns(n_aspects: int) -> list[str]:
    return [f"taste_{k:02d}" for k in range(n_aspects)]


def column_names(n_aspects: int) -> list[str]:
    """Every column of the impression files, in file order."""
    return ["click", *IDS, *taste_columns(n_aspects), "bayes_p"]


def arrow_schema(n_aspects: int) -> pa.Schema:
    cols = [pa.field("click", pa.int8(), nullable=False)]
    cols += [pa.field(n, pa.string(), nullable=False) for n in IDS]
    cols += [pa.field(n, pa.float64(), nullable=False) for n in taste_columns(n_aspects)]
    return pa.schema([*cols, pa.field("bayes_p", pa.float64(), nullable=False)])


def reviews_schema() -> pa.Schema:
    return pa.schema([pa.field(n, pa.string(), nullable=False) for n in ("item", "text", "source")])


def schema_dict(n_aspects: int, review_features: dict | None = None) -> dict:
    """The feature schema of the impressions as the plain mapping a ``schema.yaml`` holds
    (Parquet source without ``bayes_p``, split by files, label ``click``, group key ``user``);
    ``review_features``: a schema snippet whose features are joined on ``item``."""
    tastes = taste_columns(n_aspects)
    columns = [{"name": "click", "type": "int", "required": True}]
    columns += [{"name": n, "type": "str", "required": True} for n in IDS]
    columns += [{"name": n, "type": "float", "required": True} for n in tastes]
    features = [{"name": n, "type": "categorical"} for n in IDS]
    features += [{"name": n, "type": "numerical", "normalize": "none"} for n in tastes]
    groups = {"user": ["user", *tastes], "item": ["item"]}
    if review_features is not None:
        features += review_features["features"]
        groups["review"] = [f["name"] for f in review_features["features"]]
    return {
        "name": "reviews",
        "source": {"format": "parquet", "columns": columns},
        "labels": [{"name": "click"}],
        "features": features,
        "group_key": "user",
        "feature_groups": groups,
        "split": {"method": "files"},
    }


def schema(n_aspects: int, review_features: dict | None = None) -> Schema:
    return Schema.model_validate(schema_dict(n_aspects, review_features))
