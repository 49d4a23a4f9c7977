"""The columns of a multi-task set: names, Arrow types and the feature schema.

One row per impression: one int8 0/1 label per task (Bernoulli of its true probability), the
categorical fields ``f0 ..`` as decimal strings, and ``p_<task>`` (float64), each task's true
probability, for auditing only: not in the schema, so preparation drops it.
"""

from __future__ import annotations

import pyarrow as pa
import yaml

from rankmixer.data.datasets.multitask.config import MultitaskConfig
from rankmixer.data.schema import Schema


def fields(cfg: MultitaskConfig) -> list[str]:
    return [f"f{i}" for i in range(cfg.n_fields)]


def column_names(cfg: MultitaskConfig) -> list[str]:
    """Every column of the written files, in file order."""
    return [*cfg.tasks, *fields(cfg), *(f"p_{t}" for t in cfg.tasks)]


def arrow_schema(cfg: MultitaskConfig) -> pa.Schema:
    return pa.schema(
        [pa.field(t, pa.int8(), nullable=False) for t in cfg.tasks]
        + [pa.field(f, pa.string(), nullable=False) for f in fields(cfg)]
        + [pa.field(f"p_{t}", pa.float64(), nullable=False) for t in cfg.tasks]
    )


def schema_dict(cfg: MultitaskConfig) -> dict:
    """The feature schema as the plain mapping ``schema.yaml`` holds: Parquet source (without
    the ``p_`` columns), split by files, one label per task, every field categorical."""
    columns = [{"name": t, "type": "int", "required": True} for t in cfg.tasks]
    columns += [{"name": f, "type": "str", "required": True} for f in fields(cfg)]
    return {
        "name": "multitask",
        "source": {"format": "parquet", "columns": columns},
        "labels": [{"name": t} for t in cfg.tasks],
        "features": [{"name": f, "type": "categorical"} for f in fields(cfg)],
        "split": {"method": "files"},
    }


def schema_yaml(cfg: MultitaskConfig) -> str:
    return yaml.safe_dump(schema_dict(cfg), sort_keys=False)


def schema(cfg: MultitaskConfig) -> Schema:
    return Schema.model_validate(schema_dict(cfg))
