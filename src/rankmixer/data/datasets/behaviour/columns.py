"""The columns of a behaviour data set: names, Arrow types and the feature schema.

One row per impression:

* ``click`` (int8, 0/1): the label, Bernoulli(``bayes_p``).
* ``user``, ``item``, ``cat`` (decimal strings): the user, the candidate item and its category.
* ``hist_item``, ``hist_cat``, ``hist_type``, ``hist_dt`` (strings of "|"-joined values, null
  for an empty history): the user's behaviours, oldest first, all four with the same number of
  values on a row: the item, its category, the behaviour type (0 = click, 1 = cart, ...) and
  the non-negative integer seconds between the behaviour and the request (non-decreasing
  toward the oldest). This is the raw layout of a behaviour sequence fixed by issue 15.
* ``bayes_p`` (float64): the true click probability. For auditing only: it is not in the
  schema, so preparation drops it.

The schema declares ``hist`` as a ``behaviour`` feature with fields item (vocabulary shared
with ``item``), cat (shared with ``cat``), type and dt (log-bucketized), and, with
``session_gap``, the derived session index ``session``.
"""

from __future__ import annotations

import pyarrow as pa
import yaml

from rankmixer.data.datasets.behaviour.config import BehaviourConfig
from rankmixer.data.schema import Schema

IDS = ("user", "item", "cat")
HIST_FIELDS = ("item", "cat", "type", "dt")
HIST_COLUMNS = tuple(f"hist_{f}" for f in HIST_FIELDS)


def column_names() -> list[str]:
    """Every column of the written files, in file order."""
    return ["click", *IDS, *HIST_COLUMNS, "bayes_p"]


def arrow_schema() -> pa.Schema:
    """The Arrow types of :func:`column_names` (only the history columns take nulls)."""
    cols = [pa.field("click", pa.int8(), nullable=False)]
    cols += [pa.field(n, pa.string(), nullable=False) for n in IDS]
    cols += [pa.field(n, pa.string()) for n in HIST_COLUMNS]
    cols += [pa.field("bayes_p", pa.float64(), nullable=False)]
    return pa.schema(cols)


def schema_dict(cfg: BehaviourConfig | None = None) -> dict:
    """The feature schema of data written by ``generate(cfg, ...)``, as the plain mapping a
    ``schema.yaml`` holds: Parquet source (without ``bayes_p``), split by files, label
    ``click``, group key ``user``, features user / item / cat (categorical) and ``hist``
    (behaviour, the most recent ``cfg.max_len`` positions)."""
    cfg = cfg or BehaviourConfig()
    columns = [{"name": "click", "type": "int", "required": True}]
    columns += [{"name": n, "type": "str", "required": True} for n in IDS]
    columns += [{"name": n, "type": "str"} for n in HIST_COLUMNS]
    hist = {
        "name": "hist",
        "type": "behaviour",
        "max_len": cfg.max_len,
        "separator": "|",
        "fields": [
            {"name": "item", "source": "hist_item", "share_with": "item"},
            {"name": "cat", "source": "hist_cat", "share_with": "cat"},
            {"name": "type", "source": "hist_type"},
            {"name": "dt", "source": "hist_dt", "bucketize": {"method": "log"}, "order": "non_increasing"},
        ],
    }
    if cfg.session_gap is not None:
        hist["fields"].append({"name": "session",
                               "sessions": {"of": "dt", "gap": cfg.session_gap, "max_sessions": cfg.max_sessions}})
    return {
        "name": "behaviour",
        "source": {"format": "parquet", "columns": columns},
        "labels": [{"name": "click"}],
        "features": [{"name": n, "type": "categorical"} for n in IDS] + [hist],
        "group_key": "user",
        "feature_groups": {"user": ["user", "hist"], "item": ["item", "cat"]},
        "split": {"method": "files"},
    }


def schema_yaml(cfg: BehaviourConfig | None = None) -> str:
    """:func:`schema_dict` as YAML text (what the writer saves as ``schema.yaml``)."""
    return yaml.safe_dump(schema_dict(cfg), sort_keys=False)


def schema(cfg: BehaviourConfig | None = None) -> Schema:
    """:func:`schema_dict` validated as a :class:`~rankmixer.data.schema.Schema` (needs the
    schema's ``behaviour`` feature type)."""
    return Schema.model_validate(schema_dict(cfg))
