"""What defines a multi-task set with conflicting tasks: :class:`MultitaskConfig`.

The same config (seed included) gives the same files byte for byte; ``chunk_rows`` and
``rows_per_file`` change only the file layout, never the rows.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from rankmixer.core.strict import StrictModel

META_FILE = "multitask_meta.json"
SCHEMA_FILE = "schema.yaml"
BLOCK_ROWS = 32_768  # rows per independent random stream (a constant: the layout never changes the rows)
CALIBRATION_ROWS = 100_000  # rows that standardise the planted components and solve each task's bias


class MultitaskConfig(StrictModel):
    """Every task's logit is ``logit_scale * (sqrt(1 - conflict) * S(x) + sqrt(conflict) * A_t(x))
    + b_t``: ``S`` is shared by all tasks, ``A_t`` is the task's own, both with unit variance and
    each made of a first-order part and an FM pairwise part over the same categorical fields.
    So the task logits correlate by ``1 - conflict`` in expectation over the planted tables (one
    draw's realised value is in the meta; few popular ids make it wander): 0 = one task
    repeated, 1 = independent tasks that compete for whatever a shared model can hold."""

    # ---- size and layout -----------------------------------------------------------------
    rows_train: int = Field(200_000, ge=1)
    rows_valid: int = Field(50_000, ge=1)
    rows_test: int = Field(50_000, ge=1)
    chunk_rows: int = Field(500_000, ge=1)
    rows_per_file: int = Field(50_000_000, ge=1)
    compression: Literal["zstd", "snappy", "none"] = "zstd"
    seed: int = Field(2026, ge=0)

    # ---- features ------------------------------------------------------------------------
    n_fields: int = Field(8, ge=2)  # categorical fields f0 .. f{n_fields-1}
    vocab: int = Field(500, ge=2)  # ids per field
    zipf_exponent: float = Field(1.05, gt=0.0)  # id popularity within a field

    # ---- planted model -------------------------------------------------------------------
    tasks: list[str] = Field(default_factory=lambda: ["t0", "t1"], min_length=2)
    conflict: float = Field(0.8, ge=0.0, le=1.0)
    latent_dim: int = Field(4, ge=1)  # rank of each component's FM pairwise part
    pairwise_share: float = Field(0.6, ge=0.0, le=1.0)  # share of each component's variance from the pairwise part
    logit_scale: float = Field(1.5, ge=0.0)  # standard deviation of a task's logit before the bias
    task_ctr: list[float] | None = None  # mean click rate per task; None = 0.2 each

    @model_validator(mode="after")
    def _check(self) -> MultitaskConfig:
        for name in self.tasks:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"tasks: {name!r} is not a column name (letters, digits, _)")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks: names must be unique, got {self.tasks}")
        clash = {f"f{i}" for i in range(self.n_fields)} & set(self.tasks)
        if clash:
            raise ValueError(f"tasks: {sorted(clash)[0]!r} is also a feature column's name")
        if self.task_ctr is not None:
            if len(self.task_ctr) != len(self.tasks):
                raise ValueError(f"task_ctr has {len(self.task_ctr)} values for {len(self.tasks)} tasks")
            bad = [c for c in self.task_ctr if not 0.0 < c < 1.0]
            if bad:
                raise ValueError(f"task_ctr: {bad[0]} is not a rate in (0, 1)")
        return self

    def ctr(self) -> list[float]:
        return list(self.task_ctr) if self.task_ctr is not None else [0.2] * len(self.tasks)

    def rows(self, split: str) -> int:
        return {"train": self.rows_train, "valid": self.rows_valid, "test": self.rows_test}[split]
