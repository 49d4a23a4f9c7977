"""Feature schema: what the raw columns are and how each becomes a model input.

A schema is a YAML file (or a dataset preset's built-in one) with three parts:

* ``source``: how to read the raw files (format, separator, header, the raw column names and
  their types). Every raw value is checked against these types while reading, so a bad row is
  reported with its file, row and column before anything else runs.
* ``labels`` and ``features``: the *canonical* columns a dataset preset produces from the raw
  ones (for a plain CSV they are the raw columns themselves), each with its encoding.
  Feature types: categorical, numerical, multi_categorical (a bag), sequence (one ordered
  history of ids) and behaviour (an ordered history of several parallel per-position fields,
  e.g. item, category, type and time gap: see :class:`BehaviourFeature`).
* ``feature_groups``: named sets of features. RankMixer's semantic tokenizer makes one token
  source per group; other models ignore them.

Id conventions used everywhere downstream: id 0 is padding (empty bag / sequence slot), id 1
is out-of-vocabulary (unseen, rare or missing value), real values start at 2. A hashed feature
uses ids 2 .. 2 + buckets - 1, so its table has ``buckets + 2`` rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rankmixer.core.yamlio import format_validation_error, read_yaml_mapping

PAD_ID = 0
OOV_ID = 1
FIRST_ID = 2


class SchemaError(ValueError):
    """A schema file is malformed; the message names the file and the offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


RawType = Literal["int", "float", "str"]


class RawColumn(_Strict):
    name: str
    type: RawType = "str"
    # An empty field is allowed (read as missing) unless required.
    required: bool = False


class SourceSpec(_Strict):
    format: Literal["csv", "tsv", "parquet"] = "csv"
    # Separator for csv (tsv implies a tab).
    separator: str | None = None
    has_header: bool = True
    # Raw columns in file order. For files with a header they are matched by name (extra raw
    # columns are ignored); for headerless files they give the names, and the row must have
    # exactly this many fields.
    columns: list[RawColumn]

    @property
    def sep(self) -> str:
        if self.separator is not None:
            return self.separator
        return "\t" if self.format == "tsv" else ","


class LabelSpec(_Strict):
    name: str


class _FeatureBase(_Strict):
    name: str
    # Source column in the canonical frame; defaults to ``name``.
    source: str | None = None

    @property
    def column(self) -> str:
        return self.source or self.name


class Vocabulary(_Strict):
    """How a categorical value gets its id: a counted vocabulary or hashing."""

    # Values seen fewer than min_count times in the training split map to OOV.
    min_count: int = Field(1, ge=1)
    # Cap on vocabulary size (most frequent first); None = no cap.
    max_size: int | None = Field(None, ge=1)
    # Hashing instead of a vocabulary: ids 2 .. 2+hash_buckets-1. Needs no pass over the data.
    hash_buckets: int | None = Field(None, ge=1)


class CategoricalFeature(_FeatureBase, Vocabulary):
    type: Literal["categorical"] = "categorical"


class Bucketize(_Strict):
    """Turn a number into a categorical bucket id.

    ``log``: the Criteo convention: v -> floor(ln(v)^2) for v > 2, else v (as an integer).
    ``quantile``: equal-frequency bins fitted on the training split.
    """

    method: Literal["log", "quantile"]
    num_buckets: int = Field(64, ge=2)  # quantile only
    min_count: int = Field(1, ge=1)  # log only: rare log-buckets -> OOV


class NumericalFeature(_FeatureBase):
    type: Literal["numerical"] = "numerical"
    # Normalisation statistics are fitted on the training split only.
    normalize: Literal["standard", "minmax", "log1p", "none"] = "standard"
    # Value used for a missing (empty) field, before normalisation.
    fill_missing: float = 0.0
    # When set, the feature becomes a categorical id instead of a dense value.
    bucketize: Bucketize | None = None


class MultiCategoricalFeature(_FeatureBase, Vocabulary):
    """An unordered bag of values, e.g. genres "A|B|C"."""

    type: Literal["multi_categorical"] = "multi_categorical"
    separator: str = "|"
    max_len: int = Field(16, ge=1)
    # Use another feature's vocabulary and embedding table (e.g. the target item's).
    share_with: str | None = None


class SequenceFeature(_FeatureBase, Vocabulary):
    """An ordered history, oldest first, truncated to the most recent ``max_len`` items."""

    type: Literal["sequence"] = "sequence"
    separator: str = "|"
    max_len: int = Field(20, ge=1)
    share_with: str | None = None
    # Optional canonical column with the events' timestamps (same length as the history).
    timestamps: str | None = None


class SessionSplit(_Strict):
    """How a behaviour's positions are cut into sessions (a derived per-position field).

    Reading the numeric field ``of`` (a time gap to the request or a timestamp: a field with an
    ``order``), a new session starts where two neighbouring positions lie more than ``gap``
    units apart, and a session longer than ``max_session_len`` positions is cut into pieces of
    that length counted from its oldest position. The derived field's value at a position is its
    session's index counted from the newest (0: the session of the newest behaviour, 1: the one
    before, ...), capped at ``max_sessions - 1``; its id is ``FIRST_ID + index``. Sessions are cut
    on the whole raw history, before ``max_len`` keeps the most recent positions, so truncation
    never changes an index. A missing time value continues the session of the position before it.
    """

    of: str
    gap: float = Field(gt=0)
    max_session_len: int | None = Field(None, ge=1)
    max_sessions: int = Field(64, ge=1)


class BehaviourField(Vocabulary):
    """One per-position field of a behaviour sequence (the item, its category, the behaviour
    type, the time gap to the request, ...).

    Categorical by default: a vocabulary of its own (the :class:`Vocabulary` options), or, with
    ``share_with``, the vocabulary and embedding table of a categorical feature (the candidate
    item's, so a history item and the candidate look up the same row). With ``bucketize`` it is
    numeric instead: each value a non-negative number (a time gap, a count, a duration), turned
    into a bucket id as :class:`NumericalFeature` does.
    """

    name: str
    # Raw column holding the field's values joined by the behaviour's separator; defaults to
    # ``<behaviour>_<field>`` (e.g. ``hist_item``).
    source: str | None = None
    share_with: str | None = None
    bucketize: Bucketize | None = None
    # Numeric fields only: the order the values must keep from the oldest position to the newest
    # (``non_increasing`` for a gap to the request, ``non_decreasing`` for a timestamp); a row
    # out of order is a bad row (its behaviours are not sorted oldest first).
    order: Literal["non_increasing", "non_decreasing"] | None = None
    # Derived: the session index of each position (see :class:`SessionSplit`); reads no raw
    # column and takes no other encoding option.
    sessions: SessionSplit | None = None

    @model_validator(mode="after")
    def _one_encoding(self) -> "BehaviourField":
        if self.sessions is not None:
            given = [k for k in ("source", "share_with", "bucketize", "order", "max_size", "hash_buckets")
                     if getattr(self, k) is not None] + (["min_count"] if self.min_count != 1 else [])
            if given:
                raise ValueError(f"field {self.name!r}: a sessions field is derived from field "
                                 f"{self.sessions.of!r} and takes no {given}")
        if self.order is not None and self.bucketize is None:
            raise ValueError(f"field {self.name!r}: order applies to numeric (bucketize) fields only")
        # Compared with the defaults (not with the keys given), so a dumped schema reloads.
        vocab_opts = [k for k, changed in (("min_count", self.min_count != 1), ("max_size", self.max_size is not None),
                                           ("hash_buckets", self.hash_buckets is not None)) if changed]
        if self.bucketize is not None and (vocab_opts or self.share_with):
            raise ValueError(f"field {self.name!r}: bucketize (numeric) cannot be combined with "
                             f"{vocab_opts + (['share_with'] if self.share_with else [])} (categorical options; "
                             "log buckets take bucketize.min_count)")
        if self.share_with is not None and vocab_opts:
            raise ValueError(f"field {self.name!r}: shares the vocabulary of {self.share_with!r}, so "
                             f"{vocab_opts} must be set on that feature, not here")
        return self


class BehaviourFeature(_Strict):
    """A behaviour sequence: parallel per-position fields sharing one length, oldest first.

    Each field reads its own raw column (values joined by ``separator``); all the fields of a row
    must hold the same number of values (a missing value at a position is an empty string
    between separators and becomes the OOV id). Histories longer than ``max_len`` keep their
    most recent ``max_len`` positions (the end of the raw list). Prepared, a behaviour is a
    ``[max_len, n_fields]`` block of ids per example (see ``Batch.behaviours``).
    """

    type: Literal["behaviour"] = "behaviour"
    name: str
    max_len: int = Field(50, ge=1)
    separator: str = "|"
    # Per-position fields, in the order of the tensor's last axis.
    fields: list[BehaviourField] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_fields(self) -> "BehaviourFeature":
        names = [f.name for f in self.fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"behaviour {self.name!r}: duplicate field names {dup}")
        by_name = {f.name: f for f in self.fields}
        for f in self.fields:
            if f.sessions is None:
                continue
            src = by_name.get(f.sessions.of)
            if src is None or src.order is None:
                raise ValueError(f"behaviour {self.name!r} field {f.name!r}: sessions.of={f.sessions.of!r} must "
                                 "name a numeric field of this behaviour with an order (a time gap or a timestamp)")
        if all(f.sessions is not None for f in self.fields):
            raise ValueError(f"behaviour {self.name!r}: needs at least one field read from a raw column")
        return self

    def source_of(self, field: BehaviourField) -> str:
        """The raw (canonical) column of one of this behaviour's fields."""
        return field.source or f"{self.name}_{field.name}"

    @property
    def read_fields(self) -> list[BehaviourField]:
        """The fields read from raw columns (every field but the derived session fields)."""
        return [f for f in self.fields if f.sessions is None]

    @property
    def columns(self) -> list[str]:
        """The canonical columns this behaviour reads, in field order."""
        return [self.source_of(f) for f in self.read_fields]


Feature = Annotated[
    Union[CategoricalFeature, NumericalFeature, MultiCategoricalFeature, SequenceFeature, BehaviourFeature],
    Field(discriminator="type"),
]


class SplitSpec(_Strict):
    """Train/valid/test split.

    ``ratio``: a deterministic hash of the row number (seeded), fractions from ``ratios``.
    ``time``: by the ``time_column`` quantiles, earliest rows to train.
    ``files``: the caller gives one raw path per split.
    """

    method: Literal["ratio", "time", "files"] = "ratio"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2024

    @model_validator(mode="after")
    def _check(self) -> "SplitSpec":
        if abs(sum(self.ratios) - 1.0) > 1e-6 or min(self.ratios) < 0:
            raise ValueError(f"split.ratios must be non-negative and sum to 1, got {self.ratios}")
        return self


class DaySpec(_Strict):
    """Day partitions of the training split, for streaming training (``train.streaming``).

    A row's day is ``floor((time + offset) / seconds)`` of the schema's ``time_column`` (an
    integer, e.g. unix seconds; ``offset`` moves the day boundary, e.g. 28800 for midnight at
    UTC+8). Preparation writes the training rows one folder per day, each sorted by time, so
    rows that arrive out of time order in the raw files land in their day all the same.
    """

    seconds: int = Field(86_400, ge=1)
    offset: int = 0


class Schema(_Strict):
    name: str
    source: SourceSpec
    labels: list[LabelSpec] = Field(min_length=1)
    features: list[Feature] = Field(min_length=1)
    group_key: str | None = None  # column for gAUC / UAUC (usually the user id)
    time_column: str | None = None  # column used by the time split and carried as Batch.timestamp
    feature_groups: dict[str, list[str]] = Field(default_factory=dict)
    split: SplitSpec = SplitSpec()
    days: DaySpec | None = None  # day partitions of the training split (needs time_column)
    # label -> column of a teacher's predicted probability for it (external distillation, ExFM:
    # logged teacher predictions joined to the rows). Empty cells are rows without a teacher
    # prediction (counted per split); a value must be a probability in [0, 1].
    teacher_columns: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_names(self) -> "Schema":
        names = [f.name for f in self.features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate feature names: {dup}")
        label_names = [lab.name for lab in self.labels]
        clash = sorted(set(names) & set(label_names))
        if clash:
            raise ValueError(f"names used both as label and feature: {clash}")
        by_name = {f.name: f for f in self.features}
        sharers = [(f"feature {f.name!r}", f.share_with) for f in self.features if getattr(f, "share_with", None)]
        sharers += [(f"behaviour {f.name!r} field {b.name!r}", b.share_with) for f in self.features
                    if isinstance(f, BehaviourFeature) for b in f.fields if b.share_with]
        for who, share in sharers:
            if share not in by_name:
                raise ValueError(f"{who}: share_with={share!r} is not a feature")
            if not isinstance(by_name[share], CategoricalFeature):
                raise ValueError(f"{who}: share_with={share!r} must name a categorical feature")
        # A behaviour's prepared columns are ``<behaviour>__<field>``: no feature may be called so.
        clash = sorted({f"{f.name}__{b.name}" for f in self.features if isinstance(f, BehaviourFeature)
                        for b in f.fields} & set(names + label_names))
        if clash:
            raise ValueError(f"names {clash} are taken by behaviour fields' prepared columns (<behaviour>__<field>)")
        for group, members in self.feature_groups.items():
            unknown = [m for m in members if m not in by_name]
            if unknown:
                raise ValueError(f"feature_groups.{group}: unknown features {unknown}")
        if self.split.method == "time" and not self.time_column:
            raise ValueError("split.method 'time' needs time_column")
        if self.days is not None and not self.time_column:
            raise ValueError("days (day partitions of the training split) needs time_column")
        unknown = [k for k in self.teacher_columns if k not in label_names]
        if unknown:
            raise ValueError(f"teacher_columns: {unknown} are not labels (labels: {label_names})")
        return self

    # ---- convenience views -------------------------------------------------------------
    def feature(self, name: str):
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def canonical_columns(self) -> list[str]:
        """Columns the canonical frame must have (after a preset's transform)."""
        cols = [lab.name for lab in self.labels]
        for f in self.features:
            cols += f.columns if isinstance(f, BehaviourFeature) else [f.column]
            if isinstance(f, SequenceFeature) and f.timestamps:
                cols.append(f.timestamps)
        for extra in (self.group_key, self.time_column, *self.teacher_columns.values()):
            if extra:
                cols.append(extra)
        return list(dict.fromkeys(cols))

    def fingerprint(self) -> str:
        """Stable hash of everything that changes the prepared data."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_schema(path: str | Path) -> Schema:
    raw = read_yaml_mapping(path, "schema")
    try:
        return Schema.model_validate(raw)
    except ValidationError as e:
        raise SchemaError(format_validation_error(e, f"schema {path}")) from e


def dump_schema(schema: Schema, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(schema.model_dump(mode="json"), sort_keys=False))
