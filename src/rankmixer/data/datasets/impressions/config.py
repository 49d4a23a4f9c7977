"""What defines a synthetic impression-log data set (:class:`ImpressionConfig`) and its layout.

The same config (seed included) gives the same files byte for byte.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rankmixer.core.strict import StrictModel

META_FILE = "impressions_meta.json"
SCHEMA_FILE = "schema.yaml"


class ImpressionConfig(StrictModel):
    """Everything that defines an impression-log data set (see :mod:`.simulate` for the model)."""

    # ---- size and layout ------------------------------------------------------------------
    rows_train: int = Field(100_000, ge=1)  # rows = exposures (one per shown item)
    rows_valid: int = Field(10_000, ge=1)
    rows_test: int = Field(10_000, ge=1)
    rows_per_file: int = Field(2_000_000, ge=1)
    chunk_rows: int = Field(50_000, ge=1)
    compression: Literal["zstd", "snappy", "none"] = "zstd"
    seed: int = Field(2024, ge=0)

    # ---- pages ------------------------------------------------------------------------------
    page_size: int = Field(5, ge=2)  # items exposed per request (I)
    max_pages: int = Field(5, ge=1)  # pages of history kept per row (P)
    requests_per_user: int = Field(12, ge=2)  # each user's timeline (rows of a split: users x requests x I)
    # Which histories the schema declares: the pages (every exposure with its feedback), the
    # clicked items of those pages only, or both (each a behaviour of its own).
    behaviours: Literal["pages", "clicks", "both"] = "pages"

    # ---- entities ----------------------------------------------------------------------------
    n_items: int = Field(2_000, ge=2)
    n_categories: int = Field(50, ge=2)  # item i belongs to category i % n_categories
    n_interests: int = Field(3, ge=1)  # categories a user likes
    interest_share: float = Field(0.5, ge=0.0, le=1.0)  # exposed items drawn from the user's interests
    zipf_exponent: float = Field(1.0, gt=0.0)

    # ---- planted model ---------------------------------------------------------------------------
    # A noisy page: the user clicks at random (rate noisy_click_rate), whatever is shown.
    noisy_page_rate: float = Field(0.2, ge=0.0, lt=1.0)
    noisy_click_rate: float = Field(0.5, gt=0.0, lt=1.0)
    context_decay: float = Field(0.8, gt=0.0, le=1.0)  # a page k requests back weighs decay ** (k - 1)
    first_order_scale: float = Field(0.5, ge=0.0)  # item bias (logit sd)
    context_scale: float = Field(2.0, ge=0.0)  # the page-context term (logit sd)
    interest_scale: float = Field(0.5, ge=0.0)  # whether the item is of one of the user's interests
    target_ctr: float = Field(0.15, gt=0.0, lt=1.0)  # of the non-noisy pages

    @model_validator(mode="after")
    def _check(self) -> ImpressionConfig:
        if self.n_categories > self.n_items:
            raise ValueError(f"n_categories ({self.n_categories}) > n_items ({self.n_items})")
        if self.n_interests > self.n_categories:
            raise ValueError(f"n_interests ({self.n_interests}) > n_categories ({self.n_categories})")
        return self

    def rows(self, split: str) -> int:
        return {"train": self.rows_train, "valid": self.rows_valid, "test": self.rows_test}[split]

    def users(self, split: str) -> int:
        """Users simulated for ``split``: enough timelines for its rows (the last one cut)."""
        return -(-self.rows(split) // (self.requests_per_user * self.page_size))
