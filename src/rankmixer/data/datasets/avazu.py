"""Avazu click-through logs (Kaggle "Click-Through Rate Prediction", 2014).

Raw layout: CSV with 24 columns::

    id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,
    app_category,device_id,device_ip,device_model,device_type,device_conn_type,C14,...,C21

``hour`` is YYMMDDHH (UTC is assumed; Avazu does not say), ``id`` is an unsigned 64-bit number
(kept as a string and dropped), every other column is an anonymised categorical. Kaggle's
``train.csv`` (about 40M rows over 10 days, 2014-10-21 .. 2014-10-30) has a header line; the
shared sample's ``dev.csv``/``test.csv`` have the same 24 columns without one. Whether a file
has a header is detected per file by :meth:`AvazuPreset.source_for` (first line starting with
``id,click``). Kaggle's own ``test.csv`` has no ``click`` column and is ignored.

Canonical frame (rows in file order; ``__file``/``__row`` kept):

* ``click``: Int64 0/1 (the label)
* ``hour``: Int64 hour of day 0..23 and ``weekday``: Int64 1 (Monday) .. 7, from ``hour``
* ``timestamp``: Int64 unix seconds of the YYMMDDHH hour (the time column; hour resolution)
* categoricals, raw values: ``C1``, ``banner_pos``, ``device_type``, ``device_conn_type``,
  ``C14`` .. ``C21`` as Int64; ``site_*``, ``app_*``, ``device_id``, ``device_ip``,
  ``device_model`` as String

Group key: ``device_id``. Avazu has no user id; the device id is the closest proxy, but it is
not a person, and one value (``a99f214a``, an unknown/anonymous device) covers most rows
(over 80% of the shared sample), so gAUC over it is dominated by that one group.

Split: by default ratio 0.8/0.1/0.1 (as in the FuxiCTR / BARS Avazu benchmarks); ``split="time"``
uses the hour timestamp (train on the first days). A folder with train + valid (or dev) + test
files comes back pre-split (``RawFiles.by_split``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from rankmixer.data.datasets.base import (
    FILE_COL,
    ROW_COL,
    DatasetPreset,
    RawFiles,
    TransformContext,
    register_preset,
)
from rankmixer.data.datasets.criteo import find_split_files
from rankmixer.data.schema import (
    CategoricalFeature,
    LabelSpec,
    RawColumn,
    Schema,
    SourceSpec,
    SplitSpec,
)

INT_CATS = ["C1", "banner_pos", "device_type", "device_conn_type"] + [
    f"C{i}" for i in range(14, 22)
]
SITE = ["site_id", "site_domain", "site_category"]
APP = ["app_id", "app_domain", "app_category"]
DEVICE = ["device_id", "device_ip", "device_model", "device_type", "device_conn_type"]
CONTEXT = ["hour", "weekday", "C1", "banner_pos"] + [f"C{i}" for i in range(14, 22)]

RAW_ORDER = [
    "id", "click", "hour", "C1", "banner_pos",
    "site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
    "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
    "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
]  # fmt: skip
CATEGORICAL = [c for c in RAW_ORDER if c not in ("id", "click", "hour")]

SOURCE = SourceSpec(
    format="csv",
    has_header=True,  # Kaggle's train.csv; see source_for() for headerless files
    columns=[
        RawColumn(
            name=c,
            type="int" if c in ("click", "hour") or c in INT_CATS else "str",
            required=c in ("click", "hour"),
        )
        for c in RAW_ORDER
    ],
)

_EXTS = (".csv", ".txt", "")


def has_header_line(path: Path) -> bool:
    """True when the file's first line is the Avazu header (starts with ``id,click``)."""
    with open(path, "rb") as f:
        first = f.readline(4096).decode("utf-8-sig", errors="replace")
    fields = [x.strip().strip('"').lower() for x in first.split(",")[:2]]
    return fields == ["id", "click"]


@register_preset
class AvazuPreset(DatasetPreset):
    """Options: ``min_count`` (vocabulary threshold, default 2; 1 for small samples),
    ``hash_buckets`` (hash every categorical instead; default None), ``split`` ("ratio" or
    "time", for a single input file), ``ratios``, ``seed``."""

    name = "avazu"
    description = (
        "Avazu mobile ad click logs (Kaggle 2014): 21 anonymised categoricals plus hour of "
        "day and weekday; label = click; group key device_id."
    )
    downloads = ()
    manual_instructions = (
        "The Avazu data needs a Kaggle login: accept the rules of "
        "https://www.kaggle.com/c/avazu-ctr-prediction , download train.gz (e.g. `kaggle "
        "competitions download -c avazu-ctr-prediction -f train.gz`), gunzip it and point at "
        "the file or its folder. Kaggle's test file has no click column and is not used."
    )

    def __init__(
        self,
        *,
        min_count: int = 2,
        hash_buckets: int | None = None,
        split: str = "ratio",
        ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 2024,
    ) -> None:
        if split not in ("ratio", "time"):
            raise ValueError(f"split must be 'ratio' or 'time', got {split!r}")
        self.min_count = min_count
        self.hash_buckets = hash_buckets
        self.split = split
        self.ratios = tuple(ratios)
        self.seed = seed

    def schema(self) -> Schema:
        vocab = dict(min_count=self.min_count, hash_buckets=self.hash_buckets)
        return Schema(
            name=self.name,
            source=SOURCE,
            labels=[LabelSpec(name="click")],
            features=[CategoricalFeature(name="hour"), CategoricalFeature(name="weekday")]
            + [CategoricalFeature(name=c, **vocab) for c in CATEGORICAL],
            group_key="device_id",
            time_column="timestamp",
            feature_groups={"site": SITE, "app": APP, "device": DEVICE, "context": CONTEXT},
            split=SplitSpec(method=self.split, ratios=self.ratios, seed=self.seed),
        )

    def source_for(self, path: Path) -> SourceSpec:
        """The source spec for one raw file: the schema's, with ``has_header`` set from the
        file's first line (Kaggle's train.csv has the header, the shared dev/test do not)."""
        return SOURCE.model_copy(update={"has_header": has_header_line(Path(path))})

    def raw_files(self, path: Path) -> RawFiles:
        path = Path(path)
        if path.is_file():
            return RawFiles(all=[path])
        if not path.exists():
            raise FileNotFoundError(f"Avazu path {path} does not exist")
        found = find_split_files(path, _EXTS)
        if "test" in found and not _has_click(found["test"]):
            del found["test"]  # Kaggle's unlabeled test file
        if {"train", "valid", "test"} <= found.keys():
            return RawFiles(by_split={k: [found[k]] for k in ("train", "valid", "test")})
        if "train" in found and len(found) > 1:
            missing = sorted({"valid", "test"} - found.keys())
            raise FileNotFoundError(
                f"{path} holds {', '.join(p.name for p in found.values())} but no labelled "
                f"{missing[0]} file: give train + valid(dev) + test files, or only train"
            )
        if "train" in found:
            return RawFiles(all=[found["train"]])
        raise FileNotFoundError(
            f"no Avazu train file (train.csv / train) in {path}. {self.manual_instructions}"
        )

    def transform(self, lf: pl.LazyFrame, ctx: TransformContext) -> pl.LazyFrame:
        yymmddhh = pl.col("hour").cast(pl.Int64)
        when = (yymmddhh.cast(pl.String).str.zfill(8) + "00").str.to_datetime(
            "%y%m%d%H%M", strict=True, time_zone="UTC"
        )
        return lf.select(
            FILE_COL,
            ROW_COL,
            pl.col("click").cast(pl.Int64),
            (yymmddhh % 100).alias("hour"),
            when.dt.weekday().cast(pl.Int64).alias("weekday"),
            *[
                pl.col(c).cast(pl.Int64 if c in INT_CATS else pl.String)
                for c in CATEGORICAL
            ],
            when.dt.epoch("s").alias("timestamp"),
        )


def _has_click(path: Path) -> bool:
    """False only for a file whose header lacks ``click`` (Kaggle's unlabeled test set)."""
    if not has_header_line(path):
        with open(path, "rb") as f:
            first = f.readline(4096).decode("utf-8-sig", errors="replace")
        if first.split(",")[0].strip().lower() == "id":
            return "click" in [x.strip().lower() for x in first.split(",")]
    return True
