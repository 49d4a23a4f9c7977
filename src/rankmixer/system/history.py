"""The job history: every measurement ``tune-system`` made, in one Parquet file.

One row per measurement (:func:`rankmixer.system.measure.record_of`): the setting and the
hardware as JSON text, the outcome columns as numbers, failed runs with their reason. Appending
takes an exclusive lock on ``FILE.lock`` (several processes may measure into one history) and
replaces the file atomically, so an interrupted append leaves the previous history whole. A file
at the path that is not a history (no ``fingerprint`` and ``kind`` columns) is never replaced.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from rankmixer.core.files import atomic_file
from rankmixer.core.hardware import hardware_features, hardware_fingerprint

__all__ = ["HistoryError", "append_records", "new_record", "read_history"]

_JSON_COLUMNS = ("setting", "hardware")
_SCHEMA = {
    "key": pl.Utf8, "setting": pl.Utf8, "origin": pl.Utf8, "kind": pl.Utf8, "status": pl.Utf8, "reason": pl.Utf8,
    "samples_per_s": pl.Float64, "peak_rss_mb": pl.Float64, "step_ms_median": pl.Float64, "params": pl.Int64,
    "timed_steps": pl.Int64, "wall_seconds": pl.Float64, "fingerprint": pl.Utf8, "hardware": pl.Utf8, "time": pl.Utf8,
}


def new_record(key: str, setting: dict, origin: str, kind: str, result: dict, wall_seconds: float | None = None) -> dict:
    """One history row: what was run (``setting``, under ``key``), what came of it (``result``:
    ``status``, ``reason`` and the measured columns it has), on this machine's hardware, now."""
    return {
        "key": key, "setting": setting, "origin": origin, "kind": kind,
        "status": result.get("status", "failed"), "reason": result.get("reason"),
        **{c: result.get(c) for c in ("samples_per_s", "peak_rss_mb", "step_ms_median", "params", "timed_steps")},
        "wall_seconds": wall_seconds, "fingerprint": hardware_fingerprint(), "hardware": hardware_features(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


class HistoryError(ValueError):
    """A history file that cannot be read or extended; the message names it."""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _frame(path: Path) -> pl.DataFrame:
    try:
        df = pl.read_parquet(path)
    except Exception as e:
        raise HistoryError(f"{path} is not a readable Parquet file ({type(e).__name__}: {e}); "
                           "tune-system neither reads nor replaces it") from None
    missing = [c for c in ("kind", "fingerprint", "setting") if c not in df.columns]
    if missing:
        raise HistoryError(f"{path} is not a tune-system history (no {', '.join(missing)} column); "
                           "tune-system neither reads nor replaces it")
    return df


def read_history(path: Path | str) -> list[dict]:
    """Every record of the history at ``path`` (none if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = _frame(path).to_dicts()
    for r in rows:
        for c in _JSON_COLUMNS:
            r[c] = json.loads(r[c]) if r.get(c) else {}
    return rows


def append_records(path: Path | str, records: list[dict]) -> int:
    """Add ``records`` to the history at ``path`` (created if absent); returns its new size."""
    path = Path(path)
    if not records:
        return len(read_history(path))
    new = pl.DataFrame([{c: (json.dumps(r.get(c), sort_keys=True) if c in _JSON_COLUMNS else r.get(c))
                         for c in _SCHEMA} for r in records], schema=_SCHEMA)
    with _locked(path):
        df = pl.concat([_frame(path).select(list(_SCHEMA)).cast(_SCHEMA), new]) if path.exists() else new
        with atomic_file(path) as tmp:
            df.write_parquet(tmp)
    return df.height
