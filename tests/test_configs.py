"""The packaged configs and their composition.

Every packaged experiment validates; each is composed of parts, and every part is used; each
side-by-side pair (``<ds>_<model>`` vs ``<ds>_fuxictr_<model>``) differs in the model section
only (same data, split, seed and training budget, so a difference in results is a difference in
model code); the benchmark suites and the scaling spec load and every cell validates; names
resolve from any directory; a user's parts beside the file override the packaged ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rankmixer.bench.accuracy import load_suite
from rankmixer.bench.scaling import load_spec
from rankmixer.config import (ConfigError, ConfigNotFoundError, compose, config_path, load_config, packaged_configs,
                              section)

PACKAGED = packaged_configs()
EXPERIMENTS = sorted((PACKAGED / "experiment").glob("*.yaml"))
NAMES = [p.stem for p in EXPERIMENTS]
PAIRS = [(n.replace("_fuxictr_", "_"), n) for n in NAMES if "_fuxictr_" in n and n.replace("_fuxictr_", "_") in NAMES]
SCALING_SPECS = ("scaling", "scaling_10m")
SUITES = sorted(p.stem for p in (PACKAGED / "bench").glob("*.yaml")
                if p.stem not in (*SCALING_SPECS, "sequence_length", "gts", "pareto", "exfm", "exfm_shift"))  # gts: tests/text/test_gts_bench.py


@pytest.mark.parametrize("name", NAMES)
def test_experiment_validates(name):
    load_config(name)


def test_experiments_are_composed_of_parts_and_every_part_is_used():
    used = set()
    for path in EXPERIMENTS:
        refs = yaml.safe_load(path.read_text())["defaults"]
        assert any(r.startswith("data/") for r in refs) and any(r.startswith("train/") for r in refs), path.name
        used |= set(refs)
    for path in (PACKAGED / "bench").glob("*.yaml"):  # suites name model and data parts too
        text = path.read_text()
        used |= {f"{g}/{p.stem}" for g in ("model", "data") for p in (PACKAGED / g).glob("*.yaml")
                 if f"{g}/{p.stem}" in text or f"{g}={p.stem}" in text}
    parts = {f"{g}/{p.stem}" for g in ("data", "model", "train") for p in (PACKAGED / g).glob("*.yaml")}
    assert parts - used == set()


def test_there_are_side_by_side_pairs():
    assert {"movielens_fuxictr_dcnv2", "movielens_fuxictr_deepfm", "taobao_fuxictr_wukong"} <= {t for _, t in PAIRS}


@pytest.mark.parametrize("ours,theirs", PAIRS, ids=[t for _, t in PAIRS])
def test_pair_differs_in_model_only(ours, theirs):
    a, b = load_config(ours).model_dump(), load_config(theirs).model_dump()
    assert b["model"]["name"] == "fuxictr-" + a["model"]["name"]
    for key in set(a) | set(b):
        if key != "model":
            assert a[key] == b[key], f"{theirs}: section {key!r} differs from {ours}"
    assert a["model"]["embedding_dim"] == b["model"]["embedding_dim"]


@pytest.mark.parametrize("suite", SUITES)
def test_packaged_suite_cells_validate(suite):
    cells = load_suite(suite)
    assert cells
    for cell in cells:
        load_config(cell.config, list(cell.overrides))


@pytest.mark.parametrize("name", ["exfm", "exfm_shift"])
def test_packaged_exfm_study_validates(name):
    from rankmixer.bench.exfm import load_study

    study = load_study(name)
    teacher = load_config(study["teacher"], study["overrides"])
    assert teacher.train.streaming is not None and teacher.train.streaming.keep_day_weights
    for variant in study["variants"].values():
        student = load_config(study["student"], [*study["overrides"], *(f"model.{k}={v}" for k, v in variant.items())])
        assert student.train.streaming is not None and student.model_name == "exfm"


def test_packaged_pareto_studies_validate():
    from rankmixer.bench.pareto import load_study

    for name in ("multitask", "taobao"):
        study = load_study(name)
        cfg = load_config(study["config"], [*study["overrides"], "train.bilevel={preference: [0.5, 0.5]}"])
        assert cfg.train.early_stopping is None and cfg.train.lr_plateau is None


def test_packaged_sequence_length_spec_models_validate():
    import json

    from rankmixer.bench.accuracy import model_section, read_yaml_keys

    path = PACKAGED / "bench" / "sequence_length.yaml"
    spec = read_yaml_keys(path, "spec", ("lengths", "batch_size", "models"))
    assert spec["lengths"] == [50, 200, 1000]
    for label, entry in spec["models"].items():
        section = model_section(entry, [path.parent], label)
        cfg = load_config("behaviour_din", [f"model={json.dumps(section)}"])
        assert cfg.model["name"] == section["name"]


def test_packaged_scaling_spec_cells_validate():
    cells, budget = load_spec("scaling")
    assert len(cells) == 16 and budget == "samples=500000"
    for cell in cells:
        cfg = load_config(cell.config, list(cell.overrides))
        assert cfg.data.preset_options["rows_train"] == 1_000_000


def test_packaged_data_rich_scaling_spec_cells_validate():
    from rankmixer.bench.scaling import ORACLE

    cells, budget = load_spec("scaling_10m")
    assert budget == "samples=10000000"
    families = [c.model_label for c in cells if c.model_label != ORACLE]
    assert len(set(families)) == 8 and all(families.count(f) == 5 for f in set(families))
    assert [c.model_label for c in cells].count(ORACLE) == 1
    for cell in cells:
        cfg = load_config(cell.config, list(cell.overrides))
        assert cfg.data.preset_options["rows_train"] == 10_000_000


def test_names_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = PACKAGED / "experiment" / "movielens_dcnv2.yaml"
    # a name, a name with its suffix, and a path as written in a clone before the configs moved
    for given in ("movielens_dcnv2", "movielens_dcnv2.yaml", "configs/movielens_dcnv2.yaml"):
        assert config_path(given) == expected
    assert config_path("configs/bench/peers.yaml", "bench") == config_path("peers", "bench") == PACKAGED / "bench" / "peers.yaml"
    own = tmp_path / "movielens_dcnv2.yaml"  # a file of that name wins
    own.write_text("model: {name: lr}\n")
    assert config_path("movielens_dcnv2.yaml") == Path("movielens_dcnv2.yaml")
    with pytest.raises(ConfigNotFoundError, match="movielens_dcnv2") as err:
        config_path("movielens_dcnv3")
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ConfigError)
    with pytest.raises(FileNotFoundError, match="scaling spec not found"):
        load_spec(tmp_path / "missing.yaml")


def test_parts_beside_the_file_override_packaged_ones(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "dcnv2.yaml").write_text("name: dcnv2\nembedding_dim: 4\n")
    exp = tmp_path / "exp.yaml"
    exp.write_text("defaults: [data/synthetic, model/dcnv2, train/default]\nmodel: {dropout: 0.3}\ntrain: {epochs: 1}\n")
    tree = compose(exp)
    packaged_train = yaml.safe_load((PACKAGED / "train" / "default.yaml").read_text())
    assert tree["model"] == {"name": "dcnv2", "embedding_dim": 4, "dropout": 0.3}
    assert tree["train"] == {**packaged_train, "epochs": 1}
    assert tree["data"] == yaml.safe_load((PACKAGED / "data" / "synthetic.yaml").read_text())
    cfg = load_config(exp, ["model=lr"])  # an override naming a part swaps the whole section
    assert cfg.model == {"name": "lr"}


def test_a_part_may_start_from_parts_of_its_group(tmp_path):
    """``defaults`` inside a part: the base parts merged in order (nested mappings key by key),
    then the part's own keys, through every way a part is read (an experiment's defaults, a
    ``group=name`` override, a suite section); a cycle or a part of another group is an error."""
    (tmp_path / "data").mkdir()
    base = yaml.safe_load((PACKAGED / "data" / "synthetic.yaml").read_text())
    (tmp_path / "data" / "big.yaml").write_text(
        "defaults: data/synthetic\npreset_options: {rows_train: 777}\nprepared_dir: elsewhere\n")
    (tmp_path / "data" / "bigger.yaml").write_text("defaults: [data/big]\npreset_options: {rows_valid: 55}\n")
    want = {**base, "preset_options": {**base.get("preset_options", {}), "rows_train": 777, "rows_valid": 55},
            "prepared_dir": "elsewhere"}
    assert section("data", "bigger", [tmp_path]) == want
    exp = tmp_path / "exp.yaml"
    exp.write_text("defaults: [data/bigger, model/dcnv2, train/default]\n")
    assert compose(exp)["data"] == want
    assert load_config(exp, ["data=big"]).data.preset_options["rows_train"] == 777
    (tmp_path / "data" / "a.yaml").write_text("defaults: data/b\n")
    (tmp_path / "data" / "b.yaml").write_text("defaults: data/a\n")
    with pytest.raises(ConfigError, match="cycle: data/a -> data/b -> data/a"):
        section("data", "a", [tmp_path])
    (tmp_path / "data" / "odd.yaml").write_text("defaults: model/dcnv2\n")
    with pytest.raises(ConfigError, match="data/odd.*own group"):
        section("data", "odd", [tmp_path])


def test_section_entries_of_suites(tmp_path):
    dcnv2 = yaml.safe_load((PACKAGED / "model" / "dcnv2.yaml").read_text())
    assert section("model", "model/dcnv2") == section("model", "dcnv2") == dcnv2
    assert section("model", {"defaults": "model/dcnv2", "dropout": 0.0}) == {**dcnv2, "dropout": 0.0}
    assert section("model", {"name": "lr"}) == {"name": "lr"}
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("name: deepfm\nembedding_dim: 4\n")
    assert section("model", "mine", [tmp_path]) == {"name": "deepfm", "embedding_dim": 4}
    with pytest.raises(ConfigError, match="not a model part"):
        section("model", "data/synthetic")
    with pytest.raises(ConfigError, match="model/nope"):
        section("model", "nope")


def test_suite_models_may_name_parts(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("name: deepfm\nembedding_dim: 4\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "datasets": {"syn": "synthetic_dcnv2"},
        "models": {"a": "model/dcnv2", "b": {"defaults": "model/dcnv2", "dropout": 0.0}, "c": "mine",
                   "d": {"name": "lr"}},
    }))
    dcnv2 = yaml.safe_load((PACKAGED / "model" / "dcnv2.yaml").read_text())
    models = {c.model_label: load_config(c.config, list(c.overrides)).model for c in load_suite(suite)}
    assert models == {"a": dcnv2, "b": {**dcnv2, "dropout": 0.0}, "c": {"name": "deepfm", "embedding_dim": 4},
                      "d": {"name": "lr"}}
    suite.write_text(yaml.safe_dump({"datasets": {"syn": "synthetic_dcnv2"}, "models": {"e": "model/nope"}}))
    with pytest.raises(ConfigError, match="model 'e'.*model/nope"):
        load_suite(suite)
