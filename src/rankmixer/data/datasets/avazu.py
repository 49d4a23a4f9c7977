"""Avazu click-through logs (Kaggle "Click-Through Rate Prediction", 2014).

Raw layout: CSV with 24 columns::

    id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,
    app_category,device_id,device_ip,device_model,device_type,device_conn_type,C14,...,C21

``hour`` is YYMMDDHH (UTC is assumed; Avazu does not say), ``id`` is an unsigned 64-bit number
(dropped), every other column is an anonymised categorical. Kaggle's ``train.csv`` (about 40M
rows over 10 days, 2014-10-21 .. 2014-10-30) has a header line; the shared sample's
``dev.csv``/``test.csv`` have the same 24 columns without one. Kaggle's own ``test.csv`` has no
``click`` column and is ignored.

The canonical frame and the choices behind it: :class:`AvazuPreset`.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from rankmixer.data.datasets.base import (
    DatasetPreset,
    RawFiles,
    TransformContext,
    register_preset,
)
from rankmixer.data.datasets.common import bookkeeping, find_split_files
from rankmixer.data.schema import (
    CategoricalFeature,
    LabelSpec,
    RawColumn,
    Schema,
    SourceSpec,
    SplitSpec,
)

RAW_ORDER = [
    "id", "click", "hour", "C1", "banner_pos",
    "site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
    "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
    "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
]  # fmt: skip
INT_COLS = {"click", "hour", "C1", "banner_pos", "device_type", "device_conn_type"} | {
    f"C{i}" for i in range(14, 22)
}
CATEGORICAL = [c for c in RAW_ORDER if c not in ("id", "click", "hour")]
SITE = ["site_id", "site_domain", "site_category"]
APP = ["app_id", "app_domain", "app_category"]
DEVICE = ["device_id", "device_ip", "device_model", "device_type", "device_conn_type"]
CONTEXT = ["hour", "weekday", "C1", "banner_pos"] + [f"C{i}" for i in range(14, 22)]
_REQUIRED = ("click", "hour")

# What the schema declares: headerless, all strings (a header line then reads as a row).
SOURCE = SourceSpec(
    format="csv",
    has_header=False,
    columns=[RawColumn(name=c, type="str", required=c in _REQUIRED) for c in RAW_ORDER],
)
# Per-file alternative for a reader that can use it (see source_for).
TYPED_SOURCE = SourceSpec(
    format="csv",
    has_header=True,
    columns=[
        RawColumn(name=c, type="int" if c in INT_COLS else "str", required=c in _REQUIRED)
        for c in RAW_ORDER
    ],
)

_EXTS = (".csv", ".txt", "")


def _first_fields(path: Path) -> list[str]:
    with open(path, "rb") as f:
        first = f.readline(1 << 16).decode("utf-8-sig", errors="replace")
    return [x.strip().strip('"') for x in first.rstrip("\r\n").split(",")]


def has_header_line(path: Path) -> bool:
    """True when the file's first line is a header (starts with ``id,click``)."""
    return [x.lower() for x in _first_fields(Path(path))[:2]] == ["id", "click"]


def _is_unlabeled_test(path: Path) -> bool:
    """Kaggle's test file: a header starting with ``id`` and no ``click`` column."""
    fields = [x.lower() for x in _first_fields(path)]
    return bool(fields) and fields[0] == "id" and "click" not in fields


def _check_header(path: Path) -> None:
    if has_header_line(path):
        fields = _first_fields(path)
        if fields != RAW_ORDER:
            raise ValueError(
                f"{path}: header {fields} differs from the Avazu layout {RAW_ORDER} (columns "
                "are read by position; reorder the file or write a custom schema)"
            )


@register_preset
class AvazuPreset(DatasetPreset):
    """Options: ``min_count`` (vocabulary threshold, default 2; 1 for small samples),
    ``hash_buckets`` (hash every categorical instead; default None), ``split`` (the schema's
    split method: "ratio" (default) or "time" for a single file list, "files" for a pre-split
    train/valid(dev)/test folder, which ``raw_files`` then insists on), ``ratios``, ``seed``.

    Header or not: the schema's source reads every file *without* a header and with every column
    as a string, so both kinds read the same way: a header line simply arrives as a row, which
    the transform drops (``id == "id"`` and ``click == "click"``; the reader's ``__row`` line
    numbers stay right because the header is line 1 either way). ``raw_files`` checks that a header,
    where there is one, lists the 24 columns in the order above. The click label is checked by
    preparation's label check (file and line named); a malformed ``hour`` stops the transform.
    A reader that wants per-file type checks may use :meth:`AvazuPreset.source_for` instead (typed
    int columns, ``has_header`` detected from the file's first line); the transform accepts both.

    Canonical frame (rows in file order; ``__file``/``__row`` kept):

    * ``click``: Int64 0/1 (the label)
    * ``hour``: Int64 hour of day 0..23 and ``weekday``: Int64 1 (Monday) .. 7, from ``hour``
    * ``timestamp``: Int64 unix seconds of the YYMMDDHH hour (the time column; hour resolution)
    * the 21 categoricals ``C1``, ``banner_pos``, ``site_*``, ``app_*``, ``device_*``, ``C14`` ..
      ``C21``: String, the raw values (null when empty)

    Group key: ``device_id``. Avazu has no user id; the device id is the closest proxy, but it is
    not a person, and one value (``a99f214a``, an unknown/anonymous device) covers most rows
    (87% of the shared sample), so gAUC over it is dominated by that one group.

    Split: by default ratio 0.8/0.1/0.1 (as in the FuxiCTR / BARS Avazu benchmarks);
    ``split="time"`` uses the hour timestamp (train on the first days). A folder with train +
    valid (or dev) + test files comes back pre-split (``RawFiles.by_split``), and preparation
    always keeps such files as the splits; ``split="files"`` also records that in the schema.
    """

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
        if split not in ("ratio", "time", "files"):
            raise ValueError(f"split must be 'ratio', 'time' or 'files', got {split!r}")
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
        """A typed source spec for one raw file, ``has_header`` taken from its first line.
        Optional: the schema's all-string headerless source reads every file correctly too."""
        return TYPED_SOURCE.model_copy(update={"has_header": has_header_line(Path(path))})

    def raw_files(self, path: Path) -> RawFiles:
        raw = self._raw_files(path)
        if self.split == "files" and not raw.by_split:
            raise FileNotFoundError(
                f"split='files' needs a folder with train, valid (or dev) and test files; "
                f"{path} gives a single file list"
            )
        for p in raw.all + [p for ps in raw.by_split.values() for p in ps]:
            _check_header(p)
        return raw

    def _raw_files(self, path: Path) -> RawFiles:
        path = Path(path)
        if path.is_file():
            return RawFiles(all=[path])
        if not path.exists():
            raise FileNotFoundError(f"Avazu path {path} does not exist")
        found = find_split_files(path, _EXTS)
        if "test" in found and _is_unlabeled_test(found["test"]):
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
        keep = bookkeeping(lf)
        as_str = {c: pl.col(c).cast(pl.String) for c in RAW_ORDER}
        is_header = (as_str["id"] == "id") & (as_str["click"] == "click")
        # YYMMDDHH -> datetime; strict: a malformed hour stops the run.
        when = (as_str["hour"].str.strip_chars().str.zfill(8) + "00").str.to_datetime(
            "%y%m%d%H%M", strict=True, time_zone="UTC"
        )
        return lf.filter(~is_header.fill_null(False)).select(
            *keep,
            # Not 0/1 -> null here -> preparation's label check names the file and line.
            as_str["click"].str.strip_chars().cast(pl.Int64, strict=False).alias("click"),
            when.dt.hour().cast(pl.Int64).alias("hour"),
            when.dt.weekday().cast(pl.Int64).alias("weekday"),
            *[as_str[c].alias(c) for c in CATEGORICAL],
            when.dt.epoch("s").alias("timestamp"),
        )
