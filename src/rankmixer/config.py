"""Typed experiment config, composed from parts: one YAML file (plus ``key=value`` overrides)
describes a run.

An experiment file names its parts and adds what is its own::

    defaults: [data/movielens, model/dcnv2, train/default]
    seed: 42
    model: {dropout: 0.2}          # merged over the part, key by key

Each part is a YAML file ``<group>/<name>.yaml`` holding that group's section (``data``,
``model`` or ``train``). Parts are looked up beside the experiment file first, then in the
configs shipped with the package, so ``rankmixer train -c movielens_dcnv2`` works anywhere and a
user's own parts override ours. Order of application: the parts in ``defaults`` order, then the
file's own keys, then the command line's overrides (``train.epochs=3``; ``model=rankmixer_tiny``
swaps in the part ``model/rankmixer_tiny``; ``model={name: lr}`` replaces the section).
A part may itself start from parts of its group (``defaults: data/movielens`` inside
``data/movielens_periods.yaml``). Benchmark suites give a model section as a part name or as
``{defaults: model/x, ...}`` (:func:`section`). Paths inside configs (``data.raw``,
``data.prepared_dir``) stay relative to the working directory.

Every section forbids unknown keys, so a typo (``train.bach_size``) is an error that names the
key instead of a silently ignored setting. The ``model`` section is checked against the config
class of the model it names (see ``models/registry.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from rankmixer.core.strict import StrictModel
from rankmixer.core.yamlio import YamlError, deep_merge, format_validation_error, parse_key_values, read_yaml_mapping
from rankmixer.data.config import DataConfig
from rankmixer.train.config import TrainConfig

__all__ = [
    "ConfigError", "ConfigNotFoundError", "ExperimentConfig", "GROUPS", "apply_overrides", "compose", "config_path",
    "dump_config", "load_config", "packaged_configs", "part_path", "section", "validate",
]

GROUPS = ("data", "model", "train")  # the sections a part can fill


class ConfigError(YamlError):
    """An experiment config (file, part or override) cannot be used; the message says where."""


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """A config named on the command line is neither a file nor a packaged config."""


class ExperimentConfig(StrictModel):
    seed: int = 42
    run_dir: str | None = None  # default runs/<dataset>-<model>-s<seed>
    data: DataConfig = DataConfig()
    # {name: <registered model>, ...that model's config fields}
    model: dict[str, Any] = Field(default_factory=lambda: {"name": "dcnv2"})
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _model_known(self) -> "ExperimentConfig":
        from rankmixer.models import registry

        params = dict(self.model)
        name = params.pop("name", None)
        if not name:
            raise ValueError("model.name is required")
        try:
            registry.parse_config(name, params)  # raises naming the bad key
        except KeyError as e:  # unknown model name; pydantic only reports ValueErrors
            raise ValueError(e.args[0]) from None
        return self

    @property
    def model_name(self) -> str:
        return self.model["name"]

    @property
    def model_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "name"}

    def resolved_run_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        return Path("runs") / f"{self.data.name}-{self.model_name}-s{self.seed}"


# ---- where configs live ---------------------------------------------------------------------


def packaged_configs() -> Path:
    """The configs shipped inside the package (parts, experiments, benchmark suites)."""
    return Path(str(resources.files("rankmixer") / "configs"))


def _with_suffix(name: str) -> str:
    return name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"


def config_path(name: str | Path, kind: str = "experiment", what: str | None = None) -> Path:
    """A config file given as a path, or by name among the packaged ones.

    ``kind`` is the packaged folder searched for a bare name: ``experiment`` (so
    ``movielens_dcnv2`` is ``configs/experiment/movielens_dcnv2.yaml``) or ``bench``. A path
    written as in a clone before the configs moved into the package (``configs/bench/peers.yaml``,
    ``configs/movielens_dcnv2.yaml``) finds the packaged file too. ``what`` names the file's role
    in the error (default: "<kind> config")."""
    path = Path(name)
    if path.is_file():
        return path
    root = packaged_configs()
    parts = path.parts
    candidates: list[Path] = []
    if len(parts) == 1:  # a bare name
        candidates = [root / kind / _with_suffix(parts[0])]
    elif parts and parts[0] == "configs":  # as in a clone: configs/bench/peers.yaml, configs/movielens_dcnv2.yaml
        rest = Path(*parts[1:-1], _with_suffix(parts[-1]))
        candidates = [root / rest, root / kind / rest]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in (root / kind).glob("*.yaml"))
    raise ConfigNotFoundError(f"{what or kind + ' config'} not found: {name} (not a file, nor a packaged {kind} "
                              f"config: {', '.join(known)})")


def part_path(ref: str, search: list[Path]) -> Path:
    """The file of a part reference ``group/name``, looked up in ``search`` then in the package."""
    group, _, name = ref.partition("/")
    if group not in GROUPS or not name:
        raise ConfigError(f"part {ref!r} must be <group>/<name> with group one of {', '.join(GROUPS)}")
    for root in [*search, packaged_configs()]:
        candidate = root / group / _with_suffix(name)
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in (packaged_configs() / group).glob("*.yaml"))
    raise ConfigError(f"config part {ref!r} not found (packaged {group} parts: {', '.join(known)})")


# ---- composition ----------------------------------------------------------------------------


def with_defaults(ref: str, read: Callable[[str], dict[str, Any]], chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The mapping ``read(ref)`` over the ones it names in ``defaults`` (a name or a list of
    names, each read the same way and merged in order, then its own keys): how a part starts
    from other parts of its group (``defaults: data/behaviour_hopping``) and a search space from
    another space. A name that reaches itself again is an error naming the cycle."""
    if ref in chain:
        raise ConfigError(f"configs name each other in a cycle: {' -> '.join((*chain, ref))}")
    own = dict(read(ref))
    refs = own.pop("defaults", None) or []
    refs = [refs] if isinstance(refs, str) else refs
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise ConfigError(f"{ref}: 'defaults' must be a name or a list of names, got {refs!r}")
    base: dict[str, Any] = {}
    for base_ref in refs:
        base = deep_merge(base, with_defaults(base_ref, read, (*chain, ref)))
    return deep_merge(base, own)


def _read_part(ref: str, search: list[Path]) -> dict[str, Any]:
    """A part's section, over the parts of its own group it names in ``defaults``."""
    group = ref.partition("/")[0]

    def read(name: str) -> dict[str, Any]:
        if name.partition("/")[0] != group:
            raise ConfigError(f"config part {ref}: 'defaults' must name parts of its own group ({group}/<name>), "
                              f"got {name!r}")
        return read_yaml_mapping(part_path(name, search), f"config part {name}", allow_empty=True)

    return with_defaults(ref, read)


def compose(path: str | Path, search: list[Path] | None = None) -> dict[str, Any]:
    """The raw tree of an experiment file with its ``defaults`` parts merged in."""
    path = Path(path)
    tree = read_yaml_mapping(path, "config")
    roots = [*(search or []), path.parent]
    refs = tree.pop("defaults", None) or []
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise ConfigError(f"config {path}: 'defaults' must be a list of part names such as data/movielens")
    base: dict[str, Any] = {}
    for ref in refs:
        group = ref.partition("/")[0]
        base = deep_merge(base, {group: _read_part(ref, roots)})
    return deep_merge(base, tree)


def section(group: str, entry: str | dict[str, Any], search: list[Path] | None = None) -> dict[str, Any]:
    """One section (``model``, ``data`` or ``train``) given the way benchmark suites give it: a
    part name (``model/dcnv2`` or ``dcnv2``), or a mapping that may name its base parts in
    ``defaults`` (``{defaults: model/rankmixer, dropout: 0.0}``: the part, then these keys merged
    over it). Parts are looked up in ``search`` then in the package."""
    if isinstance(entry, str):
        ref = entry if "/" in entry else f"{group}/{entry}"
        if ref.partition("/")[0] != group:
            raise ConfigError(f"{entry!r} is not a {group} part (expected {group}/<name>)")
        return _read_part(ref, search or [])
    if not isinstance(entry, dict):
        raise ConfigError(f"a {group} section must be a part name or a mapping, got {type(entry).__name__}")
    inline = f"a {group} section"
    return with_defaults(inline, lambda name: entry if name == inline else section(group, name, search))


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: list[str], search: list[Path] | None = None) -> dict:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (``1e-3``, ``[1, 2]``,
    ``null``). ``group=name`` with a plain name swaps in the part ``group/name``."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.epochs=3)")
        ((key, value),) = parse_key_values([item], "override").items()
        if key in GROUPS and isinstance(value, str):
            value = _read_part(f"{key}/{value}", search or [])
        _set_path(tree, key, value)
    return tree


def validate(tree: dict, where: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """An experiment config from a file (a path or a packaged name; see :func:`config_path`)
    with ``overrides`` applied; None starts from the parts' defaults alone (overrides only)."""
    tree: dict = {}
    where, search = "config", []
    if path is not None:
        file = config_path(path)
        where, search = f"config {file}", [file.parent]
        tree = compose(file)
    apply_overrides(tree, overrides or [], search)
    return validate(tree, where)


def dump_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """The resolved config (parts merged, overrides applied): what a run directory keeps."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
