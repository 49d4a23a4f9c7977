"""Seeded synthetic behaviour sequences with a planted sequence model and known Bayes AUC.

Each row is an impression: a user, a candidate item (and its category), the user's behaviour
history (up to ``seq_len_max`` = 1,000 behaviours, oldest first, in four parallel "|"-joined
columns: item, category, type, time gap) and the click. The click probability depends on
*where* behaviours sit in the history (target attention over the last behaviours, a decayed
last-k match, a periodic return hundreds of positions back), so models that pool the history
as an unordered bag cannot reach the Bayes-optimal AUC the meta file reports.

``generate(cfg, out_dir)`` streams rows block by block into Parquet (memory bounded by
``chunk_rows``); the same config (seed included) gives the same files byte for byte.

One job per module:

* :mod:`.config`: :class:`BehaviourConfig` and the layout constants;
* :mod:`.catalog`: items, their categories and popularity;
* :mod:`.history`: drifting interests, periodic returns, types and time gaps;
* :mod:`.terms`: the planted sequence terms;
* :mod:`.generator`: the planted model (parameters, row sampler, true click probability);
* :mod:`.columns`: the columns (names, Arrow types) and the feature schema;
* :mod:`.stream`: rows as Arrow record batches, one seeded block at a time;
* :mod:`.writer`: Parquet files, ``schema.yaml`` and ``behaviour_meta.json``;
* :mod:`.preset`: the registered ``behaviour`` dataset preset.

``docs/sequence.md`` ("The synthetic behaviour set") describes the data for users.
"""

from rankmixer.data.datasets.behaviour.columns import column_names, schema, schema_dict, schema_yaml
from rankmixer.data.datasets.behaviour.config import BLOCK_ROWS, META_FILE, SCHEMA_FILE, BehaviourConfig
from rankmixer.data.datasets.behaviour.stream import iter_batches
from rankmixer.data.datasets.behaviour.writer import config_from_dir, generate, load_meta, split_files

__all__ = [
    "BehaviourConfig",
    "generate",
    "schema",
    "schema_dict",
    "schema_yaml",
    "column_names",
    "iter_batches",
    "load_meta",
    "config_from_dir",
    "split_files",
    "BLOCK_ROWS",
    "META_FILE",
    "SCHEMA_FILE",
]
