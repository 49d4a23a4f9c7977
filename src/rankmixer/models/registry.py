"""The one place that maps a model name (as written in YAML) to its config and module classes.

A model file registers itself with ``@register("name", ConfigClass)``; ``build_model`` validates
the YAML mapping against that config class and builds the module from the feature map.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from pydantic import ValidationError
from torch import nn

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig

# Model modules imported on first use of the registry, so each file registers itself.
_MODEL_MODULES = ["lr", "dlrm", "deepfm", "dcnv2"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config_cls: type[ModelConfig]
    model_cls: type[nn.Module]
    summary: str


_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False


def register(name: str, config_cls: type[ModelConfig]) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].model_cls is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        _REGISTRY[name] = ModelEntry(name, config_cls, cls, summary)
        return cls

    return deco


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for mod in _MODEL_MODULES:
            importlib.import_module(f"rankmixer.models.{mod}")
        _loaded = True


def available() -> dict[str, ModelEntry]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> ModelEntry:
    models = available()
    if name not in models:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(models)}")
    return models[name]


def parse_config(name: str, params: dict) -> ModelConfig:
    entry = get(name)
    try:
        return entry.config_cls.model_validate(params)
    except ValidationError as e:
        msgs = [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ValueError(f"invalid config for model {name!r}: " + "; ".join(msgs)) from e


def build_model(name: str, feature_map: FeatureMap, params: dict | ModelConfig | None = None) -> nn.Module:
    cfg = params if isinstance(params, ModelConfig) else parse_config(name, params or {})
    return get(name).model_cls(feature_map, cfg)
