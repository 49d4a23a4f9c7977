"""The one YAML reader and the one validation-error formatter.

Experiment configs, schemas, benchmark suites and scaling specs are all YAML mappings read from
a file a user wrote; each failure (missing file, a binary or empty file, bad YAML, a list where a
mapping belongs, a key the reader does not know) is a :class:`YamlError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

__all__ = ["YamlError", "deep_merge", "format_validation_error", "parse_key_values", "read_yaml_mapping",
           "validation_messages"]


class YamlError(ValueError):
    """A YAML file a user gave cannot be used; the message names the file and why."""


def read_yaml_mapping(
    path: str | Path,
    what: str,
    keys: Iterable[str] | None = None,
    allow_empty: bool = False,
) -> dict[str, Any]:
    """The mapping in ``path``. ``what`` names the file's role in messages ("config",
    "schema", "suite"); ``keys``, when given, are the only top-level keys allowed (a typo must
    not silently drop part of a file); an empty file is an error unless ``allow_empty``."""
    path = Path(path)
    if not path.exists():
        raise YamlError(f"{what} file not found: {path}")
    if not path.is_file():
        raise YamlError(f"{what} {path} is not a file")
    data = path.read_bytes()
    if b"\0" in data:
        raise YamlError(f"{what} {path} is a binary file, not YAML")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise YamlError(f"{what} {path} is not valid YAML: {e}") from None
    if tree is None:
        if allow_empty:
            return {}
        raise YamlError(f"{what} {path} is empty")
    if not isinstance(tree, dict):
        raise YamlError(f"{what} {path} must hold a mapping, got {type(tree).__name__}")
    bad = [k for k in tree if not isinstance(k, str)]
    if bad:
        raise YamlError(f"{what} {path}: keys must be strings, got {bad[:5]}")
    if keys is not None:
        allowed = list(keys)
        unknown = sorted(set(tree) - set(allowed))
        if unknown:
            raise YamlError(f"{what} {path}: unknown key(s) {unknown}; expected {', '.join(allowed)}")
    return tree


def validation_messages(err: ValidationError) -> list[str]:
    """One ``where: what`` line per problem of a pydantic error (``train.batch_size: Input
    should be greater than or equal to 1``); our own validators' messages already name their
    field, so pydantic's ``Value error,`` prefix is dropped."""
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        out.append(f"{loc}: {msg}" if loc else msg)
    return out


def format_validation_error(err: ValidationError, where: str) -> str:
    """A pydantic error as one line per problem, under ``invalid <where>:``."""
    return "\n".join([f"invalid {where}:", *(f"  {m}" for m in validation_messages(err))])


def parse_key_values(items: Iterable[str], what: str = "option") -> dict[str, Any]:
    """``["a=1", "b=[1, 2]"]`` -> ``{"a": 1, "b": [1, 2]}``; values parsed as YAML, an empty
    value is None. Keys may be dotted (``train.epochs``); splitting them is the caller's job."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise YamlError(f"{what} {item!r} must look like key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise YamlError(f"{what} {item!r}: the value is not valid YAML ({e})") from None
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged onto ``base`` the way config layers stack: mappings key by key,
    anything else (lists included) replaced. Neither input is modified."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
