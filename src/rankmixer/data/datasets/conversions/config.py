"""What defines a synthetic conversion log: :class:`ConversionsConfig`.

The same config (seed included) gives the same files byte for byte; ``chunk_rows`` and
``rows_per_file`` change only the file layout, never the rows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rankmixer.core.strict import StrictModel

META_FILE = "conversions_meta.json"
SCHEMA_FILE = "schema.yaml"
BLOCK_ROWS = 32_768  # rows per independent random stream
CALIBRATION_ROWS = 100_000  # rows that standardise the planted logit and solve its bias


class ConversionsConfig(StrictModel):
    """A click log with planted conversions and per-advertiser exponential delays.

    Each click converts with ``p = sigmoid(logit_scale * z(x) + b)``, ``z`` a standardised sum
    of first-order weights of user, advertiser, item and context, an FM pairwise user x item
    term (``pairwise_share`` of its variance) and a linear dense term; ``b`` sets the mean of
    ``p`` to ``target_cvr``. A converting click converts ``D ~ Exp(beta_a)`` after it, with
    advertiser ``a``'s rate ``beta_a`` drawn once: its mean delay ``1 / beta_a`` log-uniform in
    [``mean_delay_days_min``, ``mean_delay_days_max``]. So the true probability of a conversion
    within ``T`` is ``p * (1 - exp(-beta_a T))``.

    Time: training clicks are uniform over ``[0, train_days)`` days and the training log ends at
    ``train_days`` (the last days' long-window labels are censored). Validation and test clicks
    are uniform over the ``eval_days`` after that, each log followed for ``eval_follow_days``
    more days, so no window up to ``eval_follow_days`` is censored there.
    """

    # ---- size and layout -----------------------------------------------------------------
    rows_train: int = Field(200_000, ge=1)
    rows_valid: int = Field(50_000, ge=1)
    rows_test: int = Field(50_000, ge=1)
    chunk_rows: int = Field(500_000, ge=1)
    rows_per_file: int = Field(50_000_000, ge=1)
    compression: Literal["zstd", "snappy", "none"] = "zstd"
    seed: int = Field(2026, ge=0)

    # ---- features ------------------------------------------------------------------------
    n_users: int = Field(5_000, ge=2)
    n_advertisers: int = Field(40, ge=1)
    n_items: int = Field(2_000, ge=2)
    n_contexts: int = Field(24, ge=1)
    n_dense: int = Field(3, ge=0)  # standard-normal dense features d0 ..
    zipf_exponent: float = Field(1.05, gt=0.0)  # popularity of users, items and advertisers

    # ---- planted conversion model --------------------------------------------------------
    target_cvr: float = Field(0.15, gt=0.0, lt=1.0)  # mean conversion probability (any delay)
    logit_scale: float = Field(1.2, ge=0.0)  # standard deviation of the logit before the bias
    latent_dim: int = Field(4, ge=1)
    pairwise_share: float = Field(0.4, ge=0.0, le=1.0)
    dense_share: float = Field(0.15, ge=0.0, le=1.0)

    # ---- delays and time -----------------------------------------------------------------
    mean_delay_days_min: float = Field(0.25, gt=0.0)
    mean_delay_days_max: float = Field(6.0, gt=0.0)
    train_days: float = Field(21.0, gt=0.0)
    eval_days: float = Field(3.0, gt=0.0)
    eval_follow_days: float = Field(7.0, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> ConversionsConfig:
        if self.mean_delay_days_min > self.mean_delay_days_max:
            raise ValueError(f"mean_delay_days_min {self.mean_delay_days_min} is above "
                             f"mean_delay_days_max {self.mean_delay_days_max}")
        if self.pairwise_share + self.dense_share > 1.0:
            raise ValueError("pairwise_share + dense_share must be at most 1 (the rest is first-order)")
        return self

    def rows(self, split: str) -> int:
        return {"train": self.rows_train, "valid": self.rows_valid, "test": self.rows_test}[split]

    def click_span_days(self, split: str) -> tuple[float, float, float]:
        """(first click day, day after the last click, end of the log) of ``split``, in days."""
        if split == "train":
            return 0.0, self.train_days, self.train_days
        start = self.train_days
        return start, start + self.eval_days, start + self.eval_days + self.eval_follow_days
