"""The feature map: what preparation learned, and all a model needs to know about its inputs.

Written by ``data prepare`` as ``feature_map.json`` next to the Parquet shards. Models are built
from it (vocabulary sizes, which features share a table, the feature groups); the loader uses it
to know which Parquet columns go where in a :class:`~rankmixer.data.batch.Batch`.

Prepared Parquet layout (one row per example):

* ``sparse`` features (categorical and bucketized numerical): int32 id column
* ``dense`` features (normalised numerical): float32 column
* ``bag`` (multi-valued categorical) and ``sequence`` features: list<int32> column, at most
  ``max_len`` ids, sequences oldest first; ``<name>__ts``: list<int64> timestamps if given
* ``behaviour`` features: one list<int32> column per field, ``<name>__<field>`` (see
  :func:`behaviour_column`), at most ``max_len`` ids, oldest first, every field of a row with
  the same length; ``<name>``: int32 number of positions kept
* labels: float32 columns named after the label
* ``__group``: int64 group id for gAUC (if the schema has a group key)
* ``__ts``: int64 timestamp (if the schema has a time column)
* ``__teacher__<label>``: float32 teacher probability, NaN where the row has none (schema
  ``teacher_columns``)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["sparse", "dense", "bag", "sequence", "behaviour"]

GROUP_COLUMN = "__group"
TIME_COLUMN = "__ts"


def teacher_column(label: str) -> str:
    """The prepared column of a teacher's predicted probability for ``label`` (NaN: none)."""
    return f"__teacher__{label}"


def behaviour_column(behaviour: str, field: str) -> str:
    """The prepared column of one field of a behaviour sequence (and the name of the field's
    own table, when it has one)."""
    return f"{behaviour}__{field}"


@dataclass
class BehaviourFieldInfo:
    """One per-position field of a behaviour feature: where its ids come from."""

    name: str
    # Embedding table the ids index: the field's own (``<behaviour>__<field>``) or, when the
    # field shares, the categorical feature named by ``share_with``.
    table: str
    # Rows of that table (padding and OOV included).
    vocab_size: int
    share_with: str | None = None
    # Fitted statistics (vocabulary size, hash buckets, bucketize method and boundaries).
    stats: dict = field(default_factory=dict)


@dataclass
class FeatureInfo:
    name: str
    kind: Kind
    # Rows of the embedding table (padding and OOV included); 0 for dense features.
    vocab_size: int = 0
    # bag / sequence / behaviour: the padded length.
    max_len: int = 0
    # bag / sequence: name of the sparse feature whose table (and vocabulary) this one uses.
    share_with: str | None = None
    # Fitted statistics, for reporting and for scoring raw values at serving time.
    stats: dict = field(default_factory=dict)
    # behaviour: its per-position fields, in the order of the Batch tensor's last axis. A
    # behaviour has no table of its own (vocab_size 0): each field names its table.
    fields: list[BehaviourFieldInfo] = field(default_factory=list)

    @property
    def table(self) -> str:
        """Name of the embedding table this feature looks up (not meaningful for a behaviour,
        whose fields each have one)."""
        return self.share_with or self.name

    @property
    def columns(self) -> list[str]:
        """The prepared Parquet columns of this feature (see the module docstring)."""
        if self.kind == "behaviour":
            return [behaviour_column(self.name, f.name) for f in self.fields] + [self.name]
        return [self.name]


@dataclass
class SplitInfo:
    files: list[str]  # relative to the feature map's directory
    rows: int
    label_means: list[float]


@dataclass
class DayInfo:
    """One day partition of the training split (schema ``days``): its day number, files (in
    time order) and rows."""

    day: int
    files: list[str]  # relative to the feature map's directory
    rows: int
    label_means: list[float]


@dataclass
class FeatureMap:
    dataset: str
    schema_hash: str
    labels: list[str]
    features: list[FeatureInfo]
    feature_groups: dict[str, list[str]] = field(default_factory=dict)
    has_group: bool = False
    has_time: bool = False
    splits: dict[str, SplitInfo] = field(default_factory=dict)
    # The training split by day, in day order (empty: not prepared by day); the train split's
    # files are these days' files in this order.
    days: list[DayInfo] = field(default_factory=list)
    # Labels with a teacher prediction column (schema teacher_columns), in label order.
    teacher_labels: list[str] = field(default_factory=list)
    # Counts of rows skipped or values mapped to OOV during preparation, by reason.
    report: dict = field(default_factory=dict)
    # Anything a dataset preset wants carried along (e.g. the synthetic set's Bayes metrics).
    extras: dict = field(default_factory=dict)
    root: Path | None = None  # directory the map was loaded from (not serialised)

    # ---- views ---------------------------------------------------------------------------
    def of_kind(self, kind: Kind) -> list[FeatureInfo]:
        return [f for f in self.features if f.kind == kind]

    @property
    def sparse(self) -> list[FeatureInfo]:
        return self.of_kind("sparse")

    @property
    def dense(self) -> list[FeatureInfo]:
        return self.of_kind("dense")

    @property
    def bags(self) -> list[FeatureInfo]:
        return self.of_kind("bag")

    @property
    def sequences(self) -> list[FeatureInfo]:
        return self.of_kind("sequence")

    @property
    def behaviours(self) -> list[FeatureInfo]:
        return self.of_kind("behaviour")

    @property
    def num_tasks(self) -> int:
        return len(self.labels)

    def feature(self, name: str) -> FeatureInfo:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"unknown feature {name!r}; known: {[f.name for f in self.features]}")

    def tables(self) -> dict[str, int]:
        """Embedding tables to create: table name -> rows. Shared features (and behaviour fields)
        add no table; a behaviour field with its own vocabulary adds its own."""
        out = {}
        for f in self.features:
            if f.kind == "behaviour":
                out.update({b.table: b.vocab_size for b in f.fields if not b.share_with})
            elif f.kind != "dense" and not f.share_with:
                out[f.name] = f.vocab_size
        return out

    def split_files(self, split: str) -> list[Path]:
        if split not in self.splits:
            raise KeyError(f"split {split!r} not prepared; have {sorted(self.splits)}")
        base = self.root or Path(".")
        return [base / p for p in self.splits[split].files]

    def day(self, day: int) -> DayInfo:
        """The training split's partition of ``day`` (data prepared with schema ``days``)."""
        for info in self.days:
            if info.day == day:
                return info
        have = f"days {self.days[0].day} .. {self.days[-1].day}" if self.days else "no day partitions (schema days)"
        raise KeyError(f"day {day} is not in the prepared training split; it has {have}")

    def day_files(self, day: int) -> list[Path]:
        base = self.root or Path(".")
        return [base / p for p in self.day(day).files]

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("root")
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False))

    @classmethod
    def from_dict(cls, d: dict, root: Path | None = None) -> "FeatureMap":
        d = dict(d)
        d["features"] = [FeatureInfo(**{**f, "fields": [BehaviourFieldInfo(**b) for b in f.get("fields", [])]})
                         for f in d["features"]]
        d["splits"] = {k: SplitInfo(**v) for k, v in d.get("splits", {}).items()}
        d["days"] = [DayInfo(**v) for v in d.get("days", [])]
        return cls(**d, root=root)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureMap":
        path = Path(path)
        if path.is_dir():
            path = path / "feature_map.json"
        if not path.exists():
            raise FileNotFoundError(f"feature map not found: {path} (run `rankmixer data prepare`)")
        return cls.from_dict(json.loads(path.read_text()), root=path.parent)
