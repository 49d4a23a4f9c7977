"""Conversion logs: clicks with their conversion time (or none yet), and a seeded synthetic log
with planted per-advertiser exponential delays, the data behind Personalized Interpolation
(docs/production.md).

* :mod:`.log`: the conversion-log columns, window labels and censoring, the log's rules;
* :mod:`.criteo`: a reader for the Criteo conversion logs layout (Chapelle 2014);
* :mod:`.config`: :class:`ConversionsConfig` (the planted model is in its docstring);
* :mod:`.generator`: the planted conversion probability, delays and click times;
* :mod:`.columns`: columns, Arrow types and a window's feature schema;
* :mod:`.writer`: Parquet files and ``conversions_meta.json``;
* :mod:`.preset`: the registered ``conversions`` preset (one conversion window per prepared set).
"""

from rankmixer.data.datasets.conversions.config import META_FILE, ConversionsConfig
from rankmixer.data.datasets.conversions.writer import generate, load_meta

__all__ = ["ConversionsConfig", "generate", "load_meta", "META_FILE"]
