"""Config sections refuse unknown keys and booleans given for numbers, naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rankmixer.core.strict import StrictModel
from rankmixer.core.yamlio import validation_messages


class Section(StrictModel):
    count: int = 1
    rate: float = 0.5
    maybe: int | None = None
    flag: bool = False
    either: int | bool = 0


@pytest.mark.parametrize("key", ["count", "rate", "maybe"])
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_a_number(key, value):
    with pytest.raises(ValidationError) as e:
        Section.model_validate({key: value})
    assert validation_messages(e.value) == [f"{key}: expected a number, got the boolean {str(value).lower()}"]


def test_numbers_booleans_and_unions_with_bool_pass():
    s = Section.model_validate({"count": 3, "rate": 2, "maybe": None, "flag": True, "either": True})
    assert (s.count, s.rate, s.maybe, s.flag, s.either) == (3, 2.0, None, True, True)


def test_unknown_keys_are_refused():
    with pytest.raises(ValidationError) as e:
        Section.model_validate({"cuont": 3})
    assert validation_messages(e.value)[0].startswith("cuont: Extra inputs are not permitted")
