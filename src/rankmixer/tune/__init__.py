"""Hyperparameter tuning: trials of an experiment config over a search space, stored in an
Optuna study that several processes (or machines) can work on together.

* ``space.py``: the search-space file (keys, distributions, objective, seeds, sampler);
* ``study.py``: the Optuna storage and study, their heartbeat and retries;
* ``run.py``: the trials themselves (``rankmixer tune``);
* ``report.py``: ``tune.json``, the best trial's values as overrides.

Optuna is an optional dependency (the ``tune`` extra); it is imported when a study opens.
"""

from rankmixer.tune.report import build_report, trial_record
from rankmixer.tune.run import REPORT_FILE, TUNE_KIND, TuneError, run_tune
from rankmixer.tune.space import (
    Objective,
    Param,
    SamplerConfig,
    SearchSpace,
    SpaceError,
    format_override,
    load_space,
    parse_space,
)
from rankmixer.tune.study import MissingExtra, import_optuna, open_storage, open_study, storage_url

__all__ = [
    "MissingExtra", "Objective", "Param", "REPORT_FILE", "SamplerConfig", "SearchSpace", "SpaceError", "TUNE_KIND",
    "TuneError", "build_report", "format_override", "import_optuna", "load_space", "open_storage", "open_study",
    "parse_space", "run_tune", "storage_url", "trial_record",
]
