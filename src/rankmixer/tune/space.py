"""A search space: the config keys a study varies and how, and what it optimises.

A space file is a YAML mapping. Its reserved keys say what a trial's value is and how trials
are drawn; every other key is a config override key, as ``rankmixer train`` takes them
(``train.dense_optimizer.lr``, ``model.dropout``, or ``model`` to swap a whole part), mapped to
exactly one of four kinds::

    objective: {metric: auc, split: valid, direction: maximize}   # the default
    seeds: [1, 2]                    # optional: a trial trains once per seed; its value is the mean
    sampler: {name: tpe, seed: 0}    # tpe (n_startup_trials: N) or random
    train.dense_optimizer.lr: {float: [1.0e-4, 1.0e-2], log: true}   # also step: x (not with log)
    model.num_cross_layers: {int: [2, 5], step: 1}                   # also log: true
    model.dnn_hidden: {choice: [[256, 256], [400, 400, 400]]}        # any YAML values
    train.epochs: {fixed: 20}                                        # applied, not searched

The objective reads the validation split only: ``split: test`` is refused, so no choice a
study makes can depend on the test split. Errors name the file and the key. Values reach the
config as override strings (:func:`format_override`), the same text a user would type.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from rankmixer.config import GROUPS, ConfigError, config_path, load_config
from rankmixer.core.metrics import higher_is_better
from rankmixer.core.strict import StrictModel
from rankmixer.core.yamlio import format_validation_error, read_yaml_mapping

__all__ = ["Objective", "Param", "SamplerConfig", "SearchSpace", "SpaceError", "format_override", "load_space",
           "parse_distribution", "parse_section", "parse_seeds", "parse_space"]

RESERVED = ("objective", "seeds", "sampler")
KINDS = {"float": ("log", "step"), "int": ("log", "step"), "choice": (), "fixed": ()}  # kind -> its options
_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_SCALARS = (str, int, float, bool, type(None))


class SpaceError(ConfigError):
    """A search space cannot be used; the message names the file and the key."""


class Objective(StrictModel):
    metric: str = "auc"  # a key of metrics.json's valid metrics: auc, logloss, gauc, ne, click/auc ...
    split: str = "valid"
    direction: Literal["maximize", "minimize"] | None = None  # None: the metric's own (auc up, logloss down)

    @field_validator("split")
    @classmethod
    def _valid_only(cls, split: str) -> str:
        if split != "valid":
            raise ValueError(f"{split!r}: a study reads the validation split only (the test split is kept for "
                             "the final report, so no tuning choice can depend on it)")
        return split

    @model_validator(mode="after")
    def _direction(self) -> "Objective":
        try:
            natural = "maximize" if higher_is_better(self.metric) else "minimize"
        except ValueError as e:
            raise ValueError(f"metric: {e}") from None
        if self.direction is None:
            self.direction = natural
        elif self.direction != natural:
            raise ValueError(f"direction {self.direction!r} contradicts the metric {self.metric!r} "
                             f"(better is {'higher' if natural == 'maximize' else 'lower'}); leave direction out")
        return self


class SamplerConfig(StrictModel):
    name: Literal["tpe", "random"] = "tpe"
    seed: int | None = None  # None: a different draw every time
    n_startup_trials: int | None = Field(None, ge=0)  # tpe only: random trials before TPE models the rest

    @model_validator(mode="after")
    def _tpe_only(self) -> "SamplerConfig":
        if self.n_startup_trials is not None and self.name != "tpe":
            raise ValueError("n_startup_trials is an option of the tpe sampler")
        return self


def format_override(key: str, value: Any) -> str:
    """``key=value`` with the value as one line of YAML that reads back as exactly ``value``
    (``1e-05`` is written ``1.0e-05``: YAML would read the former as a string)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    text = text.removesuffix("...").strip()  # the end-of-document marker after a plain scalar
    if yaml.safe_load(text) != value or "\n" in text:
        raise SpaceError(f"{key}: the value {value!r} cannot be written as a one-line override")
    return f"{key}={text}"


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) key. ``choices`` are the values themselves; Optuna sees them as
    :attr:`encoded` (JSON text when a choice is a list or mapping, which Optuna cannot store, or
    when Python would confuse two of them, as ``True`` and ``1``)."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()
    value: Any = None  # fixed

    @property
    def encoded(self) -> tuple:
        plain = all(isinstance(c, _SCALARS) for c in self.choices)
        distinct = plain and len({(type(c), c) for c in self.choices}) == len(set(self.choices))
        return self.choices if plain and distinct else tuple(json.dumps(c, sort_keys=True) for c in self.choices)

    def decode(self, optuna_value: Any) -> Any:
        """The config value behind what Optuna stored for this key: a stepped float rounded to
        its grid's decimals (Optuna's ``low + k * step`` gives 0.30000000000000004)."""
        if self.kind == "choice":
            return self.choices[self.encoded.index(optuna_value)]
        if self.kind == "float" and self.step is not None:
            return round(optuna_value, max(_decimals(self.step), _decimals(self.low)))
        return optuna_value

    def suggest(self, trial) -> Any:
        """This key's value in an Optuna trial: drawn (or, in a retried trial, the value drawn
        before), or the fixed value."""
        if self.kind == "float":
            return self.decode(trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step))
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        if self.kind == "choice":
            return self.decode(trial.suggest_categorical(self.key, self.encoded))
        return self.value

    def probes(self) -> list:
        """Values that together exercise the whole range (both bounds, every choice)."""
        if self.kind in ("float", "int"):
            return [self.low, self.high]
        return list(self.choices) if self.kind == "choice" else [self.value]

    def contains(self, value: Any) -> bool:
        if self.kind in ("float", "int"):
            return self.low <= value <= self.high and (self.kind == "float" or isinstance(value, int))
        return value in self.choices if self.kind == "choice" else value == self.value

    def spec(self) -> dict:
        """The entry as a space file writes it."""
        if self.kind in ("float", "int"):
            return {self.kind: [self.low, self.high], **({"log": True} if self.log else {}),
                    **({"step": self.step} if self.step is not None else {})}
        return {"choice": list(self.choices)} if self.kind == "choice" else {"fixed": self.value}


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    objective: Objective = field(default_factory=Objective)
    seeds: tuple[int, ...] | None = None  # None: the config's own seed
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    where: str = "search space"
    file: Path | None = None  # the file it was read from (an input the tuner must not overwrite)

    @property
    def searched(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kind != "fixed")

    def suggest(self, trial) -> dict[str, Any]:
        """Every key's value for an Optuna trial (searched ones drawn by it, fixed ones as given)."""
        return {p.key: p.suggest(trial) for p in self.params}

    def values(self, optuna_params: dict[str, Any]) -> dict[str, Any]:
        """Every key's config value for a finished trial's Optuna params (fixed keys included)."""
        return {p.key: p.value if p.kind == "fixed" else p.decode(optuna_params[p.key])
                for p in self.params if p.kind == "fixed" or p.key in optuna_params}

    def overrides(self, values: dict[str, Any]) -> list[str]:
        return [format_override(k, v) for k, v in values.items()]

    def summary(self, values: dict[str, Any]) -> str:
        """A trial's values in one line of the log."""
        return " ".join(self.overrides(values))

    def describe(self) -> dict:
        """The space as a space file writes it (also what identifies a study's space)."""
        return {"objective": self.objective.model_dump(), "seeds": list(self.seeds) if self.seeds else None,
                "sampler": self.sampler.model_dump(), **{p.key: p.spec() for p in self.params}}

    def check_against(self, config: str | Path, overrides: list[str]) -> None:
        """Every bound and choice, applied to ``config`` plus ``overrides`` (the others at their
        first value), gives a valid config: a typo in a key, or a value the config refuses,
        fails here, before any trial trains."""
        tuned = {p.key for p in self.params}
        clash = [o for o in overrides if o.partition("=")[0].strip() in tuned]
        if clash:
            raise SpaceError(f"{self.where}: the override(s) {clash} set keys the space tunes; leave them out "
                             "(or make them {fixed: value} in the space)")
        first = {p.key: p.probes()[0] for p in self.params}
        for p in self.params:
            for probe in p.probes():
                values = {**first, p.key: probe}
                try:
                    load_config(config, [*overrides, *self.overrides(values)])
                except ConfigError as e:
                    raise SpaceError(f"{self.where}: {format_override(p.key, probe)} does not give a valid config "
                                     f"({config}):\n{e}") from None


def load_space(path: str | Path) -> SearchSpace:
    """A space file, given as a path or as the name of a packaged space (``configs/tune/``)."""
    file = config_path(path, kind="tune", what="search space")
    return parse_space(read_yaml_mapping(file, "search space"), f"search space {file}", file)


def parse_space(tree: dict[str, Any], where: str = "search space", file: Path | None = None) -> SearchSpace:
    params = tuple(_param(key, spec, where) for key, spec in tree.items() if key not in RESERVED)
    if not any(p.kind != "fixed" for p in params):
        raise SpaceError(f"{where}: no key is searched (give at least one float, int or choice entry)")
    keys = [p.key for p in params]
    for a in keys:
        for b in keys:
            if b.startswith(a + "."):
                raise SpaceError(f"{where}: {a!r} and {b!r} overlap (one sets part of the other); keep one")
    return SearchSpace(params, parse_section(Objective, tree.get("objective"), "objective", where),
                       parse_seeds(tree.get("seeds"), where),
                       parse_section(SamplerConfig, tree.get("sampler"), "sampler", where), where, file)


def parse_seeds(seeds: Any, where: str) -> tuple[int, ...] | None:
    """A space's ``seeds``: None (the config's own seed) or a non-empty list of distinct integers."""
    if seeds is None:
        return None
    if (not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                            for s in seeds) or len(set(seeds)) != len(seeds)):
        raise SpaceError(f"{where}: seeds must be a non-empty list of distinct integers, got {seeds!r}")
    return tuple(seeds)


def parse_section(model, value: Any, name: str, where: str):
    """A space's ``objective`` or ``sampler`` mapping as its model (None: the defaults)."""
    if value is None:
        return model()
    if not isinstance(value, dict):
        raise SpaceError(f"{where}: {name} must be a mapping, got {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise SpaceError(format_validation_error(e, f"{where}: {name}")) from None


def _decimals(x: float) -> int:
    """Digits after the decimal point of ``x`` as written (``0.05`` -> 2, ``1.0e-4`` -> 4)."""
    text = format(x, ".15g")
    mantissa, _, exponent = text.partition("e")
    digits = len(mantissa.partition(".")[2])
    return max(digits - int(exponent or 0), 0)


def _number(x: Any, integer: bool) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    return isinstance(x, int) if integer else math.isfinite(x)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _param(key: Any, spec: Any, where: str) -> Param:
    """A config key's entry: the key checked, then its distribution."""
    here = f"{where}: {key}"
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise SpaceError(f"{where}: {key!r} is not a config key (dotted names such as train.dense_optimizer.lr), "
                         f"nor one of {', '.join(RESERVED)}")
    if key == "seed":
        raise SpaceError(f"{here}: seeds are not searched; list them under 'seeds:' (each trial trains every seed)")
    if key.split(".")[0] not in GROUPS:
        raise SpaceError(f"{here}: the tuner sets keys of the {', '.join(GROUPS)} sections only"
                         + (" (each trial has its own run directory)" if key == "run_dir" else "")
                         + f"; the space's own keys are {', '.join(RESERVED)}")
    return parse_distribution(key, spec, here)


def parse_distribution(key: str, spec: Any, here: str) -> Param:
    """One entry's distribution (``{float: ...}``, ``{int: ...}``, ``{choice: ...}`` or
    ``{fixed: ...}``) as the :class:`Param` of ``key``; errors name ``here``."""
    kinds = [k for k in KINDS if isinstance(spec, dict) and k in spec]
    if len(kinds) != 1:
        raise SpaceError(f"{here}: expected a mapping with exactly one of {', '.join(KINDS)} "
                         "(e.g. {float: [0.0001, 0.01], log: true}), got " + json.dumps(spec, default=str))
    kind = kinds[0]
    unknown = sorted(set(spec) - {kind, *KINDS[kind]})
    if unknown:
        raise SpaceError(f"{here}: unknown option(s) {unknown} for {kind}; expected {', '.join(KINDS[kind]) or 'none'}")
    if kind == "fixed":
        return Param(key, kind, value=spec["fixed"])
    if kind == "choice":
        choices = spec["choice"]
        if not isinstance(choices, list) or len(choices) < 2:
            raise SpaceError(f"{here}: choice must be a list of at least two values (one value: use fixed)")
        if len({json.dumps(c, sort_keys=True, default=str) for c in choices}) != len(choices):
            raise SpaceError(f"{here}: choice lists a value twice: {choices!r}")
        return Param(key, kind, choices=tuple(choices))
    integer = kind == "int"
    bounds, log, step = spec[kind], spec.get("log", False), spec.get("step")
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_number(b, integer) for b in bounds)):
        hint = ""
        if isinstance(bounds, list) and any(isinstance(b, str) and _looks_numeric(b) for b in bounds):
            hint = " (YAML reads 1e-4 as text: write 1.0e-4)"
        raise SpaceError(f"{here}: {kind} must be [low, high] with {'integer' if integer else 'finite number'} bounds, "
                         f"got {bounds!r}{hint}")
    low, high = bounds
    if not low < high:
        raise SpaceError(f"{here}: low {low} must be below high {high} (one value: use fixed)")
    if not isinstance(log, bool):
        raise SpaceError(f"{here}: log must be true or false, got {log!r}")
    if step is not None and (not _number(step, integer) or step <= 0):
        raise SpaceError(f"{here}: step must be a positive {'integer' if integer else 'number'}, got {step!r}")
    if log and low <= 0:
        raise SpaceError(f"{here}: a log scale needs low > 0, got {low}")
    if log and step is not None and (not integer or step != 1):
        raise SpaceError(f"{here}: log and step do not combine (a log scale has no fixed step)")
    if integer:
        step = None if step == 1 else step
    return Param(key, kind, low=float(low) if not integer else low, high=float(high) if not integer else high,
                 log=log, step=step)
