"""Where a study's trials live: the Optuna storage, the study in it, and its sampler.

A storage is an Optuna RDB URL (``sqlite:///DIR/study.db``, the default; ``postgresql://...``)
or the path of an Optuna journal file; several processes, on one machine or many, share a study
by naming the same storage and study. A study remembers the space and the base config it was
created with, and refuses to continue under others (its trials would not be comparable).

Interrupted trials are run again with the same parameters, in the same run directories:

* a process killed mid-trial leaves it RUNNING; RDB storages record a heartbeat per running
  trial, and once it is older than twice the interval the next process to start a trial marks it
  failed and queues a retry (Optuna's stale-trial callback). A journal file has no heartbeat: a
  killed trial stays RUNNING there;
* a trial stopped by Ctrl-C is marked failed with ``interrupted`` set, and queued again by the
  next run (:func:`retry_interrupted`).

Each trial is retried at most :data:`MAX_RETRIES` times.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from rankmixer.core.extras import MissingExtra
from rankmixer.tune.space import SamplerConfig, SearchSpace, SpaceError

__all__ = ["MAX_RETRIES", "MissingExtra", "continued_seed", "import_optuna", "open_storage", "open_study", "public_url",
           "retry_interrupted", "storage_url"]

MAX_RETRIES = 2
SPACE_ATTR, CONFIG_ATTR = "rankmixer_space", "rankmixer_config"  # what a study was created with


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise MissingExtra("rankmixer tune needs Optuna (the package's 'tune' extra): "
                           "pip install 'optuna>=4'") from None
    return optuna


def storage_url(out_dir: Path, storage: str | None) -> str:
    """The storage a study uses: ``storage`` as given, or a SQLite file in ``out_dir``."""
    return storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"


def public_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (it is printed and written to tune.json)."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def _retry_callback(optuna):
    """Optuna's stale-trial retry (renamed in 4.9; both names work)."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(max_retry=MAX_RETRIES)


def open_storage(url: str, heartbeat_s: int = 60):
    """An Optuna storage for ``url``: an RDB URL (with a heartbeat every ``heartbeat_s``
    seconds) or a journal file's path."""
    optuna = import_optuna()
    if "://" not in url:
        path = Path(url)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"storage {url}: the folder {path.parent} does not exist")
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    name = "heartbeat_stale_trial_callback" if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback") \
        else "failed_trial_callback"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                                          **{name: _retry_callback(optuna)})


def continued_seed(seed: int | None, trials_before: int) -> int | None:
    """The seed of a sampler continuing a study: ``seed`` itself for a fresh study (the same
    first trials for the same seed), else one derived from (seed, trials so far), so a second run
    does not replay the first one's random draws."""
    if seed is None or not trials_before:
        return seed
    return int(np.random.SeedSequence([seed, trials_before]).generate_state(1)[0])


def make_sampler(cfg: SamplerConfig, trials_before: int):
    """The space's sampler, seeded by :func:`continued_seed`."""
    optuna = import_optuna()
    seed = continued_seed(cfg.seed, trials_before)
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    extra = {} if cfg.n_startup_trials is None else {"n_startup_trials": cfg.n_startup_trials}
    return optuna.samplers.TPESampler(seed=seed, **extra)


def _differences(saved: Any, now: Any, key: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        return [d for k in sorted(set(saved) | set(now), key=str)
                for d in _differences(saved.get(k), now.get(k), f"{key}.{k}" if key else str(k))]
    return [] if saved == now else [key or "(all)"]


def open_study(storage, name: str, space: SearchSpace, base_config: dict, sampler_factory=None):
    """The study ``name`` in ``storage``, created if new; an existing one must have been created
    with the same space (sampler aside) and base config, else a :class:`SpaceError` names the
    keys that differ. ``sampler_factory(trials_before)``, when given, builds the sampler instead
    of the space's (a search strategy of its own, such as rankmixer.search.automl)."""
    optuna = import_optuna()
    study = optuna.create_study(storage=storage, study_name=name, direction=space.objective.direction,
                                load_if_exists=True)
    mine = {SPACE_ATTR: {k: v for k, v in space.describe().items() if k != "sampler"}, CONFIG_ATTR: base_config}
    if not study.user_attrs:
        for k, v in mine.items():
            study.set_user_attr(k, v)
    for attr, what in ((SPACE_ATTR, "search space"), (CONFIG_ATTR, "config (with the command's overrides)")):
        diff = _differences(study.user_attrs.get(attr), mine[attr])
        if diff:
            raise SpaceError(f"study {name!r} was created with another {what}: {', '.join(diff[:8])} differ; "
                             "continue it with the same one, or start another study (--study NAME or another --out)")
    before = len(study.get_trials(deepcopy=False))
    sampler = make_sampler(space.sampler, before) if sampler_factory is None else sampler_factory(before)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler)


def retry_interrupted(study) -> list[int]:
    """Queue a retry of every trial stopped by Ctrl-C that has none yet; their numbers."""
    optuna = import_optuna()
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    queued = []
    callback = _retry_callback(optuna)
    for t in trials:
        if (t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried
                and len(t.system_attrs.get("retry_history", [])) < MAX_RETRIES):
            callback(study, t)
            queued.append(t.number)
    return queued
