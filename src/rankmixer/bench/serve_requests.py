"""Request bodies for ``rankmixer bench serve``: rows of a prepared split decoded back to raw values.

A load test should send what a caller sends: raw values, with the sizes real rows have. The
prepared split holds ids; the artifact's ``preprocess.json`` holds the vocabularies that made
them, so every id decodes to the raw value it encodes (an OOV id to a value no vocabulary holds,
so it stays OOV when scored). Rows are grouped by user (the group key), up to ``candidates`` rows
per request; the first row of a group gives the context (user and context features, histories).

Behaviour histories (``docs/sequence.md``) are sent as the prepared rows hold them: one array per
field, one value per position, oldest first, with each row's own length (the positions
preparation kept, at most ``max_len``). Categorical fields decode through their vocabulary (an
OOV position becomes ``null``, a missing value). A bucketized numeric field (a time gap) keeps
only a bucket id, so it decodes to a number *inside* that bucket (an integer when the bucket
holds one): it encodes back to the same id, and where the field declares an ``order`` the numbers
are chosen to keep it (each the smallest such value on the allowed side of its neighbour).
Encoding a decoded row reproduces the prepared ids exactly (tests/bench/test_serve_requests.py).

:func:`payload_stats` summarises what the bodies weigh (bytes, rows, history lengths) for the
report, since a history of 200 positions makes a request many times larger than a flat row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rankmixer.bench.harness import percentile

__all__ = ["bucket_values", "log_bucket_intervals", "payload_stats", "real_requests"]

# A bucket of numbers, as (low, high, low included, high included).
Interval = tuple[float, float, bool, bool]


def log_bucket_intervals(b: int) -> list[Interval]:
    """The numbers >= 0 whose log bucket (``floor(ln(v)^2)`` for v > 2, else ``floor(v)``;
    data/encode.py) is ``b``."""
    out: list[Interval] = []
    if 0 <= b <= 1:
        out.append((float(b), float(b + 1), True, False))
    elif b == 2:
        out.append((2.0, 2.0, True, True))
    lo, hi = math.exp(math.sqrt(b)) if b > 0 else 0.0, math.exp(math.sqrt(b + 1))
    if hi > 2.0:
        out.append((max(lo, 2.0), hi, lo > 2.0, False))
    return out


def _quantile_interval(k: int, bounds: list[float], first_id: int) -> list[Interval]:
    """The numbers whose quantile bucket id is ``k``: ``first_id`` + how many bounds they exceed."""
    j = k - first_id
    lo = bounds[j - 1] if j > 0 else -math.inf
    hi = bounds[j] if j < len(bounds) else math.inf
    return [(lo, hi, False, True)]


def _pick(intervals: list[Interval], floor: float) -> float | None:
    """The smallest 'safe' number >= ``floor`` in the intervals: ``floor`` itself when inside,
    else an integer strictly inside (away from the float rounding at a boundary), else the
    midpoint."""
    best = None
    for lo, hi, lo_in, hi_in in intervals:
        if floor > lo or (floor == lo and lo_in):
            if floor < hi or (floor == hi and hi_in):
                return floor  # the neighbour's value, already known to sit in this bucket
            continue
        if lo == hi:
            x = lo
        else:
            x = float(math.floor(lo) + 1) if not (lo_in and lo == math.floor(lo)) else lo
            if not x < hi:
                x = (lo + hi) / 2 if math.isfinite(hi) else lo + 1.0
        if best is None or x < best:
            best = x
    return best


def bucket_values(intervals: list[list[Interval] | None], order: str | None) -> list[float | int | None]:
    """One number per position (None where the bucket is unknown: an OOV id), each inside its
    position's bucket; with ``order`` (``non_increasing`` / ``non_decreasing`` from the oldest
    position, behaviours oldest first) the numbers keep it. Greedy from the end the order makes
    smallest, each the smallest value allowed: if any numbers in these buckets keep the order,
    these do."""
    n = len(intervals)
    steps = range(n - 1, -1, -1) if order == "non_increasing" else range(n)
    out: list[float | int | None] = [None] * n
    floor = 0.0
    for i in steps:
        if intervals[i] is None:
            continue
        x = _pick(intervals[i], floor if order else 0.0)
        if x is None:  # no number keeps the order (never for prepared rows): pick one anyway
            x = _pick(intervals[i], 0.0)
        floor = x
        out[i] = int(x) if x == int(x) else x
    return out


def _decoders(spec: dict, fm) -> dict[str, Any]:
    """Input column -> function(prepared frame) -> list of raw values per row."""
    from rankmixer.data.feature_map import behaviour_column
    from rankmixer.data.schema import FIRST_ID, OOV_ID, BehaviourFeature, Schema

    inv = {t: dict(zip(v["ids"], v["values"])) for t, v in spec["vocabularies"].items()}
    by_name = {f.name: f for f in fm.features}
    schema = Schema.model_validate(spec["schema"])
    behaviours = {f.name: f for f in schema.features if isinstance(f, BehaviourFeature)}
    out: dict[str, Any] = {}

    def category(table: dict, null_oov: bool):
        def dec(i: int) -> Any:
            if i == OOV_ID:
                return None if null_oov else "__oov__"
            return table.get(i, f"__unseen_{i}")
        return dec

    for f in fm.behaviours:
        schema_fields = {b.name: b for b in behaviours[f.name].fields}
        for info in f.fields:
            b = schema_fields[info.name]
            column = behaviour_column(f.name, info.name)
            source = behaviours[f.name].source_of(b)
            method = info.stats.get("bucketize")
            if method is None:
                if info.table not in inv:
                    raise ValueError(f"cannot decode behaviour field {f.name}.{info.name} (hashed) for a benchmark")
                dec = category(inv[info.table], True)
                out[source] = lambda df, c=column, dec=dec: [[dec(i) for i in v] for v in df.get_column(c).to_list()]
                continue
            if method == "log":
                table = inv[info.table]

                def buckets(i: int, table=table) -> list[Interval] | None:
                    return log_bucket_intervals(int(table[i])) if i in table else None
            else:
                bounds = info.stats["boundaries"]

                def buckets(i: int, bounds=bounds) -> list[Interval] | None:
                    return None if i == OOV_ID else _quantile_interval(i, bounds, FIRST_ID)

            out[source] = lambda df, c=column, buckets=buckets, order=b.order: [
                bucket_values([buckets(i) for i in v], order) for v in df.get_column(c).to_list()]

    for inp in spec["inputs"]:
        if inp["name"] in out:
            continue
        f = by_name.get(inp["name"])
        if f is None or f.kind in ("dense", "behaviour") or f.table not in inv:
            raise ValueError(f"cannot decode input {inp['name']!r} from the prepared data for a benchmark")
        dec = category(inv[f.table], False)
        if inp["kind"] == "category_list":
            out[inp["name"]] = lambda df, n=f.name, dec=dec: [[dec(i) for i in v] for v in df.get_column(n).to_list()]
        else:
            out[inp["name"]] = lambda df, n=f.name, dec=dec: [dec(i) for i in df.get_column(n).to_list()]
    return out


def real_requests(artifact_dir: str | Path, prepared_dir: str | Path, candidates: int, limit: int,
                  split: str = "test") -> list[dict[str, Any]]:
    """Request bodies from a prepared split, ids decoded back to the raw values they encode.

    Every input column of the artifact must be a feature (or a behaviour field) of the prepared
    data (true for the presets); a column is sent in the context when every feature reading it
    is in the ``user`` or ``context`` feature group."""
    import polars as pl

    from rankmixer.data.feature_map import GROUP_COLUMN, FeatureMap

    spec = json.loads((Path(artifact_dir) / "preprocess.json").read_text())
    fm = FeatureMap.load(prepared_dir)
    if fm.schema_hash != spec["schema_hash"]:
        raise ValueError(f"{prepared_dir} was prepared with another schema than the artifact's")
    decoders = _decoders(spec, fm)
    groups_of = set(fm.feature_groups.get("user", [])) | set(fm.feature_groups.get("context", []))
    context_cols = {i["name"] for i in spec["inputs"] if set(i["features"]) <= groups_of}
    df = pl.read_parquet(fm.split_files(split))
    groups = df.get_column(GROUP_COLUMN).to_numpy() if fm.has_group else np.arange(df.height) // candidates
    # Decode only the rows the bodies use: the first `limit` groups, `candidates` rows each.
    order = np.argsort(groups, kind="stable")
    picked: list[np.ndarray] = []
    start = 0
    while start < len(order) and len(picked) < limit:
        idx = order[start : start + candidates]
        same = idx[groups[idx] == groups[idx[0]]]
        start += len(same)
        picked.append(same)
    if not picked:
        return []
    # Context columns (histories included: the heavy ones) are decoded for each group's first row only.
    firsts = df[[int(same[0]) for same in picked]]
    rows = df[np.concatenate(picked).tolist()]
    ctx_cols = {n: dec(firsts) for n, dec in decoders.items() if n in context_cols}
    cand_cols = {n: dec(rows) for n, dec in decoders.items() if n not in context_cols}
    bodies: list[dict[str, Any]] = []
    at = 0
    for g, same in enumerate(picked):
        ctx = {c: v[g] for c, v in ctx_cols.items()}
        cands = [{c: v[at + k] for c, v in cand_cols.items()} for k in range(len(same))]
        bodies.append({"context": ctx, "candidates": cands})
        at += len(same)
    return bodies


def payload_stats(bodies: list[dict[str, Any]], encoded: list[bytes], spec: dict) -> dict:
    """What the request bodies weigh: bytes per request (mean, p50, p95, max), candidate rows per
    request, and per behaviour the positions per request (its first field's array, context or
    candidate)."""
    sizes = sorted(len(b) for b in encoded)
    rows = [len(b["candidates"]) for b in bodies]
    out: dict[str, Any] = {
        "requests": len(encoded), "bytes_mean": float(np.mean(sizes)) if sizes else 0.0,
        "bytes_p50": percentile(sizes, 50) if sizes else 0.0, "bytes_p95": percentile(sizes, 95) if sizes else 0.0,
        "bytes_max": sizes[-1] if sizes else 0, "rows_mean": float(np.mean(rows)) if rows else 0.0,
        "bytes_per_row_mean": float(sum(sizes) / max(sum(rows), 1)), "behaviours": {},
    }
    for f in spec["schema"]["features"]:
        if f.get("type") != "behaviour":
            continue
        first = f["fields"][0].get("source") or f"{f['name']}_{f['fields'][0]['name']}"
        lengths = []
        for b in bodies:
            for row in [b["context"]] + b["candidates"]:
                if first in row:
                    lengths.append(len(row[first] or []))
        lengths.sort()
        out["behaviours"][f["name"]] = {
            "max_len": f["max_len"], "positions_mean": float(np.mean(lengths)) if lengths else 0.0,
            "positions_p50": percentile(lengths, 50) if lengths else 0.0,
            "positions_max": lengths[-1] if lengths else 0,
            "empty_share": sum(1 for n in lengths if n == 0) / max(len(lengths), 1),
        }
    return out
