"""The architecture space: parsing with errors that name the key, what a draw gives (always a
valid searched model), replaying a finished trial's draw from its params, and the probes."""

from __future__ import annotations

import pytest
import yaml
from tests.factories import make_feature_map

from rankmixer.config import ConfigError
from rankmixer.core.yamlio import YamlError
from rankmixer.models import registry
from rankmixer.models.searched import SearchedConfig, output_entities
from rankmixer.search.space import load_architecture_space, parse_architecture_space
from rankmixer.tune import SpaceError

optuna = pytest.importorskip("optuna", reason="rankmixer search needs the 'tune' extra (optuna)")

TREE = {
    "model": {"embedding_dim": 8},
    "blocks": {"int": [1, 4]},
    "max_inputs": 2,
    "types": {"mlp": {"width": {"int": [8, 64], "log": True}, "depth": {"int": [1, 2]}},
              "attention": {"head_width": {"choice": [2, 4]}, "heads": {"choice": [1, 3]}},
              "rankmixer": {"tokens": {"choice": [2, 4]}, "token_width": {"fixed": 4}},
              "dot": {}, "cross": {"rank": {"choice": [None, 4]}}},
}


def with_(**changes):
    return {**TREE, **changes}


@pytest.mark.parametrize("tree, message", [
    (with_(types={"conv": {}}), "types.conv: unknown block type"),
    (with_(types={"mlp": {"width": {"int": [8, 16]}, "heads": {"fixed": 2}}}), "types.mlp: unknown size"),
    (with_(types={"mlp": {"depth": {"fixed": 2}}}), "types.mlp: a mlp block needs width"),
    (with_(types={"attention": {"heads": {"fixed": 2}}}), "needs head_width"),
    (with_(types={"mlp": {"width": {"int": [8, 100000]}}}), "types.mlp.width: the value 100000"),
    (with_(types={"mlp": {"width": {"int": [8]}}}), "types.mlp.width"),
    (with_(types={"cross": {"depth": {"int": [0, 3]}}}), "types.cross.depth: the value 0"),
    (with_(blocks={"int": [0, 3]}), "blocks must be"),
    (with_(max_inputs=0), "max_inputs must be an integer >= 1"),
    (with_(model={"name": "dcnv2"}), "model must be a mapping"),
    (with_(model={"embeding_dim": 8}), "model:"),
    (with_(sampler={"name": "grid"}), "sampler"),
    ({"blocks": {"int": [1, 2]}}, "'types' is missing"),
])
def test_a_bad_space_names_the_key(tree, message):
    with pytest.raises(SpaceError, match=message):
        parse_architecture_space(tree)


def draw(space, seed: int):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    return trial, space.suggest(trial)


def test_every_draw_is_a_valid_searched_model_and_replays_from_its_params():
    space = parse_architecture_space(TREE)
    seen_types, seen_multi_input = set(), False
    for seed in range(60):
        trial, values = draw(space, seed)
        model = values["model"]
        assert model["name"] == "searched" and model["embedding_dim"] == 8
        cfg = SearchedConfig.model_validate({k: v for k, v in model.items() if k != "name"})
        assert 1 <= len(cfg.blocks) <= 4
        for i, b in enumerate(cfg.blocks):
            assert b.name == f"b{i}" and 1 <= len(b.inputs) <= 2
            assert set(b.inputs) <= {"emb", *(f"b{j}" for j in range(i))}
            seen_types.add(b.type)
            seen_multi_input |= len(b.inputs) == 2
            if b.type == "attention":
                assert b.width in (2, 4, 6, 12) and b.width % b.heads == 0
            if b.type == "rankmixer":
                assert b.width == 4 * b.tokens
        assert space.values(trial.params) == values  # a finished trial's draw, replayed
    assert seen_types == {"mlp", "attention", "rankmixer", "dot", "cross"} and seen_multi_input


PAIRS = {
    "model": {"embedding_dim": 4},
    "blocks": {"int": [2, 5]},
    "max_inputs": 2,
    "types": {"mlp": {"width": {"choice": [3, 5]}}, "dot": {}, "fm": {},
              "attention": {"head_width": {"fixed": 2}}, "compress": {"width": {"choice": [1, 3]}},
              "rankmixer": {"tokens": {"choice": [1, 2]}, "token_width": {"fixed": 2}}},
}


def test_every_draw_builds_and_gives_its_pairwise_blocks_a_pair():
    """Dot and fm blocks multiply pairs of entities: drawn over one (a vector, a compress of width
    1, a one-token rankmixer, attention over a vector) they would be empty or constant. Every draw
    builds, each dot/fm block reads at least two entities, counted from the built blocks' shapes,
    and ``output_entities`` gives each block's count as built."""
    fm = make_feature_map(num_tasks=1, bags=False, sequences=False)
    space = parse_architecture_space(PAIRS)
    fixed = 0
    for seed in range(150):
        trial, values = draw(space, seed)
        model = registry.build_model("searched", fm, {k: v for k, v in values["model"].items() if k != "name"})
        counts = {"emb": len(model.embedding.field_names)}
        for spec, block in zip(model.cfg.blocks, model.blocks):
            reads = sum(counts[s] for s in spec.inputs)
            shape = block.out_shape
            counts[spec.name] = shape[0] if len(shape) == 2 else 1
            assert output_entities(spec.type, spec.model_dump(), reads) == counts[spec.name]
            if spec.type in ("dot", "fm"):
                assert reads >= 2, (seed, values)
                chosen = [trial.params[f"{spec.name}.in{s}"] if f"{spec.name}.in{s}" in trial.params else "emb"
                          for s in range(trial.params.get(f"{spec.name}.inputs", 1))]
                fixed += "emb" in spec.inputs and "emb" not in chosen
        assert space.values(trial.params) == values
    assert fixed >= 10  # draws that needed the embeddings added occur, and are built


def test_overrides_summary_and_probes():
    space = parse_architecture_space(TREE)
    _, values = draw(space, 0)
    (override,) = space.overrides(values)
    assert override.startswith("model={") and "searched" in override
    assert space.summary(values).startswith("b0=")
    low, high = space.probes()
    assert [b["type"] for b in low["blocks"]] == list(TREE["types"])
    assert low["blocks"][0]["width"] == 8 and high["blocks"][0]["width"] == 64
    assert high["blocks"][1]["width"] == 4 * 3  # attention: head_width x heads


def test_the_packaged_space_loads():
    space = load_architecture_space("default")
    assert set(space.types) == {"mlp", "cross", "gating", "dot", "fm", "attention", "rankmixer", "compress", "dhen"}
    assert space.describe()["types"]["mlp"]["width"] == {"int": [32, 512], "log": True}


def test_a_space_may_start_from_another(tmp_path):
    """``defaults`` in a space file: the named space, then the file's keys merged over it (the
    packaged three_inputs is the default with max_inputs 3, and draws blocks of three inputs);
    a typo is still refused and a cycle is an error naming it."""
    default, three = load_architecture_space("default"), load_architecture_space("three_inputs")
    assert (default.max_inputs, three.max_inputs) == (2, 3)
    assert three.describe()["types"] == default.describe()["types"] and three.supernet == default.supernet
    counts = set()
    for seed in range(40):
        _, values = draw(three, seed)
        counts |= {len(b["inputs"]) for b in values["model"]["blocks"]}
    assert 3 in counts
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"defaults": "default", "types": {"mlp": {"width": {"int": [32, 256]}}}}))
    space = load_architecture_space(mine)
    assert space.describe()["types"]["mlp"]["width"] == {"int": [32, 256], "log": True}  # merged key by key
    assert space.describe()["types"]["mlp"]["depth"] == {"int": [1, 3]} and "dhen" in space.types
    mine.write_text(yaml.safe_dump({"defaults": "default", "types": {"mlp": {"width": {"int": [8, 16]}}}}))
    with pytest.raises(SpaceError, match=r"candidates.mlp\[0\].width: 64 lies outside"):  # checked once merged
        load_architecture_space(mine)
    mine.write_text(yaml.safe_dump({"defaults": "default", "max_input": 3}))
    with pytest.raises(YamlError, match=r"unknown key\(s\) \['max_input'\]"):
        load_architecture_space(mine)
    (tmp_path / "a.yaml").write_text(f"defaults: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"defaults: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_architecture_space(tmp_path / "a.yaml")
