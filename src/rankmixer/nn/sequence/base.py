"""What every behaviour-sequence encoder takes and gives, and the registry that builds them.

A *behaviour* (``Batch.behaviours[name]``, ids ``[B, L, F]``) is embedded by
:meth:`~rankmixer.nn.embedding.FeatureEmbedding.behaviours` into ``[B, L, F, d]`` plus a mask.
An encoder turns one behaviour, seen from one candidate, into a few vectors:

* :class:`BehaviourSpec` (built once from the feature map): the behaviour's name, its number of
  per-position fields ``F``, ``max_len``, and ``keys``: the positions (in ``F``) of the fields
  that share a table with a field of the row (item, category, ...), matched with ``query``, the
  positions of those fields among the row's fields. The candidate's vectors of those fields are
  the query of target attention.
* :class:`BehaviourInput` (per batch): the embedded history, its mask, the candidate's query
  vectors ``[B, K, d]`` (``K = len(keys)``, possibly 0) and the row's context, every field
  vector ``[B, N, d]`` (what InterFormer-style encoders summarise the non-sequence side with).
* An encoder is an ``nn.Module`` built as ``cls(cfg, dim, spec, num_context)`` with attributes
  ``num_outputs`` and ``out_dim``; ``forward(x: BehaviourInput) -> EncoderOutput``: ``tokens``
  ``[B, num_outputs, out_dim]`` and an optional auxiliary loss (DIEN's) the model adds to its
  :class:`~rankmixer.models.base.ModelOutput`.

Encoders register under a name with their typed config (:func:`register_encoder`); a model that
takes "any sequence module" (RankMixer's ``sequence_module``) builds one with
:func:`build_encoder` from a name and an options mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rankmixer.core.strict import StrictModel
from rankmixer.data.feature_map import FeatureMap
from rankmixer.data.schema import FIRST_ID

__all__ = [
    "BehaviourEncoders",
    "BehaviourInput",
    "BehaviourSpec",
    "EncoderOutput",
    "behaviour_inputs",
    "behaviour_specs",
    "build_encoder",
    "encoder_names",
    "register_encoder",
]


@dataclass(frozen=True)
class BehaviourSpec:
    """One behaviour as an encoder sees it (see the module docstring)."""

    name: str
    num_fields: int
    max_len: int
    keys: tuple[int, ...]  # behaviour field positions that share a table with a row field
    query: tuple[int, ...]  # those row fields' positions among the row's fields
    session: int | None = None  # position of the derived session field (data.schema.SessionSplit)
    max_sessions: int = 0  # its cap on session indices (0 without one)


@dataclass
class BehaviourInput:
    """One batch of one behaviour: ``hist [B, L, F, d]`` (pad positions zero vectors), ``mask
    [B, L]`` (True where a behaviour sits; real positions first), ``query [B, K, d]`` (the
    candidate's vectors matched with ``spec.keys``) and ``context [B, N, d]`` (every row field)."""

    hist: Tensor
    mask: Tensor
    query: Tensor
    context: Tensor
    # [B, L] each position's session index from the newest (-1 at pads), where the behaviour
    # has a session field and the caller passed the ids; None otherwise.
    sessions: Tensor | None = None

    @property
    def lengths(self) -> Tensor:
        """``[B]`` number of real positions per row."""
        return self.mask.sum(dim=1)


@dataclass
class EncoderOutput:
    tokens: Tensor  # [B, num_outputs, out_dim]
    aux_loss: Tensor | None = None


def behaviour_specs(feature_map: FeatureMap, field_names: Sequence[str]) -> list[BehaviourSpec]:
    """A spec per behaviour of ``feature_map``, ``keys``/``query`` matched through each field's
    ``share_with`` against ``field_names`` (the order of ``EmbeddedFeatures.fields``)."""
    index = {n: i for i, n in enumerate(field_names)}
    specs = []
    for f in feature_map.behaviours:
        shared = [(k, index[b.share_with]) for k, b in enumerate(f.fields) if b.share_with in index]
        session = next((k for k, b in enumerate(f.fields) if "sessions" in b.stats), None)
        specs.append(BehaviourSpec(
            name=f.name, num_fields=len(f.fields), max_len=f.max_len,
            keys=tuple(k for k, _ in shared), query=tuple(q for _, q in shared), session=session,
            max_sessions=f.fields[session].stats["sessions"]["max_sessions"] if session is not None else 0,
        ))
    return specs


def behaviour_inputs(
    embedded: Mapping[str, tuple[Tensor, Tensor]], fields: Tensor, specs: Sequence[BehaviourSpec],
    ids: Mapping[str, Tensor] | None = None,
) -> dict[str, BehaviourInput]:
    """name -> :class:`BehaviourInput` from ``FeatureEmbedding.behaviours(batch)`` and the row's
    field vectors ``fields [B, N, d]``; ``ids`` (``Batch.behaviours``) gives the session indices
    of behaviours with a session field."""
    out = {}
    for spec in specs:
        hist, mask = embedded[spec.name]
        sessions = None
        if ids is not None and spec.session is not None:
            sessions = torch.where(mask, ids[spec.name][:, :, spec.session] - FIRST_ID, -1)
        out[spec.name] = BehaviourInput(hist=hist, mask=mask, query=fields[:, list(spec.query)], context=fields,
                                        sessions=sessions)
    return out


_ENCODERS: dict[str, tuple[type[StrictModel], type[nn.Module]]] = {}


def register_encoder(name: str, config: type[StrictModel]) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register a behaviour encoder under ``name`` with its config class."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _ENCODERS:
            raise ValueError(f"sequence encoder {name!r} registered twice")
        _ENCODERS[name] = (config, cls)
        return cls

    return wrap


def encoder_names() -> list[str]:
    return sorted(_ENCODERS)


def build_encoder(
    name: str, options: Mapping[str, Any] | StrictModel | None, dim: int, spec: BehaviourSpec, num_context: int
) -> nn.Module:
    """The encoder registered as ``name``, its config validated from ``options`` (unknown keys
    are errors naming the encoder)."""
    if name not in _ENCODERS:
        raise ValueError(f"unknown sequence module {name!r}; known: {encoder_names()}")
    config_cls, cls = _ENCODERS[name]
    if isinstance(options, config_cls):
        cfg = options
    else:
        try:
            cfg = config_cls.model_validate(dict(options or {}))
        except Exception as e:
            raise ValueError(f"sequence module {name!r}: bad options: {e}") from e
    return cls(cfg, dim, spec, num_context)


class BehaviourEncoders(nn.ModuleDict):
    """One encoder (registered ``name``, config ``options``) per behaviour of ``feature_map``,
    keyed by the behaviour's name, with their ``specs`` (in the feature map's order)."""

    def __init__(self, feature_map: FeatureMap, field_names: Sequence[str], dim: int, name: str,
                 options: Mapping[str, Any] | StrictModel | None) -> None:
        specs = behaviour_specs(feature_map, field_names)
        super().__init__({s.name: build_encoder(name, options, dim, s, len(field_names)) for s in specs})
        self.specs = specs

    def encode(self, embedded: Mapping[str, tuple[Tensor, Tensor]], fields: Tensor,
               ids: Mapping[str, Tensor] | None = None) -> list[EncoderOutput]:
        """Every behaviour through its encoder, in ``specs`` order: ``embedded`` is
        ``FeatureEmbedding.behaviours(batch)``, ``fields [B, N, d]`` the row's field vectors,
        ``ids`` ``Batch.behaviours`` (for session indices)."""
        inputs = behaviour_inputs(embedded, fields, self.specs, ids)
        return [self[s.name](inputs[s.name]) for s in self.specs]
