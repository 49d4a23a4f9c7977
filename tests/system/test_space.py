"""The co-design space file: parsing, errors naming the key, enumeration and draws."""

from __future__ import annotations

import math

import pytest
import yaml

from rankmixer.system.space import (
    KNOBS, SPACE_DIR, SpaceFileError, load_system_space, parse_system_space, resolve_threads, setting_key,
)


def _tree() -> dict:
    return yaml.safe_load((SPACE_DIR / "cpu.yaml").read_text())


def test_packaged_space_size_and_grid_agree():
    sp = load_system_space("cpu")
    grid = list(sp.grid())
    assert len(grid) == sp.size() == math.prod(len(c) for c in sp.choices.values())
    assert len({setting_key(s) for s in grid}) == len(grid)
    fixed = list(sp.grid({"model_size": "large", "precision": "bf16"}))
    assert len(fixed) == sp.size() // (len(sp.choices["model_size"]) * len(sp.choices["precision"]))
    assert all(s["model_size"] == "large" and s["precision"] == "bf16" for s in fixed)


def test_draw_is_distinct_and_fixed_for_a_seed():
    sp = load_system_space("cpu")
    a, b, c = sp.draw(50, 3), sp.draw(50, 3), sp.draw(50, 4)
    assert a == b and a != c
    assert len({setting_key(s) for s in a}) == 50
    # asking for more than the pinned space holds gives all of it, once each
    small = sp.draw(10_000, 0, {k: sp.choices[k][0] for k in sp.choices if k not in ("batch_size", "threads")})
    assert len(small) == len(sp.choices["batch_size"]) * len(sp.choices["threads"])


def test_overrides_carry_every_config_knob():
    sp = load_system_space("cpu")
    s = sp.default_setting("medium")
    ov = sp.overrides(s)
    for knob, key in KNOBS.items():
        if key is not None:
            value = resolve_threads(s[knob]) if knob == "threads" else s[knob]
            assert f"{key}={value}" in ov
    assert "model.hidden_dim=128" in ov and "data=synthetic_100k" in ov


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["knobs"].pop("allocator"), "missing ['allocator']"),
    (lambda t: t["knobs"].__setitem__("color", ["red"]), "unknown ['color']"),
    (lambda t: t["knobs"].__setitem__("allocator", ["glibc", "hoard"]), "unknown allocator 'hoard'"),
    (lambda t: t["knobs"].__setitem__("threads", [0, "all"]), "knobs.threads: 0"),
    (lambda t: t["knobs"].__setitem__("batch_size", []), "knobs.batch_size must be a non-empty list"),
    (lambda t: t["knobs"].__setitem__("compile", ["fast"]), "unknown mode 'fast'"),
    (lambda t: t["default"].pop("workers"), "default must set exactly"),
    (lambda t: t.__setitem__("base", "no_such_experiment"), "no_such_experiment"),
    (lambda t: t.__setitem__("colour", 1), "unknown keys ['colour']"),
])
def test_bad_space_files_name_the_key(edit, message):
    tree = _tree()
    edit(tree)
    with pytest.raises(Exception, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_system_space(tree, "test.yaml")


def test_fixed_values_are_checked():
    sp = load_system_space("cpu")
    assert sp.parse_fixed(["batch_size=512", "model_size=small"]) == {"batch_size": 512, "model_size": "small"}
    with pytest.raises(SpaceFileError, match="batch_size=513 is not a choice"):
        sp.parse_fixed(["batch_size=513"])
    with pytest.raises(SpaceFileError, match="unknown knob 'gpus'"):
        sp.parse_fixed(["gpus=2"])
    with pytest.raises(SpaceFileError, match="expected knob=value"):
        sp.parse_fixed(["large"])
    with pytest.raises(SpaceFileError, match="no system space 'nope'"):
        load_system_space("nope")
