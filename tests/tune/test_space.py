"""Search-space files: what they parse to, the errors that name the bad key, the override text
the values become, and the check of every bound and choice against the config."""

from __future__ import annotations

import pytest
import yaml

from rankmixer.config import apply_overrides, load_config, packaged_configs
from rankmixer.core.yamlio import YamlError
from rankmixer.tune.space import Param, SpaceError, format_override, load_space, parse_space

GOOD = {
    "objective": {"metric": "logloss"},
    "seeds": [3, 1],
    "sampler": {"name": "random", "seed": 5},
    "train.dense_optimizer.lr": {"float": [1.0e-4, 1.0e-2], "log": True},
    "model.dropout": {"float": [0.0, 0.5], "step": 0.1},
    "model.num_cross_layers": {"int": [1, 4], "step": 1},
    "model.dnn_hidden": {"choice": [[8], [16, 8]]},
    "train.epochs": {"fixed": 3},
}


def test_a_space_parses_to_what_it_says():
    space = parse_space(GOOD)
    assert space.objective.metric == "logloss" and space.objective.split == "valid"
    assert space.objective.direction == "minimize"  # the metric's own direction when left out
    assert space.seeds == (3, 1) and space.sampler.name == "random" and space.sampler.seed == 5
    by_key = {p.key: p for p in space.params}
    assert by_key["train.dense_optimizer.lr"] == Param("train.dense_optimizer.lr", "float", 1e-4, 1e-2, log=True)
    assert by_key["model.num_cross_layers"].step is None  # step 1 is the integer default
    assert by_key["model.dnn_hidden"].choices == ([8], [16, 8])
    assert [p.key for p in space.searched] == list(GOOD)[3:7]
    assert parse_space({"model.dropout": {"float": [0, 1]}}).objective.model_dump() == \
        {"metric": "auc", "split": "valid", "direction": "maximize"}


@pytest.mark.parametrize("tree, fragments", [
    ({"model.dropout": {"float": [0.5, 0.1]}}, ["model.dropout", "below"]),
    ({"model.dropout": {"float": [0.0, 0.5], "lgo": True}}, ["model.dropout", "lgo"]),
    ({"model.dropout": [0.0, 0.5]}, ["model.dropout", "exactly one of"]),
    ({"model.dropout": {"float": [0.0, 0.5], "choice": [0.1, 0.2]}}, ["model.dropout", "exactly one of"]),
    ({"train.dense_optimizer.lr": {"float": ["1e-4", 0.1], "log": True}}, ["train.dense_optimizer.lr", "1.0e-4"]),
    ({"train.dense_optimizer.lr": {"float": [0.0, 0.1], "log": True}}, ["train.dense_optimizer.lr", "low > 0"]),
    ({"train.dense_optimizer.lr": {"float": [1e-4, 0.1], "log": True, "step": 0.01}}, ["lr", "do not combine"]),
    ({"model.num_cross_layers": {"int": [1.5, 4]}}, ["model.num_cross_layers", "integer"]),
    ({"model.num_cross_layers": {"int": [1, 4], "step": 0}}, ["model.num_cross_layers", "positive"]),
    ({"model.dnn_hidden": {"choice": [[8]]}}, ["model.dnn_hidden", "at least two"]),
    ({"model.dnn_hidden": {"choice": [[8], [8]]}}, ["model.dnn_hidden", "twice"]),
    ({"seed": {"choice": [1, 2]}}, ["seed", "seeds:"]),
    ({"run_dir": {"fixed": "x"}}, ["run_dir", "own run directory"]),
    ({"objectve": {"metric": "auc"}}, ["objectve", "objective, seeds, sampler"]),
    ({"model.dropout ": {"fixed": 0.1}}, ["'model.dropout '", "not a config key"]),
    ({"objective": {"metric": "auc", "split": "test"}}, ["objective", "split: 'test'", "validation split only"]),
    ({"objective": {"metric": "logloss", "direction": "maximize"}}, ["objective", "contradicts"]),
    ({"objective": {"metric": "calibration"}}, ["objective", "calibration"]),
    ({"objective": {"metric": "auc", "splt": "valid"}}, ["objective", "splt"]),
    ({"sampler": {"name": "grid"}}, ["sampler", "name"]),
    ({"sampler": {"name": "random", "n_startup_trials": 3}}, ["sampler", "tpe"]),
    ({"seeds": [1, 1]}, ["seeds", "distinct"]),
    ({"seeds": []}, ["seeds"]),
    ({"train.epochs": {"fixed": 3}, "model.dropout": {"fixed": 0.1}}, ["no key is searched"]),
    ({"model": {"choice": ["dcnv2", "lr"]}, "model.dropout": {"float": [0.0, 0.5]}}, ["'model'", "'model.dropout'",
                                                                                        "overlap"]),
])
def test_bad_spaces_are_refused_naming_the_key(tree, fragments):
    base = {"model.dropout": {"float": [0.0, 0.5]}} if not any(k.startswith("model.dropout") for k in tree) else {}
    with pytest.raises(SpaceError) as err:
        parse_space({**base, **tree}, "search space s.yaml")
    assert str(err.value).startswith("search space s.yaml") or "invalid search space s.yaml" in str(err.value)
    for f in fragments:
        assert f in str(err.value), (f, str(err.value))


def test_a_space_file_by_path_or_packaged_name(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    assert load_space(path).file == path
    path.write_text("model.dropout: {float: [0, 1]\n")
    with pytest.raises(YamlError, match="s.yaml is not valid YAML"):
        load_space(path)
    with pytest.raises(FileNotFoundError, match="recipe"):  # the message lists the packaged spaces
        load_space("no_such_space")
    assert load_space("recipe").file == packaged_configs() / "tune" / "recipe.yaml"


@pytest.mark.parametrize("value", [1e-05, 0.1, 3, "yes", "1e-3", None, True, [400, 400], {"name": "lr", "x": [1.5e-7]}])
def test_override_text_reads_back_as_the_value(value):
    """The project's own override parser (the one ``rankmixer train`` uses) reads the text back
    as the same value and type (YAML would read a bare 1e-05 as a string, "yes" as true)."""
    text = format_override("model.x", value)
    got = apply_overrides({}, [text])["model"]["x"]
    assert got == value and type(got) is type(value)


def test_stepped_floats_are_on_their_grid_and_values_lie_in_the_space():
    p = Param("model.dropout", "float", 0.0, 0.5, step=0.1)
    assert p.decode(0.1 + 0.1 + 0.1) == 0.3 and p.decode(0.30000000000000004) == 0.3
    assert Param("x.y", "float", 1e-4, 1e-2, step=2.5e-4).decode(1e-4 + 3 * 2.5e-4) == 0.00085
    assert p.contains(0.3) and not p.contains(0.6)
    ints = Param("model.n", "int", 1, 4)
    assert ints.contains(2) and not ints.contains(2.5) and not ints.contains(5)
    choice = parse_space({"model.dnn_hidden": {"choice": [[8], [16, 8]]}}).params[0]
    assert choice.encoded == ("[8]", "[16, 8]")  # Optuna stores scalars only
    assert choice.decode("[16, 8]") == [16, 8] and choice.contains([16, 8]) and not choice.contains([8, 8])
    mixed = parse_space({"train.x.y": {"choice": [True, 1, "a"]}}).params[0]
    assert mixed.encoded == ("true", "1", '"a"') and mixed.decode("1") == 1 and mixed.decode("true") is True
    assert parse_space({"train.x.y": {"choice": ["adam", "sgd"]}}).params[0].encoded == ("adam", "sgd")


def test_every_bound_and_choice_is_checked_against_the_config(tmp_path):
    good = parse_space({"model.dropout": {"float": [0.0, 0.5]}, "train.batch_size": {"choice": [64, 128]}})
    good.check_against("movielens_dcnv2", ["train.epochs=2"])
    bad = parse_space({"train.bach_size": {"choice": [64, 128]}}, "search space s.yaml")
    with pytest.raises(SpaceError, match=r"(?s)s.yaml: train.bach_size=64 does not give a valid config.*bach_size"):
        bad.check_against("movielens_dcnv2", [])
    refused = parse_space({"model.dropout": {"choice": [0.1, "high"]}})  # the second choice is not a float
    with pytest.raises(SpaceError, match="model.dropout=high"):
        refused.check_against("movielens_dcnv2", [])
    negative = parse_space({"train.batch_size": {"int": [-4, 64]}})
    with pytest.raises(SpaceError, match="train.batch_size=-4"):
        negative.check_against("movielens_dcnv2", [])
    with pytest.raises(SpaceError, match="model.dropout=0.2.*tunes"):
        good.check_against("movielens_dcnv2", ["model.dropout=0.2"])


@pytest.mark.parametrize("path", sorted((packaged_configs() / "tune").glob("*.yaml")), ids=lambda p: p.stem)
def test_packaged_spaces_fit_the_packaged_experiments(path):
    space = load_space(path.stem)
    assert space.objective.split == "valid"
    for experiment in ("movielens_dcnv2", "taobao_rankmixer", "synthetic_deepfm"):
        space.check_against(experiment, [])
        values = {p.key: p.probes()[-1] for p in space.params}
        tree = load_config(experiment, space.overrides(values)).model_dump(mode="json")
        for key, value in values.items():  # each value reached the key it names
            node = tree
            for part in key.split("."):
                node = node[part]
            if isinstance(value, dict) and isinstance(node, dict):  # a section: its other keys keep their defaults
                node = {k: node.get(k) for k in value}
            assert node == value, key
