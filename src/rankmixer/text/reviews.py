"""``rankmixer text extract``: review texts in a CSV -> one JSON line of triplets per review.

The CSV has a header; ``column`` names the text column. Each text is tokenised
(rankmixer.text.tokenize), cut to the model's ``max_len`` words (counted as ``truncated``) and
run through the model. A line of the file that is not valid UTF-8 is an error naming the line
(``on_bad_row="fail"``), or is dropped and counted (``"skip"``: the physical line goes, so a
quoted field spanning lines loses that line). An empty or blank text gives no output line and
is counted as ``empty``. Every output line holds ``row`` (0-based data row of the CSV), the
``tokens`` and the ``triplets`` (aspect and opinion words, their [first, last] word indices and
the sentiment; ``null`` sentiment for a pair-task model).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rankmixer.core.files import atomic_file, check_output, output_format
from rankmixer.text.artifact import load_model_dir
from rankmixer.text.aste import Sentence
from rankmixer.text.model import TextTagger
from rankmixer.text.predict import predict
from rankmixer.text.tokenize import tokenize
from rankmixer.text.vocab import Vocabulary

__all__ = ["ReviewInputError", "ReviewTexts", "extract_triplets", "read_review_texts", "triplet_records"]

OnBadRow = Literal["fail", "skip"]


class ReviewInputError(ValueError):
    """The review file cannot be read; the message names the file and the line or column."""


@dataclass
class ReviewTexts:
    rows: list[tuple[int, str]] = field(default_factory=list)  # (data row, text)
    skipped: dict[str, int] = field(default_factory=lambda: {"non_utf8_lines": 0, "empty": 0})


def read_review_texts(path: Path | str, column: str = "text", on_bad_row: OnBadRow = "fail") -> ReviewTexts:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"review file not found: {path}")
    out = ReviewTexts()
    lines = []
    for number, raw in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            if on_bad_row == "fail":
                raise ReviewInputError(f"{path} line {number}: byte {e.start + 1} of the line is not UTF-8 "
                                       "(re-encode the file, or pass --on-bad-row skip to drop such lines)") from e
            out.skipped["non_utf8_lines"] += 1
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO("".join(lines), newline=""))
    if reader.fieldnames is None or column not in reader.fieldnames:
        found = ", ".join(reader.fieldnames or []) or "no header"
        raise ReviewInputError(f"{path}: no column {column!r} (found: {found}); pass --column")
    try:
        for row, record in enumerate(reader):
            text = record[column] or ""
            if not text.strip():
                out.skipped["empty"] += 1
                continue
            out.rows.append((row, text))
    except csv.Error as e:
        raise ReviewInputError(f"{path} line {reader.line_num}: {e}") from e
    return out


def triplet_records(model: TextTagger, vocab: Vocabulary, max_len: int, texts: list[str],
                    batch_size: int = 64) -> tuple[list, int]:
    """The triplets of each text (``None`` for a text with no words) and how many texts were cut
    to ``max_len`` words. A triplet record holds the aspect and opinion words, their [first,
    last] word indices and the sentiment. Shared by ``text extract`` and ``features reviews``."""
    tokens = [tokenize(text) for text in texts]
    keep = [k for k, ts in enumerate(tokens) if ts]
    sentences = [Sentence(tuple(tokens[k][:max_len])) for k in keep]
    truncated = sum(len(tokens[k]) > max_len for k in keep)
    out: list = [None] * len(texts)
    for k, sentence, extraction in zip(keep, sentences, predict(model, sentences, vocab, batch_size)):
        words = sentence.tokens
        out[k] = (words, [{"aspect": " ".join(words[t.aspect[0]:t.aspect[1] + 1]), "aspect_span": list(t.aspect),
                           "opinion": " ".join(words[t.opinion[0]:t.opinion[1] + 1]),
                           "opinion_span": list(t.opinion), "sentiment": t.sentiment}
                          for t in extraction.triplets])
    return out, truncated


def extract_triplets(
    model_dir: Path | str,
    input_path: Path | str,
    out: Path | str,
    column: str = "text",
    on_bad_row: OnBadRow = "fail",
    batch_size: int = 64,
) -> dict:
    """Write ``out`` (.jsonl) and return a report: reviews read, written, skipped, truncated."""
    output_format(out, {".jsonl": "jsonl"}, "triplets output")
    check_output(out, [input_path, model_dir], "triplets output")
    model, vocab, cfg = load_model_dir(model_dir)
    texts = read_review_texts(input_path, column, on_bad_row)
    records, truncated = triplet_records(model, vocab, cfg.train.max_len, [t for _, t in texts.rows], batch_size)
    # defensive: blank texts were counted already
    skipped = dict(texts.skipped, empty=texts.skipped["empty"] + sum(r is None for r in records))
    written = n_triplets = 0
    with atomic_file(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for (row, _), record in zip(texts.rows, records):
            if record is None:
                continue
            words, triplets = record
            f.write(json.dumps({"row": row, "tokens": list(words), "triplets": triplets}, ensure_ascii=False) + "\n")
            written += 1
            n_triplets += len(triplets)
    return {"input": str(input_path), "output": str(out), "written": written, "skipped": skipped,
            "truncated": truncated, "triplets": n_triplets}
