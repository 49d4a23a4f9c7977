"""The declarative architecture search space: which blocks, how many, their sizes, their inputs.

A space file (YAML; packaged ones in ``configs/search/``) says::

    objective: {metric: auc}          # as a tuning space: validation metric, its direction
    seeds: [0]                        # each trial trains once per seed
    sampler: {name: tpe, seed: 0}     # tpe or random (`rankmixer search --strategy` replaces it)
    model: {embedding_dim: 16}        # the searched model's other keys, the same in every trial
    blocks: {int: [1, 4]}             # how many blocks
    max_inputs: 2                     # each block reads 1 .. max_inputs of emb and the earlier blocks
    types:                            # the block types that may be drawn, and their sizes
      mlp: {width: {int: [32, 512], log: true}, depth: {int: [1, 3]}}
      cross: {depth: {int: [1, 4]}, rank: {choice: [null, 16]}}
      attention: {head_width: {choice: [8, 16]}, heads: {choice: [1, 2]}}
      dot: {}

Sizes are written as tuning-space entries (``{int: ...}``, ``{float: ...}``, ``{choice: ...}``,
``{fixed: ...}``). Each type's keys are the block's parameters (rankmixer.models.searched),
except that attention takes ``head_width`` and ``heads`` (width = their product) and
rankmixer ``tokens`` and ``token_width`` (width = their product), so every draw divides
evenly. A parameter left out takes the block's default; the ones a block cannot do without
(mlp, compress: width; attention: head_width; rankmixer: tokens, token_width) must be given.

A trial draws, define-by-run: the number of blocks; for block i its type (``b{i}.type``), its
sizes (``b{i}.{type}.{key}``), how many inputs (``b{i}.inputs``) and each input
(``b{i}.in{s}``, one of ``emb`` and the blocks before it; repeats collapse). A dot or fm block
whose inputs make a single entity (a vector, say) also reads ``emb``: a product needs a pair. What
it draws is one ``searched`` model section, the trial's ``model=...`` override; a drawn
architecture always builds (the model's combination rules make any inputs fit).

The class offers the methods of :class:`rankmixer.tune.SearchSpace`, so a search runs as a
tuning study (storage, resume, retries, report).

A space may start from another: ``defaults: default``, then only what it changes.

The ``supernet`` section (optional; :func:`parse_supernet`, docs/search.md) gives the one-shot
strategies their supernet (``rankmixer.models.supernet``) over the same space: its choice blocks,
set size, cost weight and candidates, each candidate inside its type's range under ``types``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError

from rankmixer.config import ConfigError, config_path, load_config, with_defaults
from rankmixer.core.yamlio import format_validation_error, read_yaml_mapping
from rankmixer.models.searched import (BLOCK_PARAMS, SOURCE, BlockSpec, SearchedConfig, describe_blocks,
                                       output_entities)
from rankmixer.models.supernet import ZERO, SupernetConfig
from rankmixer.search.folder import model_overrides
from rankmixer.tune.space import (Objective, Param, SamplerConfig, SpaceError, format_override, parse_distribution,
                                  parse_section, parse_seeds)

__all__ = ["SPACE_PARAMS", "ArchitectureSpace", "load_architecture_space", "parse_architecture_space", "parse_supernet"]

KEYS = ("objective", "seeds", "sampler", "model", "blocks", "max_inputs", "types", "supernet")
SUPERNET_KEYS = ("choice_blocks", "set_size", "cost_weight", "temperature", "arch_lr_multiplier", "share_widths",
                 "zero", "candidates")
# The sizes a space may draw per block type (attention and rankmixer draw factors of the width).
SPACE_PARAMS: dict[str, tuple[str, ...]] = {
    **BLOCK_PARAMS, "attention": ("head_width", "heads", "depth"), "rankmixer": ("tokens", "token_width", "depth"),
}
# Blocks of products between pairs of entities: over one entity a dot block has no output and an
# fm block a constant zero, so a draw never gives them fewer than two.
PAIRWISE = ("dot", "fm")
NEEDED = {"mlp": ("width",), "compress": ("width",), "attention": ("head_width",), "rankmixer": ("tokens", "token_width")}


def block_spec(name: str, block_type: str, sizes: dict[str, Any], inputs: list[str]) -> dict:
    """A drawn block as the model's spec: factors multiplied into the width."""
    sizes = dict(sizes)
    if block_type == "attention":
        sizes["width"] = sizes.pop("head_width") * sizes.get("heads", 1)
    elif block_type == "rankmixer":
        sizes["width"] = sizes.pop("token_width") * sizes["tokens"]
    return {"name": name, "type": block_type, "inputs": inputs, **sizes}


@dataclasses.dataclass(frozen=True)
class ArchitectureSpace:
    types: dict[str, dict[str, Param]]
    blocks: Param
    max_inputs: int
    model: dict[str, Any]
    tree: dict[str, Any]  # the sizes as the file gives them (what identifies a study's space)
    objective: Objective = dataclasses.field(default_factory=Objective)
    seeds: tuple[int, ...] | None = None
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)
    where: str = "search space"
    file: Path | None = None
    supernet: dict[str, Any] | None = None  # the supernet model section (one-shot strategies)

    @property
    def searched(self) -> tuple:
        """What a report lists per trial: the model section."""
        return (SimpleNamespace(key="model"),)

    def suggest(self, trial) -> dict[str, Any]:
        """``{"model": the drawn searched model section}`` for an Optuna trial (or a
        ``FixedTrial`` replaying a finished one)."""
        n = self.blocks.suggest(trial)
        types = list(self.types)
        blocks = []
        entities = {SOURCE: 2}  # the field embeddings: at least two entities (a lower bound)
        for i in range(n):
            t = trial.suggest_categorical(f"b{i}.type", types) if len(types) > 1 else types[0]
            sizes = {k: dataclasses.replace(p, key=f"b{i}.{t}.{k}").suggest(trial) for k, p in self.types[t].items()}
            candidates = [SOURCE] + [f"b{j}" for j in range(i)]
            most = min(self.max_inputs, len(candidates))
            count = trial.suggest_int(f"b{i}.inputs", 1, most) if most > 1 else 1
            inputs = list(dict.fromkeys(trial.suggest_categorical(f"b{i}.in{s}", candidates) if len(candidates) > 1
                                        else SOURCE for s in range(count)))
            reads = sum(entities[s] for s in inputs)
            if t in PAIRWISE and reads < 2:  # one entity has no pairs: the block reads the embeddings too
                inputs.append(SOURCE)
                reads += entities[SOURCE]
            spec = block_spec(f"b{i}", t, sizes, inputs)
            entities[spec["name"]] = output_entities(t, spec, reads)
            blocks.append(spec)
        return {"model": {"name": "searched", **self.model, "blocks": blocks}}

    def values(self, optuna_params: dict[str, Any]) -> dict[str, Any]:
        """The model section a finished trial drew (replayed from its Optuna params)."""
        import optuna

        try:
            return self.suggest(optuna.trial.FixedTrial(optuna_params))
        except ValueError:  # a trial cut off while drawing: its params are incomplete
            return {"model": None}

    def overrides(self, values: dict[str, Any]) -> list[str]:
        return [format_override("model", values["model"])]

    def summary(self, values: dict[str, Any]) -> str:
        return describe_blocks(values["model"]["blocks"])

    def describe(self) -> dict:
        return {"objective": self.objective.model_dump(), "seeds": list(self.seeds) if self.seeds else None,
                "sampler": self.sampler.model_dump(), **self.tree}

    def probes(self) -> list[dict]:
        """Architectures that together use every type at every bound: one block per type
        reading ``emb``, all sizes at their first probe, then at their last."""
        out = []
        for pick in (0, -1):
            blocks = [block_spec(f"b{i}", t, {k: p.probes()[pick] for k, p in params.items()}, [SOURCE])
                      for i, (t, params) in enumerate(self.types.items())]
            out.append({"name": "searched", **self.model, "blocks": blocks})
        return out

    def check_against(self, config: str | Path, overrides: list[str]) -> None:
        """The probe architectures give a valid config with ``config`` plus ``overrides``;
        an override of the model (which the search sets) is refused."""
        clash = model_overrides(overrides)
        if clash:
            raise SpaceError(f"{self.where}: the override(s) {clash} set the model, which the search draws; "
                             "put fixed model keys under the space's model:")
        for probe in self.probes():
            try:
                load_config(config, [*overrides, format_override("model", probe)])
            except ConfigError as e:
                raise SpaceError(f"{self.where}: an architecture of this space does not give a valid config "
                                 f"({config}):\n{e}") from None


def parse_supernet(tree: Any, types: dict[str, dict[str, Param]], model: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``supernet`` section as a ``supernet`` model section. Keys: ``choice_blocks``,
    ``set_size``, ``cost_weight``, ``temperature``, ``arch_lr_multiplier``, ``share_widths``, ``zero`` (offer the
    zero op, default true) and ``candidates`` (per type of ``types``, a list of sizes inside its
    range; default: each type at its lower, then at its upper bounds)."""
    here = f"{where}: supernet"
    tree = tree or {}
    if not isinstance(tree, dict):
        raise SpaceError(f"{here}: expected a mapping, got {tree!r}")
    unknown = sorted(set(tree) - set(SUPERNET_KEYS))
    if unknown:
        raise SpaceError(f"{here}: unknown key(s) {unknown}; known: {', '.join(SUPERNET_KEYS)}")
    given = tree.get("candidates")
    if given is None:  # each type at its lower, then at its upper bounds
        given = {}
        for t, params in types.items():
            picks = [tuple((k, p.probes()[end]) for k, p in params.items()) for end in (0, -1)]
            given[t] = [dict(pick) for pick in dict.fromkeys(picks)]
    if not isinstance(given, dict) or not given:
        raise SpaceError(f"{here}.candidates: expected a mapping of block types to lists of sizes")
    candidates = []
    for t, entries in given.items():
        if t not in types:
            raise SpaceError(f"{here}.candidates.{t}: not a type of this space's types ({', '.join(types)})")
        if not isinstance(entries, list) or not entries:
            raise SpaceError(f"{here}.candidates.{t}: expected a list of sizes, e.g. [{{}}]")
        for j, sizes in enumerate(entries):
            at = f"{here}.candidates.{t}[{j}]"
            sizes = sizes or {}
            if not isinstance(sizes, dict):
                raise SpaceError(f"{at}: expected a mapping of sizes, got {sizes!r}")
            for k, v in sizes.items():
                if k not in types[t]:
                    raise SpaceError(f"{at}.{k}: the space's {t} blocks draw no {k} "
                                     f"(they draw {', '.join(types[t]) or 'nothing'})")
                if not types[t][k].contains(v):
                    raise SpaceError(f"{at}.{k}: {v!r} lies outside the space's range {types[t][k].spec()}")
            missing = [k for k in NEEDED.get(t, ()) if k not in sizes]
            if missing:
                raise SpaceError(f"{at}: a {t} candidate needs {', '.join(missing)}")
            spec = block_spec("candidate", t, sizes, [SOURCE])
            candidates.append({"type": t, **{k: v for k, v in spec.items() if k not in ("name", "type", "inputs")}})
    if tree.get("zero", True):
        candidates.append({"type": ZERO})
    section = {"name": "supernet", **model, "candidates": candidates,
               **{k: tree[k] for k in SUPERNET_KEYS if k in tree and k not in ("zero", "candidates")}}
    try:
        SupernetConfig.model_validate({k: v for k, v in section.items() if k != "name"})
    except ValidationError as e:
        raise SpaceError(format_validation_error(e, here)) from None
    return section


def load_architecture_space(path: str | Path) -> ArchitectureSpace:
    """A space file, by path or as the name of a packaged space (``configs/search/``). A space
    may start from others (``defaults: default``, then the keys it changes, merged key by key)."""
    what = "architecture search space"

    def read(name: str) -> dict[str, Any]:
        return read_yaml_mapping(config_path(name, kind="search", what=what), what, (*KEYS, "defaults"))

    file = config_path(path, kind="search", what=what)
    return parse_architecture_space(with_defaults(str(path), read), f"search space {file}", file)


def _int(tree: dict, key: str, where: str, low: int) -> int:
    value = tree.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SpaceError(f"{where}: {key} must be an integer >= {low}, got {value!r}")
    return value


def parse_architecture_space(tree: dict[str, Any], where: str = "search space",
                             file: Path | None = None) -> ArchitectureSpace:
    for key in ("blocks", "types"):
        if key not in tree:
            raise SpaceError(f"{where}: {key!r} is missing")
    blocks = parse_distribution("blocks", tree["blocks"], f"{where}: blocks")
    if blocks.kind not in ("int", "fixed") or any(not isinstance(v, int) or v < 1 for v in blocks.probes()):
        raise SpaceError(f"{where}: blocks must be {{int: [low, high]}} or {{fixed: n}} with n >= 1")
    max_inputs = _int(tree, "max_inputs", where, 1) if "max_inputs" in tree else 2
    model = tree.get("model") or {}
    if not isinstance(model, dict) or {"name", "blocks"} & set(model):
        raise SpaceError(f"{where}: model must be a mapping of the searched model's other keys (not name or blocks)")
    raw_types = tree["types"]
    if not isinstance(raw_types, dict) or not raw_types:
        raise SpaceError(f"{where}: types must map block types to their sizes")
    types: dict[str, dict[str, Param]] = {}
    for t, sizes in raw_types.items():
        here = f"{where}: types.{t}"
        if t not in SPACE_PARAMS:
            raise SpaceError(f"{here}: unknown block type; known: {', '.join(SPACE_PARAMS)}")
        sizes = sizes or {}
        if not isinstance(sizes, dict):
            raise SpaceError(f"{here}: expected a mapping of sizes, got {sizes!r}")
        unknown = sorted(set(sizes) - set(SPACE_PARAMS[t]))
        if unknown:
            raise SpaceError(f"{here}: unknown size(s) {unknown}; a {t} block draws {', '.join(SPACE_PARAMS[t]) or 'none'}")
        missing = [k for k in NEEDED.get(t, ()) if k not in sizes]
        if missing:
            raise SpaceError(f"{here}: a {t} block needs {', '.join(missing)}")
        types[t] = {k: parse_distribution(k, spec, f"{here}.{k}") for k, spec in sizes.items()}
        first = {k: p.probes()[0] for k, p in types[t].items()}
        for k, param in types[t].items():  # every bound and choice must make a valid block
            for probe in param.probes():
                try:
                    BlockSpec.model_validate(block_spec("probe", t, {**first, k: probe}, [SOURCE]))
                except (ValueError, TypeError, KeyError) as e:
                    raise SpaceError(f"{here}.{k}: the value {probe!r} does not make a valid {t} block: "
                                     f"{str(e).splitlines()[-1] if str(e) else type(e).__name__}") from None
    described = json.loads(json.dumps({k: tree[k] for k in ("model", "blocks", "max_inputs", "types") if k in tree}))
    space = ArchitectureSpace(types, blocks, max_inputs, dict(model), described,
                              parse_section(Objective, tree.get("objective"), "objective", where),
                              parse_seeds(tree.get("seeds"), where),
                              parse_section(SamplerConfig, tree.get("sampler"), "sampler", where), where, file)
    for probe in space.probes():  # the model's own keys (embedding_dim, head_hidden) are valid
        try:
            SearchedConfig.model_validate({k: v for k, v in probe.items() if k != "name"})
        except ValidationError as e:
            raise SpaceError(format_validation_error(e, f"{where}: model")) from None
    return dataclasses.replace(space, supernet=parse_supernet(tree.get("supernet"), types, dict(model), where))
