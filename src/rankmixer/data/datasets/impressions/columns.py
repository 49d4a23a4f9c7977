"""The columns of an impression data set (rows of :func:`.builder.build_rows`) and its schema.

One row per exposure: ``click`` (int8, the label), ``user``, ``item``, ``cat`` (decimal strings),
the history columns of :mod:`.builder` ("|"-joined, null when empty) and ``bayes_p`` (float64,
the true click probability given what is observable; auditing only, not in the schema).

The schema declares, by ``behaviours``:

* ``pages`` (a behaviour of ``max_pages * page_size`` positions): item and category (sharing
  the candidate's tables), the click feedback, the page's age in requests, and ``page``, the page
  index from the newest (a ``sessions`` split of the age with gap 0.5: a new page wherever the
  age changes). A model reads it as ``[B, P, I, F]`` with
  :func:`rankmixer.nn.sequence.pages.page_grid`;
* ``clicks``: the clicked items of the same pages only (item and category).
"""

from __future__ import annotations

import pyarrow as pa
import yaml

from rankmixer.data.datasets.impressions.builder import HISTORY_COLUMNS
from rankmixer.data.datasets.impressions.config import ImpressionConfig
from rankmixer.data.schema import Schema

IDS = ("user", "item", "cat")


def column_names() -> list[str]:
    return ["click", *IDS, *HISTORY_COLUMNS, "bayes_p"]


def arrow_schema() -> pa.Schema:
    return pa.schema([pa.field("click", pa.int8(), nullable=False),
                      *(pa.field(n, pa.string(), nullable=False) for n in IDS),
                      *(pa.field(n, pa.string()) for n in HISTORY_COLUMNS),
                      pa.field("bayes_p", pa.float64(), nullable=False)])


def schema_dict(cfg: ImpressionConfig | None = None) -> dict:
    cfg = cfg or ImpressionConfig()
    length = cfg.max_pages * cfg.page_size
    columns = [{"name": "click", "type": "int", "required": True}]
    columns += [{"name": n, "type": "str", "required": True} for n in IDS]
    columns += [{"name": n, "type": "str"} for n in HISTORY_COLUMNS]
    behaviours = []
    if cfg.behaviours in ("pages", "both"):
        behaviours.append({"name": "pages", "type": "behaviour", "max_len": length, "separator": "|", "fields": [
            {"name": "item", "source": "page_item", "share_with": "item"},
            {"name": "cat", "source": "page_cat", "share_with": "cat"},
            {"name": "click", "source": "page_click"},
            {"name": "ago", "source": "page_ago", "bucketize": {"method": "log"}, "order": "non_increasing"},
            {"name": "page", "sessions": {"of": "ago", "gap": 0.5, "max_sessions": cfg.max_pages}},
        ]})
    if cfg.behaviours in ("clicks", "both"):
        behaviours.append({"name": "clicks", "type": "behaviour", "max_len": length, "separator": "|", "fields": [
            {"name": "item", "source": "click_item", "share_with": "item"},
            {"name": "cat", "source": "click_cat", "share_with": "cat"},
        ]})
    return {
        "name": "impressions",
        "source": {"format": "parquet", "columns": columns},
        "labels": [{"name": "click"}],
        "features": [{"name": n, "type": "categorical"} for n in ("item", "cat")] + behaviours,
        "group_key": "user",
        "feature_groups": {"user": [b["name"] for b in behaviours], "item": ["item", "cat"]},
        "split": {"method": "files"},
    }


def schema_yaml(cfg: ImpressionConfig | None = None) -> str:
    return yaml.safe_dump(schema_dict(cfg), sort_keys=False)


def schema(cfg: ImpressionConfig | None = None) -> Schema:
    return Schema.model_validate(schema_dict(cfg))
