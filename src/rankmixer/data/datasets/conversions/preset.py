"""The ``conversions`` preset: the synthetic conversion log, prepared for one conversion window.

``data.preset_options``: the generator's config (:class:`.config.ConversionsConfig`) and
``window_days`` (default 7), the window whose label ``conversion`` the prepared data carries:
1 if the click converted within the window. Clicks the log followed for less than the window
(closer to its end) are censored: dropped, counted per split in the feature map's
``extras["censored"]``, never labelled 0. ``extras["bayes"]`` holds, per split, the Bayes-optimal
AUC / logloss of the planted probability ``p (1 - exp(-beta_a T))`` on the kept rows. Each window
is its own prepared dataset (the window is in the schema's name); one raw log (``data.raw``)
serves them all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from rankmixer.core.metrics import auc, logloss
from rankmixer.data.datasets.base import TransformContext, register_preset
from rankmixer.data.datasets.common import bookkeeping
from rankmixer.data.datasets.conversions.columns import LABEL, schema as feature_schema
from rankmixer.data.datasets.conversions.config import META_FILE, ConversionsConfig
from rankmixer.data.datasets.conversions.generator import true_window_probability
from rankmixer.data.datasets.conversions.log import CLICK, CONV, DAY_S, END, check_log, window_rows, window_seconds
from rankmixer.data.datasets.conversions.writer import generate, load_meta
from rankmixer.data.datasets.generated import SPLITS, GeneratedPreset
from rankmixer.data.reader import ROW_COL
from rankmixer.data.schema import Schema


@register_preset
class ConversionsPreset(GeneratedPreset):
    name = "conversions"
    description = ("synthetic click log with planted conversions and per-advertiser exponential delays; "
                   "the label of one conversion window (window_days), censored rows dropped")
    config_cls = ConversionsConfig
    meta_file = META_FILE
    writer = staticmethod(generate)
    meta_reader = staticmethod(load_meta)

    def __init__(self, window_days: float = 7.0, **options):
        super().__init__(**options)
        self.window_days = window_days
        self.window_s = window_seconds(window_days, "data.preset_options.window_days")

    def schema(self) -> Schema:
        return feature_schema(self.cfg, self.window_s)

    def transform(self, lf: pl.LazyFrame, ctx: TransformContext) -> pl.LazyFrame:
        check_log(lf.select(CLICK, CONV, END, ROW_COL).collect(), f"conversion log {ctx.raw_path}")
        return window_rows(lf, self.window_s, LABEL).select(
            *bookkeeping(lf), LABEL, *(c for c in lf.collect_schema().names() if not c.startswith("__")))

    def window_frame(self, path: Path, split: str, window_days: float | None = None) -> pl.DataFrame:
        """The raw rows of ``split`` (in file order) whose label for ``window_days`` (default: the
        preset's window) is known, with that label (``conversion``) and the planted probability
        of a conversion within the window (``bayes_p``). The split's other rows are censored for
        that window (counted by :meth:`extras`)."""
        window_s = self.window_s if window_days is None else window_seconds(window_days)
        files = [Path(path) / f for f in self.split_files(split)]
        kept = window_rows(pl.scan_parquet(files), window_s, LABEL).collect()
        p = true_window_probability(kept["p_conversion"].to_numpy(), kept["delay_rate"].to_numpy(), window_s / DAY_S)
        return kept.with_columns(pl.Series("bayes_p", p))

    def extras(self, path: Path) -> dict:
        """The window, the censored rows of each split, and the Bayes-optimal metrics of the
        window's label on the kept rows (one pass over the raw log)."""
        out: dict = {"window_days": self.window_days, "window_s": self.window_s, "censored": {}, "bayes": {}}
        for split in SPLITS:
            files = [Path(path) / f for f in self.split_files(split)]
            rows = pl.scan_parquet(files).select(pl.len()).collect().item()
            kept = self.window_frame(path, split)
            out["censored"][split] = {"rows": rows, "censored": rows - kept.height}
            p, y = kept["bayes_p"].to_numpy(), kept[LABEL].to_numpy().astype(np.uint8)
            out["bayes"][split] = {"auc": auc(y, p) if 0 < y.sum() < len(y) else None,
                                   "logloss": logloss(y, p) if len(y) else None}
        return out
