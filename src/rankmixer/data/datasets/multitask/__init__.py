"""Seeded multi-task click data whose tasks conflict by a controllable amount, with known
Bayes-optimal metrics per task: the planted set behind the multi-objective (Pareto) study.

* :mod:`.config`: :class:`MultitaskConfig` (the planted formula is in its docstring);
* :mod:`.generator`: the planted model (id sampler, components, true probabilities);
* :mod:`.columns`: columns, Arrow types and the feature schema;
* :mod:`.stream`: rows as Arrow record batches, one seeded block at a time;
* :mod:`.writer`: Parquet files, ``schema.yaml`` and ``multitask_meta.json``;
* :mod:`.preset`: the registered ``multitask`` dataset preset.
"""

from rankmixer.data.datasets.multitask.config import META_FILE, MultitaskConfig
from rankmixer.data.datasets.multitask.writer import generate, load_meta

__all__ = ["MultitaskConfig", "generate", "load_meta", "META_FILE"]
