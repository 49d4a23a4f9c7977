"""Seeded synthetic CTR data with a planted ground-truth model (quick start, scaling studies).

``generate(cfg, out_dir)`` streams rows block by block into Parquet, so any number of rows
(100M+) is written with memory bounded by ``chunk_rows``; ``schema(cfg)`` is the matching
feature :class:`~rankmixer.data.schema.Schema`; the meta file holds the Bayes-optimal AUC and
logloss of every split, the ceiling any model can reach. The same config (seed included) gives
the same files byte for byte. ``rankmixer data synthetic OUT_DIR`` runs ``generate`` from the
command line; the ``synthetic`` dataset preset generates on first use.

One job per module:

* :mod:`.config`: :class:`SyntheticConfig` and the layout constants;
* :mod:`.columns`: the columns (names, Arrow types) and the feature schema;
* :mod:`.sampling`: seeded random streams and the bounded Zipf sampler;
* :mod:`.generator`: the planted model (parameters, row sampler, true click probability);
* :mod:`.stream`: rows as Arrow record batches, one seeded block at a time;
* :mod:`.writer`: Parquet files, ``schema.yaml`` and ``synthetic_meta.json``;
* :mod:`.preset`: the registered ``synthetic`` dataset preset.

``docs/data.md`` ("The synthetic set") describes the data for users.
"""

from rankmixer.data.datasets.synthetic.columns import schema
from rankmixer.data.datasets.synthetic.config import (
    BLOCK_ROWS,
    META_FILE,
    SCHEMA_FILE,
    SPLITS,
    SyntheticConfig,
)
from rankmixer.data.datasets.synthetic.stream import iter_batches
from rankmixer.data.datasets.synthetic.writer import config_from_dir, generate, load_meta, split_files

__all__ = [
    "SyntheticConfig",
    "generate",
    "schema",
    "iter_batches",
    "load_meta",
    "config_from_dir",
    "split_files",
    "BLOCK_ROWS",
    "META_FILE",
    "SPLITS",
    "SCHEMA_FILE",
]
