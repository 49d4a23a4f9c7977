"""The one place that maps a model name (as written in YAML) to its config and module classes.

A model file registers itself with ``@register("name", ConfigClass)``; ``build_model`` validates
the YAML mapping against that config class and builds the module from the feature map.

A *variant* is a name for a registered model with preset config values:
``register_variant("rankmixer-100m", "rankmixer", {"hidden_dim": 768, ...}, summary)``. Its config
is the base model's config class validated on ``defaults`` deep-merged with the caller's
overrides (a nested mapping such as ``moe`` is merged key by key; anything else is replaced), so
``build_model("rankmixer-100m", fm, {"dropout": 0.1})`` is rankmixer with the 100m sizes and
dropout 0.1. ``available()`` lists variants beside the models.

A model that works on one kind of data only says so with ``needs`` (e.g. ``planted``, the
synthetic sets' model-class oracle, needs a synthetic set's planted form); every other model
builds from any feature map.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import Field, ValidationError
from torch import nn

from rankmixer.core.strict import StrictModel
from rankmixer.core.yamlio import deep_merge, validation_messages
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig

# Model modules imported on first use of the registry, so each file registers itself. A dotted
# name is a full module path (the peers: their optional library is imported only when built).
_MODEL_MODULES = ["lr", "dlrm", "deepfm", "dcnv2", "rankmixer", "concat_mlp",
                  "autoint", "hiformer", "dhen", "wukong", "moe", "finalmlp", "din", "dien", "pyramid_mixer",
                  "interformer", "mos", "racp", "searched", "supernet", "fuxictr", "planted", "exfm", "cetnet"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config_cls: type[ModelConfig]
    model_cls: type[nn.Module]
    summary: str
    # Variants only: the registered model this one presets, and the preset config values.
    base: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    # What the model needs of the data beyond a feature map (None: any feature map will do).
    needs: str | None = None


_REGISTRY: dict[str, ModelEntry] = {}
_VARIANTS: dict[str, ModelEntry] = {}
_loaded = False


def register(name: str, config_cls: type[ModelConfig],
             needs: str | None = None) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if (name in _REGISTRY and _REGISTRY[name].model_cls is not cls) or name in _VARIANTS:
            raise ValueError(f"model name {name!r} registered twice")
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        _REGISTRY[name] = ModelEntry(name, config_cls, cls, summary, needs=needs)
        return cls

    return deco


def register_variant(name: str, base_name: str, defaults: dict[str, Any], summary: str) -> None:
    """Register ``name`` as ``base_name`` with preset config ``defaults`` (see the module
    docstring). The base model must be registered already; the defaults are validated when the
    variant is used (so a variant may preset fields whose validation imports optional modules)."""
    if name in _REGISTRY:
        raise ValueError(f"variant name {name!r} is a registered model")
    if base_name not in _REGISTRY:
        raise KeyError(f"variant {name!r}: base model {base_name!r} is not registered")
    base = _REGISTRY[base_name]
    entry = ModelEntry(name, base.config_cls, base.model_cls, summary, base=base_name, defaults=dict(defaults),
                       needs=base.needs)
    if name in _VARIANTS and _VARIANTS[name] != entry:
        raise ValueError(f"variant {name!r} registered twice")
    _VARIANTS[name] = entry


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for mod in _MODEL_MODULES:
            importlib.import_module(mod if "." in mod else f"rankmixer.models.{mod}")
        _loaded = True


def available(general: bool = False) -> dict[str, ModelEntry]:
    """Every registered model and variant by name; ``general``: only those that build from any
    feature map (no ``needs``)."""
    _load_all()
    return dict(sorted((n, e) for n, e in {**_REGISTRY, **_VARIANTS}.items() if not (general and e.needs)))


def get(name: str) -> ModelEntry:
    models = available()
    if name not in models:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(models)}")
    return models[name]


def parse_config(name: str, params: dict) -> ModelConfig:
    entry = get(name)
    try:
        return entry.config_cls.model_validate(deep_merge(entry.defaults, params))
    except ValidationError as e:
        raise ValueError(f"invalid config for model {name!r}: " + "; ".join(validation_messages(e))) from None


class SubModelSpec(StrictModel):
    """A model inside another (an ensemble's member, a student's backbone): a registered model
    (or variant) and its config values."""

    name: str = Field(description="registered model name, e.g. dcnv2")
    params: dict[str, Any] = Field(default={}, description="its config (embedding_dim defaults to the outer model's)")

    def parse(self, embedding_dim: int, key: str, outer: str) -> ModelConfig:
        """The validated config, with the outer model's ``embedding_dim`` unless ``params`` set
        one; errors name ``key`` (e.g. ``members[1]``). A model of the ``outer`` kind (or one of
        its variants) is refused: it would nest itself."""
        if self.name == outer or (self.name in available() and get(self.name).base == outer):
            raise ValueError(f"{key}.name: a {outer} model cannot hold another {outer}")
        try:
            return parse_config(self.name, {"embedding_dim": embedding_dim, **self.params})
        except KeyError as e:
            raise ValueError(f"{key}.name: {e.args[0]}") from None
        except ValueError as e:
            raise ValueError(f"{key}.params: {e}") from None


def build_model(name: str, feature_map: FeatureMap, params: dict | ModelConfig | None = None) -> nn.Module:
    cfg = params if isinstance(params, ModelConfig) else parse_config(name, params or {})
    return get(name).model_cls(feature_map, cfg)
