"""Raw feature values -> model inputs, for serving: the training encoder, fed from JSON rows.

The unit a request carries is a *canonical row*: one value per canonical column the schema's
features read (``user_id``, ``movie_id``, ``genres`` ... for MovieLens), before any vocabulary
or normalisation. Dataset-level transforms a preset runs over whole files (MovieLens' join with
``movies.csv``, the user-history window) are not per-row work and stay the caller's job: a
feature store hands the server the same columns preparation produced.

Encoding is *the same code* preparation and ``rankmixer predict`` run: the rows become a Polars
frame and go through :func:`rankmixer.data.encode.encode_features` with the training split's fitted
vocabularies and statistics, then through :func:`rankmixer.data.arrays.table_to_arrays` as the
loader does. What this module adds is (1) the preprocessing spec, a JSON file holding those
fitted statistics (so an artifact needs no prepared-data directory, and loading reads no
pickle), and (2) per-value validation with messages that name the row and field, so a bad
request is refused before it can reach (and fail) a micro-batch shared with other requests.

No torch here: an ONNX Runtime server does not need it.
"""

from __future__ import annotations

import json
import math
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from rankmixer.data.arrays import Columns, table_to_arrays
from rankmixer.data.feature_map import FeatureMap
from rankmixer.data.encode import Fitted, encode_features, load_fitted, split_lists
from rankmixer.data.schema import (
    FIRST_ID,
    OOV_ID,
    PAD_ID,
    BehaviourFeature,
    CategoricalFeature,
    NumericalFeature,
    Schema,
    SequenceFeature,
)

SPEC_VERSION = 1

# Input kinds, as a request must give them (and as the manifest and docs list them).
CATEGORY = "category"  # a string or an integer (vocabulary keys are strings: 7 and "7" agree)
NUMBER = "number"  # a finite int or float
CATEGORY_LIST = "category_list"  # a JSON list of strings / integers
INT_LIST = "int_list"  # a JSON list of integers (sequence timestamps)
# A behaviour field: one value per position, oldest first, null where the value is missing (the
# OOV id, as an empty value between separators in a raw file); every field of one behaviour
# must have the same number of values.
CATEGORY_POSITIONS = "category_positions"  # a JSON list of strings / integers / nulls
NUMBER_POSITIONS = "number_positions"  # a JSON list of non-negative finite numbers / nulls
# A behaviour field's column may be left out of a row: no positions, like null or [].
POSITIONS = (CATEGORY_POSITIONS, NUMBER_POSITIONS)


# Dense inputs become float32: a larger magnitude would be inf in the model.
FLOAT32_MAX = float(np.finfo(np.float32).max)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class RowError(ValueError):
    """A request row is malformed; ``field`` names where (e.g. ``candidates[3].movie_id``),
    ``key`` the row key it is about (None when not one key), ``message`` what is wrong, and
    ``row`` the row's index when the error comes from encoding a list of rows."""

    def __init__(self, field: str, message: str, key: str | None = None, row: int | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.key, self.row = field, message, key, row


def field_name(name: Any) -> str:
    """A client-given key as it may appear in a field path: at most 60 characters, control
    characters and lone surrogates escaped (so an error message is always valid UTF-8)."""
    text = str(name)
    if len(text) > 60:
        text = text[:57] + "..."
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlist = _repr.maxdict = 6
_repr.maxlevel = 3


def show_value(v: Any) -> str:
    """A client's value for a message: its repr, shortened and nesting-limited, ASCII-safe (so
    a message quoting it is always valid UTF-8 and of bounded size)."""
    return _repr.repr(v).encode("ascii", "backslashreplace").decode("ascii")


@dataclass(frozen=True)
class InputSpec:
    """One canonical column a row must carry."""

    name: str
    kind: str
    # Which model features read it (a column may feed several, e.g. a dense and a bucketized one).
    features: tuple[str, ...]
    max_len: int = 0  # lists: values beyond it are cut exactly as in preparation

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "features": list(self.features), "max_len": self.max_len}


def _inputs_of(schema: Schema) -> list[InputSpec]:
    cols: dict[str, dict[str, Any]] = {}
    for f in schema.features:
        if isinstance(f, BehaviourFeature):
            for b in f.read_fields:
                kind = NUMBER_POSITIONS if b.bucketize is not None else CATEGORY_POSITIONS
                c = cols.setdefault(f.source_of(b), {"kind": kind, "features": [], "max_len": f.max_len})
                if c["kind"] != kind:
                    raise ValueError(f"column {f.source_of(b)!r} is read as both {c['kind']} and {kind}; "
                                     "cannot serve it")
                c["features"].append(f.name)
            continue
        if isinstance(f, NumericalFeature):
            kind, max_len = NUMBER, 0
        elif isinstance(f, CategoricalFeature):
            kind, max_len = CATEGORY, 0
        else:
            kind, max_len = CATEGORY_LIST, f.max_len
        c = cols.setdefault(f.column, {"kind": kind, "features": [], "max_len": max_len})
        if c["kind"] != kind:
            raise ValueError(f"column {f.column!r} is read as both {c['kind']} and {kind}; cannot serve it")
        c["features"].append(f.name)
        c["max_len"] = max(c["max_len"], max_len)
        if isinstance(f, SequenceFeature) and f.timestamps:
            cols.setdefault(f.timestamps, {"kind": INT_LIST, "features": [f.name], "max_len": f.max_len})
    return [InputSpec(k, v["kind"], tuple(v["features"]), v["max_len"]) for k, v in cols.items()]


def build_spec(fm: FeatureMap, schema: Schema) -> dict:
    """The preprocessing spec of a prepared dataset (JSON-serialisable): the schema, the fitted
    vocabularies (value -> id) and numerical statistics, the id conventions and the inputs."""
    if fm.root is None:
        raise ValueError("the feature map must be loaded from its prepared directory (to read vocab/)")
    fitted = load_fitted(fm.root, fm)
    return {
        "spec_version": SPEC_VERSION,
        "schema": schema.model_dump(mode="json"),
        "schema_hash": fm.schema_hash,
        "ids": {"pad": PAD_ID, "oov": OOV_ID, "first": FIRST_ID,
                "oov_means": "unseen in training, rarer than min_count, or missing (null)"},
        "inputs": [i.to_dict() for i in _inputs_of(schema)],
        "vocabularies": {
            table: {"values": v.get_column("value").to_list(), "ids": v.get_column("id").to_list()}
            for table, v in fitted.vocabs.items()
        },
        "numeric": fitted.numeric,
    }


class Preprocessor:
    """Validates and encodes canonical rows with a preprocessing spec."""

    def __init__(self, spec: dict, fm: FeatureMap) -> None:
        if spec.get("spec_version") != SPEC_VERSION:
            raise ValueError(f"preprocessing spec version {spec.get('spec_version')!r}, expected {SPEC_VERSION}")
        self.spec = spec
        self.fm = fm
        schema = Schema.model_validate(spec["schema"])
        # Serving rows carry no group key, time column or labels: drop the first two from the
        # schema the encoder sees, give it zero labels (the model never reads them).
        self.schema = schema.model_copy(update={"group_key": None, "time_column": None})
        self.inputs = [InputSpec(i["name"], i["kind"], tuple(i["features"]), i["max_len"]) for i in spec["inputs"]]
        self.fitted = Fitted(
            vocabs={t: pl.DataFrame({"value": v["values"], "id": v["ids"]},
                                    schema={"value": pl.Utf8, "id": pl.Int32})
                    for t, v in spec["vocabularies"].items()},
            numeric=spec["numeric"],
        )
        cols = Columns.from_feature_map(fm)
        cols.group = cols.time = False
        self.columns = cols
        # Features whose ids count towards the per-feature OOV metric.
        self.oov_features = cols.sparse + list(cols.bags) + list(cols.sequences) + list(cols.behaviours)
        # behaviour -> its fields' input columns, whose lengths must agree on every row.
        self.behaviour_inputs = {f.name: f.columns for f in self.schema.features if isinstance(f, BehaviourFeature)}
        # input column -> the order its values keep, oldest position first (BehaviourField.order)
        self.ordered_inputs = {f.source_of(b): b.order for f in self.schema.features
                               if isinstance(f, BehaviourFeature) for b in f.fields if b.order is not None}

    @classmethod
    def load(cls, path: str | Path, fm: FeatureMap) -> "Preprocessor":
        return cls(json.loads(Path(path).read_text()), fm)

    # ---- validation -----------------------------------------------------------------------
    def check_row(self, row: Any, where: str) -> dict[str, Any]:
        """The row's values as the encoder wants them (categories as strings); raises
        :class:`RowError` naming ``where.field`` for a missing field or a value of the wrong
        type. ``null`` is a missing value (OOV id / the feature's fill value), as in training.
        A behaviour's field may be left out, ``null`` or ``[]``: no positions (all its fields so:
        an empty history; only some: the positions do not line up, refused)."""
        if not isinstance(row, dict):
            raise RowError(where, f"expected an object of feature values, got {_json_type(row)}")
        names = {spec.name for spec in self.inputs}
        unknown = [k for k in row if k not in names]
        if unknown:
            k = unknown[0]
            raise RowError(f"{where}.{field_name(k)}", "unknown feature; this model reads "
                           + ", ".join(sorted(names)), key=k)
        out: dict[str, Any] = {}
        for spec in self.inputs:
            field = f"{where}.{spec.name}"
            if spec.name not in row and spec.kind in POSITIONS:
                out[spec.name] = []  # a behaviour field left out: no positions (an empty history)
                continue
            if spec.name not in row:
                raise RowError(field, f"missing feature (expected {spec.kind}; send null for an unknown value)",
                               key=spec.name)
            try:
                out[spec.name] = _check_value(row[spec.name], spec.kind, field)
            except RowError as e:
                e.key = spec.name
                raise
        for name, columns in self.behaviour_inputs.items():
            n0 = len(out[columns[0]])
            for c in columns[1:]:
                if len(out[c]) != n0:
                    given = f"{len(out[c])} values" if c in row else "left out (no values)"
                    first = f"{columns[0]} has {n0}" if columns[0] in row else f"{columns[0]} was left out"
                    raise RowError(f"{where}.{c}", f"{given}, but {first}: every "
                                   f"field of behaviour {name!r} needs one value per position", key=c)
        for c, order in self.ordered_inputs.items():
            values = [v for v in out[c] if v is not None]
            if any((b > a) if order == "non_increasing" else (b < a) for a, b in zip(values, values[1:])):
                rule = "must not increase" if order == "non_increasing" else "must not decrease"
                raise RowError(f"{where}.{c}", f"values {rule} from the oldest position to the newest "
                               "(behaviours oldest first)", key=c)
        return out

    # ---- encoding -------------------------------------------------------------------------
    def encode(self, rows: list[dict[str, Any]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Checked rows -> (arrays per Batch field as the loader builds them, OOV counts
        ``[rows, len(oov_features)]``: ids equal to the OOV id per row and feature; a bag, a
        sequence or a behaviour counts each of its values)."""
        # Columns go through pyarrow: building list columns from Python lists is C there,
        # while polars' constructor makes one Series per sub-list.
        types = {CATEGORY: pa.string(), NUMBER: pa.float64(), CATEGORY_LIST: pa.list_(pa.string()),
                 INT_LIST: pa.list_(pa.int64()), CATEGORY_POSITIONS: pa.list_(pa.string()),
                 NUMBER_POSITIONS: pa.list_(pa.float64())}
        data = {spec.name: pa.array([r[spec.name] for r in rows], type=types[spec.kind]) for spec in self.inputs}
        for lab in self.schema.labels:
            data[lab.name] = pa.array(np.zeros(len(rows)))
        frame = pl.from_arrow(pa.table(data))
        lf = split_lists(frame.lazy(), self.schema)
        enc, _ = encode_features(lf, self.schema, self.fitted)
        arrays = table_to_arrays(enc.collect().to_arrow(), self.columns)
        dense = arrays.get("dense")
        if dense is not None and dense.size and not np.isfinite(dense).all():
            # A finite value can still overflow float32 once normalised (a huge value, a tiny std).
            r, c = (int(x) for x in np.argwhere(~np.isfinite(dense))[0])
            name = self.columns.dense[c]
            column = next((i.name for i in self.inputs if name in i.features), name)
            raise RowError(f"rows[{r}].{column}", "value out of range: it is not a finite float32 once "
                           "normalised", key=column, row=r)
        oov = np.zeros((len(rows), len(self.oov_features)), dtype=np.int64)
        for k, f in enumerate(self.oov_features):
            if f in self.columns.sparse:
                ids = arrays["sparse"][:, self.columns.sparse.index(f)]
            else:
                prefix = "bag:" if f in self.columns.bags else "seq:" if f in self.columns.sequences else "beh:"
                ids = arrays[prefix + f]
            oov[:, k] = (ids == OOV_ID).reshape(len(rows), -1).sum(axis=1)
        return arrays, oov


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object" if isinstance(v, dict) else type(v).__name__


def _category(v: Any, field: str) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:  # JSON's "\ud800" escapes decode to lone surrogates
            raise RowError(field, f"not valid Unicode text (a lone surrogate): {show_value(v)}") from None
        return v
    # bool is an int in Python; a float would become "7.0", a key training never produced.
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    raise RowError(field, f"expected a string or an integer (a category), got {_json_type(v)} {show_value(v)}")


def _check_value(v: Any, kind: str, field: str) -> Any:
    if kind == CATEGORY:
        return _category(v, field)
    if kind == NUMBER:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RowError(field, f"expected a number, got {_json_type(v)} {show_value(v)}")
        if isinstance(v, int) and abs(v) > FLOAT32_MAX:  # float() of a huge int would overflow
            raise RowError(field, f"number out of range (|x| <= {FLOAT32_MAX:.4g}), got {show_value(v)}")
        if not math.isfinite(v):
            raise RowError(field, f"expected a finite number, got {v!r}")
        if abs(v) > FLOAT32_MAX:
            raise RowError(field, f"number out of range (|x| <= {FLOAT32_MAX:.4g}), got {v!r}")
        return float(v)
    if v is None:
        return []
    if not isinstance(v, list):
        raise RowError(field, f"expected an array, got {_json_type(v)} {show_value(v)}")
    if kind == CATEGORY_POSITIONS:
        return [None if x is None else _category(x, f"{field}[{j}]") for j, x in enumerate(v)]
    if kind == NUMBER_POSITIONS:
        out = []
        for j, x in enumerate(v):
            x = _check_value(x, NUMBER, f"{field}[{j}]")
            if x is not None and x < 0:
                raise RowError(f"{field}[{j}]", f"expected a non-negative number (a behaviour's gap or count), "
                               f"got {show_value(v[j])}")
            out.append(x)
        return out
    if kind == CATEGORY_LIST:
        out = []
        for j, x in enumerate(v):
            if x is None:
                raise RowError(f"{field}[{j}]", "null inside an array (leave the value out instead)")
            out.append(_category(x, f"{field}[{j}]"))
        return out
    for j, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, int):
            raise RowError(f"{field}[{j}]", f"expected an integer, got {_json_type(x)} {show_value(x)}")
        if not INT64_MIN <= x <= INT64_MAX:
            raise RowError(f"{field}[{j}]", f"integer out of the 64-bit range, got {show_value(x)}")
    return v
