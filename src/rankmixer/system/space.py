"""The co-design space: which system and algorithm settings a training job can take.

A *setting* maps every knob to one of its choices. Each knob has a fixed meaning (how it reaches
the run, :data:`KNOBS`); a space file (``configs/system/*.yaml``) names the base experiment, the
choices of each knob and the default setting (what ``rankmixer train`` does untuned). Knobs:

* ``model_size``: named groups of model overrides (an algorithm setting: the predictor learns
  across sizes, the searcher keeps the user's size fixed);
* ``batch_size``, ``precision``, ``threads`` (``all`` = every core), ``workers`` (DataLoader
  processes), ``optimizer_impl`` (fused / foreach / per-tensor loop), ``ffn_impl`` (per-token
  FFN implementation): config overrides;
* ``allocator``: the process's memory allocator, set through its environment (``glibc``, the
  system default; ``glibc-tuned``, glibc with mmap and trim thresholds raised so that large
  tensors are reused instead of returned to the kernel every step; ``jemalloc`` / ``tcmalloc``
  where the library is installed);
* ``compile``: ``none`` or a ``torch.compile`` mode for the training forward.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rankmixer.config import config_path

__all__ = ["KNOBS", "SPACE_DIR", "Setting", "SystemSpace", "load_system_space", "setting_key"]

SPACE_DIR = Path(__file__).resolve().parent.parent / "configs" / "system"
# knob -> the config key it overrides (None: applied by the worker: environment or compile).
KNOBS: dict[str, str | None] = {
    "model_size": None, "batch_size": "train.batch_size", "precision": "train.precision",
    "threads": "train.threads", "workers": "data.num_workers", "optimizer_impl": "train.dense_optimizer.impl",
    "ffn_impl": "model.ffn_impl", "allocator": None, "compile": None,
}
ALLOCATORS = ("glibc", "glibc-tuned", "jemalloc", "tcmalloc")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune-no-cudagraphs")

Setting = dict[str, Any]


class SpaceFileError(ValueError):
    """A space file that cannot be used; the message names the file and the key."""


def setting_key(setting: Setting) -> str:
    """A stable text id of a setting (knobs in :data:`KNOBS` order)."""
    return ",".join(f"{k}={setting[k]}" for k in KNOBS if k in setting)


@dataclass(frozen=True)
class SystemSpace:
    """Knob choices, the base experiment and the default setting (all knobs but ``model_size``)."""

    base: str
    base_overrides: tuple[str, ...]
    choices: dict[str, tuple]
    sizes: dict[str, dict[str, Any]]  # model_size name -> model overrides
    default: Setting

    def size(self) -> int:
        n = 1
        for c in self.choices.values():
            n *= len(c)
        return n

    def grid(self, fixed: Setting | None = None) -> Iterator[Setting]:
        """Every setting, in a fixed order; ``fixed`` pins knobs to one value."""
        fixed = fixed or {}
        names = list(self.choices)
        pools = [(fixed[n],) if n in fixed else self.choices[n] for n in names]
        for values in itertools.product(*pools):
            yield dict(zip(names, values))

    def sample(self, rng: random.Random, fixed: Setting | None = None) -> Setting:
        """One setting drawn uniformly (knob by knob) with ``fixed`` knobs pinned."""
        fixed = fixed or {}
        return {n: fixed[n] if n in fixed else rng.choice(c) for n, c in self.choices.items()}

    def draw(self, n: int, seed: int, fixed: Setting | None = None) -> list[Setting]:
        """``n`` distinct settings drawn uniformly, a fixed list for a seed (fewer if the space,
        with ``fixed`` pinned, has fewer)."""
        rng, out, seen = random.Random(seed), [], set()
        limit = sum(1 for _ in self.grid(fixed))
        while len(out) < min(n, limit):
            s = self.sample(rng, fixed)
            if setting_key(s) not in seen:
                seen.add(setting_key(s))
                out.append(s)
        return out

    def default_setting(self, model_size: str) -> Setting:
        return {"model_size": self.check_value("model_size", model_size), **self.default}

    def check_value(self, knob: str, value: Any) -> Any:
        if knob not in self.choices:
            raise SpaceFileError(f"unknown knob {knob!r}; known: {', '.join(self.choices)}")
        if value not in self.choices[knob] and not (knob in self.default and value == self.default[knob]):
            raise SpaceFileError(f"{knob}={value!r} is not a choice of this space: {list(self.choices[knob])}")
        return value

    def parse_fixed(self, items: list[str]) -> Setting:
        """``knob=value`` strings (values read as YAML: ``batch_size=512`` is a number)."""
        out: Setting = {}
        for item in items:
            if "=" not in item:
                raise SpaceFileError(f"expected knob=value, got {item!r}")
            k, v = item.split("=", 1)
            out[k.strip()] = self.check_value(k.strip(), yaml.safe_load(v))
        return out

    def overrides(self, setting: Setting) -> list[str]:
        """The experiment overrides of ``setting`` (the knobs that are config keys)."""
        out = list(self.base_overrides)
        out += [f"{k}={v}" for k, v in self.sizes[setting["model_size"]].items()]
        for knob, key in KNOBS.items():
            if key is not None:
                out.append(f"{key}={resolve_threads(setting[knob]) if knob == 'threads' else setting[knob]}")
        return out


def resolve_threads(value: Any) -> int:
    """``all`` -> this machine's core count; a number as given."""
    return (os.cpu_count() or 1) if value == "all" else int(value)


def load_system_space(path: str | Path = "cpu") -> SystemSpace:
    """A space file: a path, or a name under ``configs/system``."""
    file = Path(path)
    if not file.is_file():
        file = SPACE_DIR / f"{path}.yaml"
    if not file.is_file():
        known = ", ".join(sorted(p.stem for p in SPACE_DIR.glob("*.yaml")))
        raise SpaceFileError(f"no system space {path!r} (a file, or one of: {known})")
    tree = yaml.safe_load(file.read_text()) or {}
    return parse_system_space(tree, str(file))


def parse_system_space(tree: dict, where: str = "system space") -> SystemSpace:
    unknown = set(tree) - {"base", "base_overrides", "knobs", "default"}
    if unknown:
        raise SpaceFileError(f"{where}: unknown keys {sorted(unknown)}")
    if "base" not in tree:
        raise SpaceFileError(f"{where}: 'base' (an experiment config) is missing")
    config_path(tree["base"])  # an unknown base config fails here, naming it
    knobs = tree.get("knobs") or {}
    missing = [k for k in KNOBS if k not in knobs]
    extra = [k for k in knobs if k not in KNOBS]
    if missing or extra:
        raise SpaceFileError(f"{where}: knobs must be exactly {list(KNOBS)}"
                             + (f"; missing {missing}" if missing else "") + (f"; unknown {extra}" if extra else ""))
    sizes = knobs["model_size"]
    if not isinstance(sizes, dict) or not sizes or not all(isinstance(v, dict) for v in sizes.values()):
        raise SpaceFileError(f"{where}: knobs.model_size maps size names to model overrides")
    choices: dict[str, tuple] = {"model_size": tuple(sizes)}
    for k in KNOBS:
        if k == "model_size":
            continue
        values = knobs[k]
        if not isinstance(values, list) or not values or len(set(map(str, values))) != len(values):
            raise SpaceFileError(f"{where}: knobs.{k} must be a non-empty list of distinct choices, got {values!r}")
        choices[k] = tuple(values)
    for a in choices["allocator"]:
        if a not in ALLOCATORS:
            raise SpaceFileError(f"{where}: knobs.allocator: unknown allocator {a!r}; known: {', '.join(ALLOCATORS)}")
    for m in choices["compile"]:
        if m not in COMPILE_MODES:
            raise SpaceFileError(f"{where}: knobs.compile: unknown mode {m!r}; known: {', '.join(COMPILE_MODES)}")
    for t in choices["threads"]:
        if t != "all" and not (isinstance(t, int) and not isinstance(t, bool) and t >= 1):
            raise SpaceFileError(f"{where}: knobs.threads: {t!r} is neither a positive integer nor 'all'")
    default = dict(tree.get("default") or {})
    want = [k for k in KNOBS if k != "model_size"]
    if sorted(default) != sorted(want):
        raise SpaceFileError(f"{where}: default must set exactly {want}, got {sorted(default)}")
    return SystemSpace(base=str(tree["base"]), base_overrides=tuple(tree.get("base_overrides") or ()),
                       choices=choices, sizes={k: dict(v) for k, v in sizes.items()}, default=default)
