"""The base of every config section a user writes: unknown keys and booleans-as-numbers refused.

Pydantic alone would accept a typo'd key silently only if asked to, but it reads ``true`` as 1
for an integer and 1.0 for a float (``train.epochs: true`` would train one epoch). A config is
read from YAML and ``key=value`` overrides, where such a slip is easy, so a number given as a
boolean is an error naming the field. (Strict mode would also refuse ``lr: 1e-3``, which YAML 1.1
reads as a string, so it is not used.)
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

__all__ = ["StrictModel"]


def _admits(tp: Any, kinds: tuple[type, ...]) -> bool:
    """True if the annotation ``tp`` is, or has a union member / argument that is, one of ``kinds``."""
    if tp in kinds:
        return True
    return any(_admits(a, kinds) for a in typing.get_args(tp) if not isinstance(a, (str, int, float)))


class StrictModel(BaseModel):
    """Unknown keys are errors; a boolean where a number belongs is an error."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and _admits(annotation, (int, float)) and not _admits(annotation, (bool,)):
            raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
        return value
