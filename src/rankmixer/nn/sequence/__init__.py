"""Behaviour-sequence encoders: one behaviour ``[B, L, F, d]`` seen from the candidate -> a few
vectors (``base.py`` has the interface and the registry; one file per encoder family)."""

from rankmixer.nn.sequence.base import (
    BehaviourEncoders,
    BehaviourInput,
    BehaviourSpec,
    EncoderOutput,
    behaviour_inputs,
    behaviour_specs,
    build_encoder,
    encoder_names,
    register_encoder,
)
from rankmixer.nn.sequence import pooling  # noqa: F401  (registers mean, din)
from rankmixer.nn.sequence import dien  # noqa: F401  (registers dien)
from rankmixer.nn.sequence import pyramid  # noqa: F401  (registers pyramid)
from rankmixer.nn.sequence import interformer  # noqa: F401  (registers interformer)
from rankmixer.nn.sequence import mos  # noqa: F401  (registers mos; after the backbones it wraps)
from rankmixer.nn.sequence import racp  # noqa: F401  (registers racp)

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
