"""What defines a synthetic behaviour data set: :class:`BehaviourConfig` and the layout constants.

The same config (seed included) gives the same files byte for byte. ``chunk_rows`` and
``rows_per_file`` change only the file layout, never the rows; rows are drawn ``BLOCK_ROWS`` at
a time, each block from its own random stream (histories of up to 1,000 behaviours make a row
heavy, hence smaller blocks than the synthetic set's).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rankmixer.core.strict import StrictModel

META_FILE = "behaviour_meta.json"
SCHEMA_FILE = "schema.yaml"
# Rows per independent random stream. Fixed (not a config field) so that the chunk size never
# changes the data.
BLOCK_ROWS = 4_096


class BehaviourConfig(StrictModel):
    """Everything that defines a behaviour data set. Same config (seed included) -> same files."""

    # ---- size and layout -----------------------------------------------------------------
    rows_train: int = Field(100_000, ge=1)
    rows_valid: int = Field(10_000, ge=1)
    rows_test: int = Field(10_000, ge=1)
    # Rows buffered before each write (the memory bound: about 8 KB a row in Arrow at the
    # default lengths). Each write makes equal row groups of at most 100k rows.
    chunk_rows: int = Field(20_000, ge=1)
    # A split with more rows is written as <split>-00000.parquet, <split>-00001.parquet, ...
    rows_per_file: int = Field(2_000_000, ge=1)
    compression: Literal["zstd", "snappy", "none"] = "zstd"
    seed: int = Field(2024, ge=0)

    # ---- entities --------------------------------------------------------------------------
    n_users: int = Field(20_000, ge=2)
    n_items: int = Field(20_000, ge=2)
    # Item i belongs to category i % n_categories (popularity is Zipf within a category).
    n_categories: int = Field(100, ge=2)
    n_types: int = Field(3, ge=1)  # behaviour types (click, cart, buy, ...); rarer ones weigh more
    zipf_exponent: float = Field(1.1, gt=0.0)  # categories and items within a category
    user_zipf_exponent: float = Field(0.9, gt=0.0)

    # ---- histories ---------------------------------------------------------------------------
    seq_len_max: int = Field(1_000, ge=1)
    empty_rate: float = Field(0.03, ge=0.0, le=1.0)  # rows with no history at all
    n_interests: int = Field(4, ge=1)  # interest slots per user (categories)
    # Per behaviour and slot: probability that the slot's category changes (drift).
    drift_rate: float = Field(0.004, ge=0.0, le=1.0)
    # Periodic returns: a behaviour repeats the item of ``return_period`` positions earlier
    # with probability ``return_rate``.
    return_period: int = Field(500, ge=1)
    return_rate: float = Field(0.1, ge=0.0, le=1.0)
    dt_mean_gap: float = Field(600.0, gt=0.0)  # mean seconds between two behaviours

    # ---- session hopping (``history: sessions``; :mod:`.history`) ---------------------------
    # ``drift``: the drifting interests above. ``sessions``: the history is a run of sessions,
    # each on one of the user's ``n_interests`` themes (a category), drawn by the user's own
    # theme weights, so themes come back session after session; no drift, no periodic returns.
    history: Literal["drift", "sessions"] = "drift"
    session_len_mean: float = Field(6.0, ge=1.0)  # behaviours per session (geometric)
    within_gap_mean: float = Field(60.0, gt=0.0)  # seconds between two behaviours of a session
    # Seconds between sessions: session_pause_min + Exponential(session_pause_mean). With a
    # minimum far above any within-session gap, a splitter with a gap between the two (e.g.
    # 1800 s) recovers the sessions exactly.
    session_pause_min: float = Field(3_600.0, gt=0.0)
    session_pause_mean: float = Field(21_600.0, gt=0.0)
    theme_noise: float = Field(0.1, ge=0.0, le=1.0)  # a behaviour off its session's theme
    # A session that explores a popular category off the user's themes (a one-off visit)
    explore_rate: float = Field(0.2, ge=0.0, le=1.0)
    theme_sessions: int = Field(8, ge=1)  # the theme term looks at the last N sessions

    # ---- candidates (the item whose click is predicted) ----------------------------------
    # Drawn from a recent behaviour's category (half the time its very item), from the
    # behaviour return_period positions back (+-return_window), from the user's current
    # interests, or else from global popularity.
    p_cand_recent: float = Field(0.3, ge=0.0, le=1.0)
    p_cand_return: float = Field(0.15, ge=0.0, le=1.0)
    p_cand_interest: float = Field(0.25, ge=0.0, le=1.0)

    # ---- planted model -------------------------------------------------------------------
    attention_window: int = Field(32, ge=1)  # target attention looks at the last N behaviours
    same_category_match: float = Field(0.5, ge=0.0, le=1.0)  # similarity of a same-category item
    last_k: int = Field(5, ge=1)
    recency_decay: float = Field(0.7, gt=0.0, le=1.0)
    return_window: int = Field(2, ge=0)
    # Standard deviation (in logits) of each component; 0 switches it off.
    first_order_scale: float = Field(0.5, ge=0.0)
    attention_scale: float = Field(1.0, ge=0.0)
    recency_scale: float = Field(1.0, ge=0.0)
    return_scale: float = Field(1.0, ge=0.0)
    # Session terms (``history: sessions`` only; :mod:`.terms`): the share of the last
    # ``theme_sessions`` sessions on the candidate's theme, and whether the newest session is.
    theme_scale: float = Field(0.0, ge=0.0)
    session_scale: float = Field(0.0, ge=0.0)
    target_ctr: float = Field(0.2, gt=0.0, lt=1.0)

    # ---- schema --------------------------------------------------------------------------
    # max_len of the `hist` feature (None: seq_len_max). The return term needs at least
    # return_period + return_window positions.
    hist_max_len: int | None = Field(None, ge=1)
    # With a gap (seconds), ``hist`` also gets the derived field ``session`` (sessions cut where
    # two behaviours lie more than ``session_gap`` apart; data.schema.SessionSplit), for MoS.
    session_gap: float | None = Field(None, gt=0.0)
    max_sessions: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _check(self) -> BehaviourConfig:
        if self.n_categories > self.n_items:
            raise ValueError(f"n_categories ({self.n_categories}) > n_items ({self.n_items})")
        mix = self.p_cand_recent + self.p_cand_return + self.p_cand_interest
        if mix > 1.0 + 1e-12:
            raise ValueError(f"p_cand_recent + p_cand_return + p_cand_interest = {mix} > 1")
        if self.history == "drift" and (self.theme_scale or self.session_scale):
            raise ValueError("theme_scale and session_scale need history: sessions (they read the sessions' themes)")
        if self.history == "sessions" and self.session_pause_min <= 30 * self.within_gap_mean:
            raise ValueError(f"session_pause_min ({self.session_pause_min}) must exceed 30 x within_gap_mean "
                             f"({self.within_gap_mean}), or sessions cannot be told apart by their gaps")
        if self.return_window >= self.return_period:
            raise ValueError(f"return_window ({self.return_window}) must be < return_period "
                             f"({self.return_period})")
        return self

    def rows(self, split: str) -> int:
        return {"train": self.rows_train, "valid": self.rows_valid, "test": self.rows_test}[split]

    @property
    def max_len(self) -> int:
        """Positions the schema keeps per history (the most recent ones)."""
        return self.hist_max_len or self.seq_len_max
