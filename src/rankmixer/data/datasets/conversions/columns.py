"""The columns of a synthetic conversion log: names, Arrow types and the feature schema.

One row per click: the log's columns (:mod:`.log`: ``click_ts``, ``conv_ts`` or null,
``observed_until``, ``advertiser``), the features ``user``, ``item``, ``context`` (decimal strings)
and ``d0 ..`` (float64), and, for auditing only (not in the schema, so preparation drops them),
``p_conversion`` (the true probability that the click ever converts) and ``delay_rate`` (its
advertiser's planted delay rate, per day).

The feature schema is that of one conversion window: its label ``conversion`` does not exist
in the raw files; the preset's transform derives it (and drops the censored rows). The window is
part of the schema's name, so a prepared window is never reused for another.
"""

from __future__ import annotations

import pyarrow as pa
import yaml

from rankmixer.data.datasets.conversions.config import ConversionsConfig
from rankmixer.data.datasets.conversions.log import ADVERTISER, CLICK, CONV, END
from rankmixer.data.schema import Schema

LABEL = "conversion"
CATEGORICAL = (ADVERTISER, "user", "item", "context")
AUDIT = ("p_conversion", "delay_rate")


def dense(cfg: ConversionsConfig) -> list[str]:
    return [f"d{j}" for j in range(cfg.n_dense)]


def column_names(cfg: ConversionsConfig) -> list[str]:
    """Every column of the written files, in file order."""
    return [CLICK, CONV, END, *CATEGORICAL, *dense(cfg), *AUDIT]


def arrow_schema(cfg: ConversionsConfig) -> pa.Schema:
    return pa.schema(
        [pa.field(CLICK, pa.int64(), nullable=False), pa.field(CONV, pa.int64()),
         pa.field(END, pa.int64(), nullable=False)]
        + [pa.field(c, pa.string(), nullable=False) for c in CATEGORICAL]
        + [pa.field(c, pa.float64(), nullable=False) for c in [*dense(cfg), *AUDIT]]
    )


def schema_dict(cfg: ConversionsConfig, window_s: int) -> dict:
    """The feature schema of the window of ``window_s`` seconds, as ``schema.yaml`` holds it."""
    columns = [{"name": CLICK, "type": "int", "required": True}, {"name": CONV, "type": "int"},
               {"name": END, "type": "int", "required": True}]
    columns += [{"name": c, "type": "str", "required": True} for c in CATEGORICAL]
    columns += [{"name": c, "type": "float", "required": True} for c in dense(cfg)]
    return {
        "name": f"conversions-window-{window_s}s",
        "source": {"format": "parquet", "columns": columns},
        "labels": [{"name": LABEL}],
        "features": [{"name": c, "type": "categorical"} for c in CATEGORICAL]
        + [{"name": c, "type": "numerical", "normalize": "none"} for c in dense(cfg)],
        "group_key": ADVERTISER,
        "split": {"method": "files"},
    }


def schema_yaml(cfg: ConversionsConfig, window_s: int) -> str:
    return yaml.safe_dump(schema_dict(cfg, window_s), sort_keys=False)


def schema(cfg: ConversionsConfig, window_s: int) -> Schema:
    return Schema.model_validate(schema_dict(cfg, window_s))
