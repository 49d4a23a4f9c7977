"""What defines a synthetic data set: :class:`SyntheticConfig` and the layout constants.

The same config (seed included) gives the same files byte for byte. ``chunk_rows`` and
``rows_per_file`` change only the file layout, never the rows; rows are drawn ``BLOCK_ROWS`` at
a time, each block from its own random stream, which is why that size is a constant and not a
config field.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pydantic import Field, model_validator

from rankmixer.core.strict import StrictModel
from rankmixer.data.datasets.generated import SPLITS  # noqa: F401  (re-exported: the split names)

META_FILE = "synthetic_meta.json"
SCHEMA_FILE = "schema.yaml"
# Rows per independent random stream. Fixed (not a config field) so that the chunk size never
# changes the data.
BLOCK_ROWS = 32_768
DAY_SECONDS = 86_400
REQUEST_ID_OFFSET = {"train": 0, "valid": 10**12, "test": 2 * 10**12}


class SyntheticConfig(StrictModel):
    """Everything that defines a synthetic dataset. Same config (seed included) -> same files."""

    # ---- size and layout -----------------------------------------------------------------
    rows_train: int = Field(200_000, ge=1)
    rows_valid: int = Field(20_000, ge=1)
    rows_test: int = Field(20_000, ge=1)
    # Rows buffered before each write (the memory bound; rows are made BLOCK_ROWS at a time).
    # Each write makes equal row groups of at most 100k rows.
    chunk_rows: int = Field(500_000, ge=1)
    # A split with more rows is written as <split>-00000.parquet, <split>-00001.parquet, ...
    rows_per_file: int = Field(50_000_000, ge=1)
    compression: Literal["zstd", "snappy", "none"] = "zstd"
    seed: int = Field(2024, ge=0)

    # ---- features ------------------------------------------------------------------------
    n_dense: int = Field(13, ge=0)
    # Categorical fields including ``user`` and ``item``; the other n_categorical - 2 are C1...
    n_categorical: int = Field(26, ge=2)
    # Vocabulary sizes of C1 .. C{n_categorical-2}: log-uniform from vocab_min to vocab_max,
    # unless vocab_sizes lists them explicitly.
    vocab_min: int = Field(10, ge=2)
    vocab_max: int = Field(100_000, ge=2)
    vocab_sizes: list[int] | None = None
    n_users: int = Field(100_000, ge=2)
    n_items: int = Field(50_000, ge=2)
    n_tags: int = Field(1_000, ge=2)
    max_tags: int = Field(4, ge=1)
    seq_len: int = Field(20, ge=1)  # longest item history
    zipf_exponent: float = Field(1.15, gt=0.0)
    # Users are less skewed (with 1.15 the top user alone would have ~14% of all rows).
    user_zipf_exponent: float = Field(0.9, gt=0.0)
    n_item_clusters: int = Field(50, ge=1)
    # Probability that a target or history item comes from the user's home cluster.
    cluster_affinity: float = Field(0.5, ge=0.0, le=1.0)
    # Shares of the user / item latent variance from the cluster and from the attribute fields
    # (the rest is the id's own): how much the interactions generalise beyond the raw ids.
    cluster_share: float = Field(0.3, ge=0.0, le=1.0)
    attribute_share: float = Field(0.4, ge=0.0, le=1.0)
    dense_missing_max: float = Field(0.45, ge=0.0, lt=1.0)
    id_type: Literal["str", "int"] = "str"

    # ---- planted model -------------------------------------------------------------------
    latent_dim: int = Field(8, ge=1)
    n_pairs: int = Field(8, ge=0)  # FM-style field pairs (the first two: user x item, user x tags)
    # Only fields with at most this many ids (and user, item, tags) take part in the pairs and
    # make up the attribute part of user / item latents; larger fields act first-order only.
    interaction_vocab_max: int = Field(2_000, ge=2)
    # Standard deviation (in logits) of each component; 0 switches it off.
    first_order_scale: float = Field(0.8, ge=0.0)
    pairwise_scale: float = Field(0.9, ge=0.0)
    triple_scale: float = Field(0.5, ge=0.0)
    mlp_scale: float = Field(0.5, ge=0.0)
    dense_scale: float = Field(0.6, ge=0.0)
    seq_scale: float = Field(0.6, ge=0.0)
    target_ctr: float = Field(0.2, gt=0.0, lt=1.0)

    # ---- days and drift ------------------------------------------------------------------
    # The train split spans days 0 .. days-1 in equal contiguous parts, in order; valid and test
    # are drawn on day ``days`` (the day after training, as in production). On day d every
    # component's scale is ``scale * max(0, 1 + drift * d * u_g)`` with one fixed u_g in [-1, 1]
    # per component, and the bias is solved again so that the mean CTR stays ``target_ctr``:
    # which interactions matter shifts from day to day. drift 0: one law for every day.
    days: int = Field(1, ge=1)
    drift: float = Field(0.0, ge=0.0)
    # Logits added to the bias per day (day d: + bias_drift * d): the base rate moves over the
    # days, on top of (or without) the drift of the interactions. 0: the mean CTR stays at
    # target_ctr every day.
    bias_drift: float = 0.0
    # Only this day's rows in the train split (rows_train // days of them, from streams of
    # their own): the shard of one day, for searches run day by day (DistDNAS). None: all days.
    train_day: int | None = Field(None, ge=0)
    # A ``ts`` column (seconds): the rows of each day spread evenly over its 86,400 seconds in
    # row order (day d starts at d * 86400), declared as the time column with day partitions, so
    # ``train.streaming`` trains day by day; and a ``request_id`` column, unique over the splits
    # (the key that joins logged predictions to rows, see :meth:`request_ids`). False: neither
    # (the sets written before them).
    timestamps: bool = False

    # ---- schema --------------------------------------------------------------------------
    # Fields with a larger vocabulary are hashed in the schema (None: never).
    hash_above: int | None = Field(50_000, ge=1)
    dense_encoding: Literal["log1p", "bucketize"] = "log1p"

    @model_validator(mode="after")
    def _check(self) -> SyntheticConfig:
        if self.vocab_max < self.vocab_min:
            raise ValueError(f"vocab_max ({self.vocab_max}) < vocab_min ({self.vocab_min})")
        if self.vocab_sizes is not None:
            if len(self.vocab_sizes) != self.n_categorical - 2:
                raise ValueError(
                    f"vocab_sizes has {len(self.vocab_sizes)} entries, need n_categorical - 2 = "
                    f"{self.n_categorical - 2}"
                )
            if min(self.vocab_sizes, default=2) < 2:
                raise ValueError("every vocab_sizes entry must be >= 2")
        if self.cluster_share + self.attribute_share > 1.0:
            raise ValueError("cluster_share + attribute_share must be <= 1")
        if self.n_item_clusters > self.n_items:
            raise ValueError(f"n_item_clusters ({self.n_item_clusters}) > n_items ({self.n_items})")
        if self.train_day is not None and self.train_day >= self.days:
            raise ValueError(f"train_day {self.train_day} is not one of the {self.days} training days (0 .. {self.days - 1})")
        if self.rows_train < self.days:
            raise ValueError(f"rows_train ({self.rows_train}) is less than one row per day ({self.days} days)")
        return self

    def rows(self, split: str) -> int:
        if split == "train" and self.train_day is not None:
            return self.rows_train // self.days
        return {"train": self.rows_train, "valid": self.rows_valid, "test": self.rows_test}[split]

    def row_days(self, split: str, start: int, n: int) -> np.ndarray | int:
        """The day of rows ``start .. start + n`` of ``split``: an array for the train split of
        several days, else one day for all of them."""
        if split != "train":
            return self.days if self.days > 1 else 0
        if self.train_day is not None:
            return self.train_day
        if self.days == 1:
            return 0
        return (np.arange(start, start + n, dtype=np.int64) * self.days) // self.rows_train

    def request_ids(self, split: str, start: int, n: int) -> np.ndarray:
        """The ``request_id`` of rows ``start .. start + n`` of ``split``: the row number, plus
        10^12 in valid and 2 * 10^12 in test."""
        return np.arange(start, start + n, dtype=np.int64) + REQUEST_ID_OFFSET[split]

    def row_times(self, split: str, start: int, n: int) -> np.ndarray:
        """The ``ts`` of rows ``start .. start + n`` of ``split`` (see ``timestamps``); its day
        (``ts // 86400``) is :meth:`row_days`'."""
        rows = np.arange(start, start + n, dtype=np.int64)
        if split == "train" and self.train_day is None:
            return rows * self.days * DAY_SECONDS // self.rows_train
        day = self.row_days(split, start, n)
        return day * DAY_SECONDS + rows * DAY_SECONDS // self.rows(split)
