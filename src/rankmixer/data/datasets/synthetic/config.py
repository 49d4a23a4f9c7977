"""What defines a synthetic data set: :class:`SyntheticConfig` and the layout constants.

The same config (seed included) gives the same files byte for byte. ``chunk_rows`` and
``rows_per_file`` change only the file layout, never the rows; rows are drawn ``BLOCK_ROWS`` at
a time, each block from its own random stream, which is why that size is a constant and not a
config field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rankmixer.core.strict import StrictModel
from rankmixer.data.datasets.generated import SPLITS  # noqa: F401  (re-exported: the split names)

META_FILE = "synthetic_meta.json"
SCHEMA_FILE = "schema.yaml"
# Rows per independent random stream. Fixed (not a config field) so that the chunk size never
# changes the data.
BLOCK_ROWS = 32_768


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
        return self

    def rows(self, split: str) -> int:
        return {"train": self.rows_train, "valid": self.rows_valid, "test": self.rows_test}[split]
