"""Our prepared splits exported for FuxiCTR's own feature processing: the raw canonical rows of
each split, and FuxiCTR's dataset config describing them.

What is exported: the rows before our encoding (a preset's transform applied, labels checked,
bags and sequences split into values), re-read from the raw files and split exactly as
``data prepare`` splits them, so FuxiCTR fits its own vocabularies and normalisers on the same
training rows. :func:`export_splits` checks that by encoding the re-read rows with our fitted
statistics and comparing them, column by column and row by row, with the prepared shards: the
exported test split is our test split, in its order. Each row also carries ``__split_row``
(its index in the split; a FuxiCTR ``meta`` column the models never see), so predictions are
matched back to rows whatever order FuxiCTR's Ray loader yields them in.

Columns, one Parquet file per split (``train.parquet``, ``valid.parquet``, ``test.parquet``):
labels (float); categorical features as strings; numerical ones as floats (a ``log1p``
feature already transformed, FuxiCTR has no such normaliser; log-bucketized ones raw, FuxiCTR's
Criteo ``convert_to_bucket`` buckets them); bags and sequences as ``^``-joined strings, FuxiCTR's
sequence format (its Parquet path for list columns fails in 2.3.10: it fills nulls with a
string before joining). :func:`notes` lists every place FuxiCTR's processing cannot do what our
schema asks (hashing, vocabulary caps).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

from rankmixer import experiment
from rankmixer.data.config import DataConfig
from rankmixer.data.encode import encode_features, load_fitted, signed_log1p
from rankmixer.data.feature_map import GROUP_COLUMN, FeatureMap
from rankmixer.data.prepare import SPLITS, canonical_rows, split_canonical
from rankmixer.data.schema import (
    CategoricalFeature,
    MultiCategoricalFeature,
    NumericalFeature,
    Schema,
    SequenceFeature,
)

__all__ = ["ROW_ID", "SPLITTER", "ExportError", "dataset_config", "export_splits", "notes"]

ROW_ID = "__split_row"  # a row's index in its split
SPLITTER = "^"  # FuxiCTR's sequence separator (its default)


class ExportError(ValueError):
    """The splits cannot be exported faithfully; the message says why."""


def _ordered(schema: Schema) -> list:
    """Features in our feature map's order: categorical-like, dense, bags, sequences. Behaviour
    sequences have no FuxiCTR counterpart here: refused with a message naming them."""
    behaviours = [f.name for f in schema.features if f.type == "behaviour"]
    if behaviours:
        raise ExportError(f"behaviour features {behaviours} cannot be exported to FuxiCTR (not supported yet)")
    def rank(f) -> int:
        if isinstance(f, CategoricalFeature) or (isinstance(f, NumericalFeature) and f.bucketize is not None):
            return 0
        if isinstance(f, NumericalFeature):
            return 1
        return 2 if isinstance(f, MultiCategoricalFeature) else 3
    return sorted(schema.features, key=rank)  # stable: the schema's order within a kind


def _column(f) -> pl.Expr:
    """Feature ``f`` of a canonical row as exported."""
    if isinstance(f, (MultiCategoricalFeature, SequenceFeature)):
        return pl.col(f.name).list.join(SPLITTER).alias(f.name)
    if isinstance(f, NumericalFeature):
        v = pl.col(f.column).cast(pl.Float64)
        if f.bucketize is None and f.normalize == "log1p":
            v = signed_log1p(v.fill_null(f.fill_missing))
        return v.alias(f.name)
    return pl.col(f.column).cast(pl.Utf8).alias(f.name)


def _feature_col(f) -> dict:
    """FuxiCTR's ``feature_cols`` entry for feature ``f``."""
    col = {"name": f.name, "active": True}
    if isinstance(f, (MultiCategoricalFeature, SequenceFeature)):
        # Bags keep their first max_len values, sequences their most recent: FuxiCTR's padding
        # side is also its truncation side.
        col.update(dtype="str", type="sequence", splitter=SPLITTER, max_len=f.max_len,
                   padding="post" if isinstance(f, MultiCategoricalFeature) else "pre",
                   min_categr_count=f.min_count, feature_encoder="layers.MaskedAveragePooling()")
        if f.share_with:
            col["share_embedding"] = f.share_with
        return col
    if isinstance(f, NumericalFeature):
        if f.bucketize is not None:
            if f.bucketize.method != "log":
                raise ExportError(f"feature {f.name!r}: FuxiCTR 2.3.10 cannot apply quantile buckets (its "
                                  "FeatureProcessor.transform has no branch for quantile_bucket)")
            return {**col, "dtype": "float", "type": "categorical", "preprocess": "convert_to_bucket",
                    "min_categr_count": f.bucketize.min_count}
        col.update(dtype="float", type="numeric", fill_na=f.fill_missing)
        scaler = {"standard": "StandardScaler", "minmax": "MinMaxScaler"}.get(f.normalize)
        if scaler:
            col["normalizer"] = scaler
        return col
    return {**col, "dtype": "str", "type": "categorical", "min_categr_count": f.min_count}


def dataset_config(schema: Schema, data_dir: str, data_root: str) -> dict:
    """One entry of FuxiCTR's ``dataset_config.yaml`` (its keys: ``data_root``, ``data_format``,
    ``train_data`` ..., ``feature_cols``, ``label_col``) for the files :func:`export_splits`
    writes into ``data_dir``; FuxiCTR writes its processed data under ``data_root``."""
    if ROW_ID in {f.name for f in schema.features}:
        raise ExportError(f"a feature is named {ROW_ID!r}, the column the export adds")
    cols = [_feature_col(f) for f in _ordered(schema)]
    cols.append({"name": ROW_ID, "active": True, "dtype": "int", "type": "meta", "remap": False})
    return {"data_root": data_root, "data_format": "parquet", "min_categr_count": 1,
            **{f"{s}_data": f"{data_dir}/{s}.parquet" for s in SPLITS},
            "feature_cols": cols, "label_col": [{"name": lab.name, "dtype": "float"} for lab in schema.labels]}


def notes(schema: Schema) -> list[str]:
    """Where FuxiCTR's feature processing differs from what our schema asks."""
    out = []
    for f in schema.features:
        if getattr(f, "hash_buckets", None):
            out.append(f"{f.name}: hashed into {f.hash_buckets} buckets by us; FuxiCTR counts a vocabulary "
                       "(its hash_bucket processor is not implemented in 2.3.10)")
        if getattr(f, "max_size", None):
            out.append(f"{f.name}: vocabulary capped at {f.max_size} by us; FuxiCTR has no cap")
        if isinstance(f, NumericalFeature) and f.bucketize is None and f.normalize == "log1p":
            out.append(f"{f.name}: signed log1p applied before export (FuxiCTR has no log1p normaliser)")
        if isinstance(f, NumericalFeature) and f.bucketize is not None:
            out.append(f"{f.name}: log buckets by FuxiCTR's Criteo convert_to_bucket (a missing value is 0, "
                       "for us out-of-vocabulary)")
    return out


def export_splits(data: DataConfig, fm: FeatureMap, out_dir: Path,
                  log: Callable[[str], None] = print) -> dict[str, int]:
    """Write the canonical rows of each prepared split into ``out_dir/<split>.parquet`` (see the
    module docstring) after checking they are the prepared rows, in order; rows per split."""
    src = experiment.data_source(data)
    schema = src.schema
    exprs = [pl.col(lab.name).cast(pl.Float64) for lab in schema.labels] + [_column(f) for f in _ordered(schema)]
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "_work"
    work.mkdir()
    try:
        lf, _, _ = canonical_rows(schema, src.raw, work, src.preset, src.raw_path, data.on_bad_row)
        parts = split_canonical(lf, schema, work, by_files=not src.raw.all, log=log)
        _check_values(parts["train"], schema)
        _check_same_rows(parts, schema, fm)
        rows = {}
        for split in SPLITS:
            path = out_dir / f"{split}.parquet"
            parts[split].select(exprs).with_row_index(ROW_ID).sink_parquet(path)
            rows[split] = pl.scan_parquet(path).select(pl.len()).collect().item()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"exported {rows} rows for FuxiCTR into {out_dir}")
    return rows


def _check_values(lf: pl.LazyFrame, schema: Schema) -> None:
    """No bag or sequence value contains FuxiCTR's separator (it would split it in two)."""
    lists = [f.name for f in schema.features if isinstance(f, (MultiCategoricalFeature, SequenceFeature))]
    for name in lists:
        hit = lf.select(pl.col(name).list.eval(pl.element().str.contains(SPLITTER, literal=True)).list.any().any())
        if hit.collect().item():
            raise ExportError(f"feature {name!r}: a value contains {SPLITTER!r}, FuxiCTR's sequence separator")


def _check_same_rows(parts: dict[str, pl.LazyFrame], schema: Schema, fm: FeatureMap) -> None:
    """The re-read canonical rows, encoded with the prepared data's statistics, equal the
    prepared shards: same rows, same order, every column (the group id apart: it is derived
    from a canonical column and only hashed)."""
    fitted = load_fitted(fm.root, fm)
    for split, part in parts.items():
        enc, _ = encode_features(part, schema, fitted)
        cols = [c for c in enc.collect_schema().names() if c != GROUP_COLUMN]
        ours = pl.scan_parquet(fm.split_files(split)).select(cols).collect()
        again = enc.select(cols).collect()
        if again.height != ours.height or not again.equals(ours):
            raise ExportError(f"split {split!r}: the rows re-read from the raw files ({again.height:,}) are not the "
                              f"prepared rows in {fm.root} ({ours.height:,} rows) in the same order; prepare the "
                              "data again (rankmixer data prepare --force)")
