"""The Amazon reviews JSON-lines reader on a hand-made sample: the reviews table it makes, and
its bad lines (an error naming the line, or counted skips)."""

from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rankmixer.cli import app
from rankmixer.data.datasets.reviews import AmazonFormatError, read_amazon_reviews, write_amazon_reviews

GOOD = [
    {"reviewerID": "A1", "asin": "B001", "reviewerName": "x", "helpful": [0, 0],
     "reviewText": "The battery life is great.", "overall": 5.0, "summary": "ok", "unixReviewTime": 1400457600},
    {"reviewerID": "A2", "asin": "B002", "reviewText": "Écran superbe, clavier médiocre.", "overall": 3,
     "unixReviewTime": 1400000000},
    {"reviewerID": "A3", "asin": "B001", "overall": 1.0, "unixReviewTime": 1300000000},  # no text
]


def sample(path, bad_lines=()):
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in GOOD]
    lines.insert(2, b"")  # a blank line is ignored
    for at, raw in bad_lines:
        lines.insert(at, raw)
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_reads_the_reviews_table(tmp_path):
    path = tmp_path / "reviews.json"
    sample(path)
    table, skipped = read_amazon_reviews(path)
    assert skipped["bad_lines"] == 0
    assert table.to_pydict() == {
        "item": ["B001", "B002", "B001"],
        "text": ["The battery life is great.", "Écran superbe, clavier médiocre.", None],
        "user": ["A1", "A2", "A3"],
        "rating": [5.0, 3.0, 1.0],
        "time": [1400457600, 1400000000, 1300000000],
    }
    gz = tmp_path / "reviews.json.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_amazon_reviews(gz)[0].equals(table)


@pytest.mark.parametrize("raw,why", [
    (b'{"asin": "B9", "reviewText": "ok"', "not JSON"),
    (b'["B9", "ok"]', "not a JSON object"),
    (b'{"reviewText": "no item"}', "no asin"),
    (b'{"asin": "B9", "overall": "five"}', "overall"),
    (b'{"asin": "B9", "reviewText": 12}', "reviewText is int"),
    (b'{"asin": "B9", "unixReviewTime": 1.5}', "unixReviewTime"),
    (b'{"asin": "B9", "reviewText": "bad \xff bytes"}', "UTF-8"),
])
def test_a_bad_line_is_named_or_skipped(tmp_path, raw, why):
    path = tmp_path / "reviews.json"
    sample(path, [(1, raw)])  # the second line of the file
    with pytest.raises(AmazonFormatError, match=f"line 2: .*{why}"):
        read_amazon_reviews(path)
    table, skipped = read_amazon_reviews(path, on_bad_row="skip")
    assert table.num_rows == 3 and skipped["bad_lines"] == 1 and "line 2" in skipped["first"]


def test_write_and_command(tmp_path):
    path = tmp_path / "reviews.json"
    sample(path, [(0, b"not json")])
    out = tmp_path / "reviews.parquet"
    with pytest.raises(AmazonFormatError, match="line 1"):
        write_amazon_reviews(path, out)
    assert not out.exists()
    r = CliRunner().invoke(app, ["features", "amazon-reviews", "--input", str(path), "--out", str(out),
                                "--on-bad-row", "skip"])
    assert r.exit_code == 0, r.output
    assert "3 reviews of 2 items" in r.output and "skipped 1" in r.output
    assert pq.read_table(out).column("item").to_pylist() == ["B001", "B002", "B001"]
    r = CliRunner().invoke(app, ["features", "amazon-reviews", "--input", str(path), "--out", str(out)])
    assert r.exit_code == 2 and "line 1" in r.output
    r = CliRunner().invoke(app, ["features", "amazon-reviews", "--input", str(path), "--out", str(path)])
    assert r.exit_code == 2
