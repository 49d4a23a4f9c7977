"""The ``data`` section of an experiment: which dataset, where its raw files and prepared shards
live, and how bad rows are treated. Every field is documented where it is declared."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from rankmixer.core.strict import StrictModel


class DataConfig(StrictModel):
    # A dataset preset (`rankmixer data presets` lists them) or a schema file for your own data.
    dataset: str | None = "synthetic"
    schema_file: str | None = None
    # Raw input: a file or directory for a preset; for a schema file, a file or a list of files.
    raw: str | None = None
    # With a schema whose split is "files": one raw file list per split.
    raw_splits: dict[Literal["train", "valid", "test"], list[str]] | None = None
    # Options passed to the preset (e.g. criteo: {min_count: 10}; synthetic: {rows_train: ...}).
    preset_options: dict[str, Any] = Field(default_factory=dict)
    # Where prepared shards go; default data_cache/<dataset>.
    prepared_dir: str | None = None
    on_bad_row: Literal["fail", "skip"] = "fail"
    num_workers: int = Field(0, ge=0)
    shuffle_buffer: int = Field(65_536, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        if self.schema_file and self.dataset not in (None, "synthetic"):
            raise ValueError("give either data.dataset (a preset) or data.schema_file, not both")
        # The synthetic default is for configs that name no data at all: raw files without a
        # preset or schema would otherwise be ignored (or written over by the generator).
        if (self.raw or self.raw_splits) and not self.schema_file and "dataset" not in self.model_fields_set:
            raise ValueError("data.raw is given but nothing says what the raw files hold: set data.dataset "
                             "(a preset, e.g. movielens-latest) or data.schema_file (your own schema)")
        return self

    def prepared_path(self) -> Path:
        """Where the prepared shards live: ``prepared_dir``, or ``data_cache/<dataset>``."""
        if self.prepared_dir:
            return Path(self.prepared_dir)
        return Path("data_cache") / self.name

    @property
    def name(self) -> str:
        """The dataset's name in run names and default paths."""
        return self.dataset or Path(self.schema_file or "custom").stem
