"""Dataset presets: a real public dataset's schema, raw-file layout and canonical transform.

A preset turns the dataset's raw files into the *canonical frame* its schema describes:

    raw files --(read + type-check, rankmixer.data.reader)--> typed frame
              --(preset.transform)--> canonical frame (labels, features, group key, time)
              --(rankmixer.data.prepare: split, fit vocabularies, encode)--> Parquet shards

The typed frame carries two bookkeeping columns, ``__file`` (index into the list of raw files)
and ``__row`` (1-based data row in that file), so any later check can still name the source row.
A transform must keep them (or drop rows) and must stay lazy where it can.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import polars as pl

from rankmixer.data.reader import BadRowReport
from rankmixer.data.schema import Schema


@dataclass
class RawFiles:
    """Raw files of one dataset: either all rows in ``all`` (the schema's split decides), or
    one list per split (``train``/``valid``/``test``) when the dataset comes pre-split."""

    all: list[Path] = field(default_factory=list)
    by_split: dict[str, list[Path]] = field(default_factory=dict)


@dataclass
class TransformContext:
    """What a transform may use besides the main frame."""

    raw_path: Path  # the directory (or file) the user pointed at
    # Reads a side table (e.g. MovieLens movies.csv) with the same type checks as the main file;
    # the frame keeps ``__row`` (the line of each row) for messages.
    read_side_table: Callable[[Path, object], pl.DataFrame]
    on_bad_row: str = "fail"
    # The preparation's bad-row report: rows a transform drops from an input for being bad (a
    # duplicate key in a lookup table, under on_bad_row="skip") are counted here.
    report: BadRowReport | None = None


@dataclass(frozen=True)
class Download:
    url: str
    filename: str
    sha256: str | None = None  # None where the publisher gives no fixed checksum
    md5: str | None = None
    # Where the publisher keeps a checksum file beside the data (e.g. GroupLens' "<zip>.md5"):
    # fetched with the file, so a re-published file is still verified against its own sum.
    md5_url: str | None = None


class DatasetPreset:
    """Base class. Subclasses set ``name``, ``description``, ``downloads`` and implement
    ``schema``, ``raw_files`` and (if the raw columns are not already canonical) ``transform``."""

    name: str = ""
    description: str = ""
    downloads: tuple[Download, ...] = ()
    # Where the official file comes from and how to get it when it cannot be downloaded
    # automatically (e.g. needs a Kaggle or Tianchi login).
    manual_instructions: str = ""

    def schema(self) -> Schema:
        raise NotImplementedError

    def raw_files(self, path: Path) -> RawFiles:
        raise NotImplementedError

    def transform(self, lf: pl.LazyFrame, ctx: TransformContext) -> pl.LazyFrame:
        return lf

    def side_files(self, path: Path) -> list[Path]:
        """Files besides ``raw_files`` the transform reads (e.g. MovieLens' movies.csv): inputs
        too, so no output may overwrite them and a change in them means preparing again."""
        return []

    def default_raw_path(self, prepared_dir: Path) -> Path:
        """Raw path used when the config gives none. Real datasets need the user to say where
        their files are; the synthetic preset generates its own."""
        raise ValueError(
            f"dataset {self.name!r} needs data.raw (the directory or file with its raw data). "
            f"{self.manual_instructions}"
        )

    def extras(self, path: Path) -> dict:
        """Anything to store in the feature map's ``extras`` (e.g. known Bayes-optimal metrics)."""
        return {}

    def download(self, dest: Path) -> Path:
        """Fetch the official files into ``dest`` and verify their checksums."""
        if not self.downloads:
            raise RuntimeError(
                f"dataset {self.name!r} has no automatic download. {self.manual_instructions}"
            )
        dest.mkdir(parents=True, exist_ok=True)
        for d in self.downloads:
            fetch(d, dest)
        return dest


_REGISTRY: dict[str, Callable[[], DatasetPreset]] = {}


def register_preset(cls: type[DatasetPreset]) -> type[DatasetPreset]:
    _REGISTRY[cls.name] = cls
    return cls


def get_preset(name: str, **options) -> DatasetPreset:
    """A preset by name; ``options`` go to its constructor (e.g. criteo's min_count)."""
    from rankmixer.data import datasets  # noqa: F401  (imports every preset module)

    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset preset {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name](**options)
    except TypeError as e:
        raise ValueError(f"bad data.preset_options for {name!r}: {e}") from e


def available_presets() -> list[str]:
    from rankmixer.data import datasets  # noqa: F401

    return sorted(_REGISTRY)


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: Path, sha256: str | None = None, md5: str | None = None) -> None:
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want:
            got = _digest(path, algo)
            if got != want:
                raise ValueError(f"{path}: {algo} checksum mismatch: expected {want}, got {got}")


def parse_md5_file(text: str, where: str) -> str:
    """The hex digest in an md5 file ("<hex>  name", "MD5 (name) = <hex>" or just "<hex>")."""
    import re

    m = re.search(r"\b([0-9a-fA-F]{32})\b", text)
    if not m:
        raise ValueError(f"{where}: no md5 digest found in checksum file")
    return m.group(1).lower()


def fetch(d: Download, dest: Path) -> Path:
    """Download to a temporary name, verify, then rename: a failed or partial download never
    leaves a file that looks complete."""
    target = dest / d.filename
    if target.exists():
        verify_checksum(target, d.sha256, d.md5)
        return target
    md5 = d.md5
    if md5 is None and d.md5_url:
        with urllib.request.urlopen(d.md5_url, timeout=60) as resp:
            md5 = parse_md5_file(resp.read().decode("utf-8", "replace"), d.md5_url)
    tmp = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(d.url, timeout=60) as resp, open(tmp, "wb") as out:
        shutil.copyfileobj(resp, out)
    try:
        verify_checksum(tmp, d.sha256, md5)
    except ValueError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(target)
    return target
