"""The ``reviews`` preset: the review-ranking generator behind the dataset preset interface.

Like the other generated presets: raw files are generated on first use (into
``<prepared_dir>-raw`` unless ``data.raw`` says otherwise), again only when the generator config
changes, and the Bayes-optimal metrics per split go into the feature map's ``extras["bayes"]``.

Preset option ``review_features`` (not part of the generator config, so it never regenerates
the data): a features table written by ``rankmixer features reviews`` from the set's
``reviews.parquet``. Its schema snippet (the ``.schema.yaml`` beside it) adds its features to
the schema, and the transform joins the table on ``item`` (left join: an item without a row
gets missing values; a repeated item is a bad row, as in any lookup table). Without it the
schema has user, item and the tastes only: the two configs measure what review features add.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from rankmixer.core.yamlio import read_yaml_mapping
from rankmixer.data.datasets.base import TransformContext, register_preset
from rankmixer.data.datasets.common import unique_lookup
from rankmixer.data.datasets.generated import GeneratedPreset
from rankmixer.data.datasets.reviews.columns import schema as feature_schema
from rankmixer.data.datasets.reviews.config import META_FILE, ReviewsConfig
from rankmixer.data.datasets.reviews.writer import generate, load_meta
from rankmixer.data.schema import RawColumn, Schema, SourceSpec


@register_preset
class ReviewsPreset(GeneratedPreset):
    name = "reviews"
    description = ("synthetic impressions whose items carry ASTE-V2 review sentences, clicks planted on the "
                   "reviews' aspect sentiments (known Bayes-optimal AUC)")
    config_cls = ReviewsConfig
    meta_file = META_FILE
    writer = staticmethod(generate)
    meta_reader = staticmethod(load_meta)

    def __init__(self, review_features: str | None = None, **options):
        super().__init__(**options)
        self.features_path = Path(review_features) if review_features else None
        self.snippet = self._read_snippet() if self.features_path else None

    def _read_snippet(self) -> dict:
        assert self.features_path is not None
        # the snippet's name beside the table, as rankmixer.text.review_features writes it
        path = self.features_path.with_suffix(".schema.yaml")
        if not self.features_path.is_file():
            raise FileNotFoundError(f"review_features {self.features_path} not found (write it with "
                                    "`rankmixer features reviews`)")
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the schema snippet `rankmixer features reviews` writes "
                                    f"beside {self.features_path.name}")
        snippet = read_yaml_mapping(path, "review features schema snippet")
        for key in ("join_on", "columns", "features"):
            if key not in snippet:
                raise ValueError(f"{path}: no {key!r} (not a snippet of `rankmixer features reviews`)")
        return snippet

    def schema(self) -> Schema:
        return feature_schema(self.cfg.n_aspects, self.snippet)

    def side_files(self, path: Path) -> list[Path]:
        return [self.features_path] if self.features_path else []

    def transform(self, lf: pl.LazyFrame, ctx: TransformContext) -> pl.LazyFrame:
        if self.snippet is None or self.features_path is None:
            return lf
        key = self.snippet["join_on"]
        source = SourceSpec(format="parquet", columns=[RawColumn(name=key, type="str", required=True),
                                                       *(RawColumn(**c) for c in self.snippet["columns"])])
        table = unique_lookup(ctx.read_side_table(self.features_path, source), key, self.features_path,
                              ctx.on_bad_row, ctx.report)
        table = table.select(pl.col(key).alias("item"), *(c["name"] for c in self.snippet["columns"]))
        return lf.join(table.lazy(), on="item", how="left", maintain_order="left")
