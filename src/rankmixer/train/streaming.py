"""Streaming training over days: which days a run streams, and its progressive-validation report.

Production ranking models train on a stream of logs, one day after another, and are judged by
progressive validation: each day's rows are scored by the model trained on the days before,
then trained on (so every score is out of sample, and the mean over days is what serving saw).
The trainer (train/trainer.py) runs the days as its passes: pass i is the i-th streamed day,
evaluated before it trains, checkpointed when it ends, resumed inside it after a kill (the
day's batch order is a pure function of the seed and the pass). This module holds what is about
days alone: the day plan and the report.
"""

from __future__ import annotations

import math

from rankmixer.data.feature_map import DayInfo, FeatureMap
from rankmixer.train.config import StreamingConfig

__all__ = ["progressive_report", "stream_days"]


def stream_days(fm: FeatureMap, cfg: StreamingConfig) -> tuple[list[DayInfo], list[int]]:
    """(the days to train on, in day order; the days missing between the first and the last,
    which ``missing_days: skip`` leaves out and ``error`` refuses)."""
    if not fm.days:
        raise ValueError(f"train.streaming needs the training split prepared by day (a schema with a time_column "
                         f"and days; for the synthetic set data.preset_options.timestamps=true): {fm.dataset!r} has "
                         "no day partitions")
    first = fm.days[0].day if cfg.first_day is None else cfg.first_day
    last = fm.days[-1].day if cfg.last_day is None else cfg.last_day
    days = [d for d in fm.days if first <= d.day <= last]
    if not days:
        raise ValueError(f"train.streaming.first_day/last_day select days {first} .. {last}, none of which is "
                         f"prepared (days {fm.days[0].day} .. {fm.days[-1].day})")
    have = {d.day for d in days}
    missing = [d for d in range(first, last + 1) if d not in have]
    if missing and cfg.missing_days == "error":
        shown = ", ".join(map(str, missing[:10])) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
        raise ValueError(f"train.streaming: day(s) {shown} between {first} and {last} have no training rows; "
                         "fill them, narrow first_day/last_day, or set train.streaming.missing_days=skip")
    return days, missing


def _means(records: list[dict]) -> dict[str, float]:
    keys = [k for k, v in records[0].items() if isinstance(v, float)] if records else []  # the metrics, not day/rows/step
    out = {}
    for k in keys:
        vals = [r[k] for r in records if isinstance(r.get(k), float) and math.isfinite(r[k])]
        out[k] = sum(vals) / len(vals) if vals else math.nan
    return out


def progressive_report(records: list[dict], skipped: list[int]) -> dict:
    """The per-day progressive metrics (``records``: one per streamed day, in order) with their
    means over every day and over the days after the first (whose rows an untrained model
    scored), and the days skipped as missing."""
    return {"days": records, "mean": _means(records), "mean_after_first": _means(records[1:]),
            "skipped_days": skipped}
