"""What defines a review-ranking data set: :class:`ReviewsConfig` and the layout constants.

The same config (seed included) and the same ASTE-V2 files give the same files byte for byte.
``chunk_rows`` and ``rows_per_file`` change only the file layout, never the rows; impressions
are drawn ``BLOCK_ROWS`` at a time, each block from its own random stream.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rankmixer.core.strict import StrictModel

META_FILE = "reviews_meta.json"
SCHEMA_FILE = "schema.yaml"
REVIEWS_FILE = "reviews.parquet"
# Impressions per independent random stream; a constant so that the chunk size never changes the data.
BLOCK_ROWS = 16_384


class ReviewsConfig(StrictModel):
    """Everything that defines a review-ranking data set. Same config -> same files."""

    # ---- size and layout -----------------------------------------------------------------
    rows_train: int = Field(40_000, ge=1)
    rows_valid: int = Field(5_000, ge=1)
    rows_test: int = Field(5_000, ge=1)
    chunk_rows: int = Field(100_000, ge=1)
    rows_per_file: int = Field(10_000_000, ge=1)
    compression: Literal["zstd", "snappy", "none"] = "zstd"
    seed: int = Field(2024, ge=0)

    # ---- where the review sentences come from ---------------------------------------------
    # ASTE-Data-V2 root (relative paths: from the working directory) and the datasets and split
    # whose sentences become reviews; their gold triplets are the items' true aspect sentiments.
    aste_dir: str = "../shared/data/aste-v2"
    aste_datasets: list[str] = Field(default_factory=lambda: ["res14"], min_length=1)
    aste_split: Literal["train", "dev", "test"] = "train"

    # ---- entities ------------------------------------------------------------------------
    n_users: int = Field(5_000, ge=2)
    n_items: int = Field(2_000, ge=2)
    reviews_min: int = Field(1, ge=1)
    reviews_max: int = Field(10, ge=1)
    # The taste aspects: the most frequent (normalised) aspects of the sampled sentences.
    n_aspects: int = Field(12, ge=1)
    # A review is drawn for one of the taste aspects with this probability (else: any sentence).
    aspect_review_rate: float = Field(0.8, ge=0.0, le=1.0)
    # Each item is good or bad on each taste aspect (a fair coin); a review drawn for an aspect
    # matches that verdict with this probability (else: any sentence on the aspect).
    consistency: float = Field(0.85, ge=0.0, le=1.0)

    # ---- planted model -------------------------------------------------------------------
    # Standard deviation (in logits) of each term; 0 switches it off.
    first_order_scale: float = Field(0.5, ge=0.0)  # user + item biases
    review_scale: float = Field(1.5, ge=0.0)  # sum over aspects of taste x net sentiment share
    target_ctr: float = Field(0.2, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> ReviewsConfig:
        if self.reviews_max < self.reviews_min:
            raise ValueError(f"reviews_max ({self.reviews_max}) < reviews_min ({self.reviews_min})")
        return self

    def rows(self, split: str) -> int:
        return {"train": self.rows_train, "valid": self.rows_valid, "test": self.rows_test}[split]
