"""A reader for a common real layout of reviews: Amazon reviews as JSON lines (one object a
line with ``reviewerID``, ``asin``, ``reviewText``, ``overall``, ``unixReviewTime``; e.g. the
McAuley Amazon review dumps; ``.gz`` files are read compressed) -> the reviews table
``rankmixer features reviews`` reads: ``item`` (= asin), ``text`` (= reviewText), ``user``
(= reviewerID), ``rating`` (= overall) and ``time`` (= unixReviewTime, seconds).

Bad lines: a line that is not UTF-8, not a JSON object, lacks ``asin`` or holds a value of the
wrong type (``asin`` / ``reviewerID`` / ``reviewText`` not strings, ``overall`` not a number,
``unixReviewTime`` not an integer) is an error naming the file and line; with
``on_bad_row="skip"`` it is dropped and counted. A missing or empty ``reviewText`` is kept as a
null/empty text (the features command counts it as an empty review); blank lines are ignored.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from rankmixer.core.files import atomic_file, check_output, output_format

COLUMNS = {"asin": "item", "reviewText": "text", "reviewerID": "user", "overall": "rating", "unixReviewTime": "time"}
ARROW = pa.schema([pa.field("item", pa.string(), nullable=False), pa.field("text", pa.string()),
                   pa.field("user", pa.string()), pa.field("rating", pa.float64()), pa.field("time", pa.int64())])


class AmazonFormatError(ValueError):
    """A line of an Amazon reviews file cannot be read; the message names the file and line."""


def parse_line(raw: bytes) -> dict:
    """One line -> a reviews-table row; ValueError saying what is wrong."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"byte {e.start + 1} is not UTF-8") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if not isinstance(obj.get("asin"), str) or not obj["asin"]:
        raise ValueError("no asin string")
    for key in ("reviewText", "reviewerID"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ValueError(f"{key} is {type(obj[key]).__name__}, expected a string")
    rating, when = obj.get("overall"), obj.get("unixReviewTime")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, (int, float))):
        raise ValueError(f"overall is {rating!r}, expected a number")
    if when is not None and (isinstance(when, bool) or not isinstance(when, int)):
        raise ValueError(f"unixReviewTime is {when!r}, expected an integer")
    return {new: obj.get(old) for old, new in COLUMNS.items()}


def read_amazon_reviews(path: Path | str, on_bad_row: Literal["fail", "skip"] = "fail") -> tuple[pa.Table, dict]:
    """The reviews table of an Amazon JSON-lines file and what was skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Amazon reviews file not found: {path}")
    rows, skipped = [], {"bad_lines": 0, "first": None}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                rows.append(parse_line(raw))
            except ValueError as e:
                msg = f"{path} line {number}: {e}"
                if on_bad_row == "fail":
                    raise AmazonFormatError(f"{msg} (pass --on-bad-row skip to drop such lines)") from e
                skipped["bad_lines"] += 1
                skipped["first"] = skipped["first"] or msg
    return pa.Table.from_pylist(rows, schema=ARROW), skipped


def write_amazon_reviews(path: Path | str, out: Path | str, on_bad_row: Literal["fail", "skip"] = "fail") -> dict:
    """Write the reviews table of ``path`` to ``out`` (.parquet, atomically, never over the input)."""
    output_format(out, {".parquet": "parquet"}, "reviews table")
    check_output(out, [path], "reviews table")
    table, skipped = read_amazon_reviews(path, on_bad_row)
    with atomic_file(out) as tmp:
        pq.write_table(table, tmp)
    return {"input": str(path), "output": str(out), "reviews": table.num_rows,
            "items": len(set(table.column("item").to_pylist())), "skipped": skipped}
