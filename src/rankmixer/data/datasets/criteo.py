"""Criteo display-advertising logs (Kaggle Display Advertising Challenge / Criteo 1TB).

Raw layout: tab-separated, no header, 40 fields per line::

    label  I1 .. I13  C1 .. C26

``label`` is 1 for a click; I1..I13 are integer counts (may be empty, a few may be negative);
C1..C26 are 32-bit hashes written as 8 hex characters (may be empty). The Kaggle ``train.txt``
(45M lines, 7 days) and each Criteo 1TB ``day_0`` .. ``day_23`` file (same 40 columns) both fit.
The Kaggle ``test.txt`` has no label column and cannot be used.

Encoding follows FuxiCTR / BARS ``Criteo_x1``: each I-feature is bucketized with the log rule
(v > 2 -> floor(ln(v)^2), else int(v); missing -> OOV), each C-feature is a categorical with a
vocabulary of values seen at least ``min_count`` times in the training split (default 10, the
usual setting for the full data; use 1 for small samples) or, with ``hash_buckets``, hashed.

Canonical frame (rows in file order; ``__file``/``__row`` kept):

* ``label``: Int64 0/1
* ``I1`` .. ``I13``: Float64, null = missing
* ``C1`` .. ``C26``: String, null = missing (an empty field)

Splits: a single file (``train.txt``, one ``day_N`` file, or a folder with just one of them)
or a folder of ``day_N`` files (``RawFiles.all``, in day order) is split by ratio 0.8/0.1/0.1
(the default ``split="ratio"``). A folder holding ``train`` + ``valid`` (or ``dev``/``val``) +
``test`` files (``.txt``/``.tsv``/``.csv``, e.g. the shared sample's train.tsv/dev.tsv/
test.tsv) comes back pre-split as ``RawFiles.by_split``, and preparation always keeps such
files as the splits; ``split="files"`` also records that in the schema and insists on it.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from rankmixer.data.datasets.base import (
    DatasetPreset,
    RawFiles,
    TransformContext,
    register_preset,
)
from rankmixer.data.datasets.common import bookkeeping, split_layout
from rankmixer.data.schema import (
    Bucketize,
    CategoricalFeature,
    LabelSpec,
    NumericalFeature,
    RawColumn,
    Schema,
    SourceSpec,
    SplitSpec,
)

DENSE = [f"I{i}" for i in range(1, 14)]
SPARSE = [f"C{i}" for i in range(1, 27)]

SOURCE = SourceSpec(
    format="tsv",
    has_header=False,
    columns=[RawColumn(name="label", type="int", required=True)]
    + [RawColumn(name=c, type="int") for c in DENSE]
    + [RawColumn(name=c, type="str") for c in SPARSE],
)

_EXTS = (".txt", ".tsv", ".csv", "")
_DAY_RE = re.compile(r"^day_(\d+)$")


@register_preset
class CriteoPreset(DatasetPreset):
    """Options: ``min_count`` (vocabulary threshold for C1..C26 and for the log buckets of
    I1..I13; default 10), ``hash_buckets`` (hash C1..C26 into this many buckets instead of a
    vocabulary; default None), ``split`` ("ratio", default, or "files": the schema's split
    method; "files" makes ``raw_files`` insist on a train/valid(dev)/test folder), ``ratios``
    (default 0.8/0.1/0.1) and ``seed`` of the ratio split."""

    name = "criteo"
    description = (
        "Criteo display advertising click logs (Kaggle challenge / 1TB): 13 log-bucketized "
        "counts and 26 hashed categoricals, label = click."
    )
    downloads = ()
    manual_instructions = (
        "The Kaggle Display Advertising Challenge data needs a Kaggle login: download it from "
        "https://www.kaggle.com/c/criteo-display-ad-challenge (or the mirror "
        "https://go.criteo.net/criteo-research-kaggle-display-advertising-challenge-dataset.tar.gz"
        " after accepting the Criteo terms), unpack it and point at train.txt or its folder. "
        "The Criteo 1TB Click Logs (Criteo AI Lab; day_0.gz .. day_23.gz, 24 days) have the "
        "same 40 tab-separated columns: gunzip them and point at one day_N file or at the "
        "folder of them."
    )

    def __init__(
        self,
        *,
        min_count: int = 10,
        hash_buckets: int | None = None,
        split: str = "ratio",
        ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 2024,
    ) -> None:
        if split not in ("ratio", "files"):
            raise ValueError(f"split must be 'ratio' or 'files', got {split!r}")
        self.split = split
        self.min_count = min_count
        self.hash_buckets = hash_buckets
        self.ratios = tuple(ratios)
        self.seed = seed

    def schema(self) -> Schema:
        dense = [
            NumericalFeature(
                name=c, bucketize=Bucketize(method="log", min_count=self.min_count)
            )
            for c in DENSE
        ]
        sparse = [
            CategoricalFeature(name=c, min_count=self.min_count, hash_buckets=self.hash_buckets)
            for c in SPARSE
        ]
        return Schema(
            name=self.name,
            source=SOURCE,
            labels=[LabelSpec(name="label")],
            features=dense + sparse,
            feature_groups={"dense": list(DENSE), "categorical": list(SPARSE)},
            split=SplitSpec(method=self.split, ratios=self.ratios, seed=self.seed),
        )

    def raw_files(self, path: Path) -> RawFiles:
        raw = self._raw_files(path)
        if self.split == "files" and not raw.by_split:
            raise FileNotFoundError(
                f"split='files' needs a folder with train, valid (or dev) and test files; "
                f"{path} gives a single file list"
            )
        return raw

    def _raw_files(self, path: Path) -> RawFiles:
        path = Path(path)
        if path.is_file():
            return RawFiles(all=[path])
        if not path.exists():
            raise FileNotFoundError(f"Criteo path {path} does not exist")
        layout = split_layout(path, "Criteo", _EXTS)
        if layout is not None:
            return layout
        days = sorted(
            (int(m.group(1)), p)
            for p in path.iterdir()
            if p.is_file() and (m := _DAY_RE.match(p.name))
        )
        if days:
            return RawFiles(all=[p for _, p in days])
        if any(path.glob("day_*.gz")):
            raise FileNotFoundError(
                f"{path} holds only gzipped day_N.gz files: gunzip them first (the reader "
                "takes plain text)"
            )
        raise FileNotFoundError(
            f"no Criteo data in {path}: expected train.txt (Kaggle), train/valid(dev)/test "
            f".txt/.tsv files, or day_N files (Criteo 1TB). {self.manual_instructions}"
        )

    def transform(self, lf: pl.LazyFrame, ctx: TransformContext) -> pl.LazyFrame:
        cat = [pl.col(c).cast(pl.String).str.strip_chars() for c in SPARSE]
        return lf.select(
            *bookkeeping(lf),
            pl.col("label").cast(pl.Int64),
            *[pl.col(c).cast(pl.Float64) for c in DENSE],
            *[pl.when(e == "").then(None).otherwise(e).alias(c) for e, c in zip(cat, SPARSE)],
        )
