"""``describe_model`` (what ``rankmixer models --describe`` prints) for every registered model:
the documented keys, parameter counts equal to the built module's, RankMixer's analytic parts
equal to the measured counter, and the CLI command that prints them."""

from __future__ import annotations

import pytest
import torch
from tests.factories import LARGE, THREE_GROUPS, make_feature_map, random_batch, registered_models

from rankmixer.models import registry
from rankmixer.models.describe import describe_model
from rankmixer.models.flops import forward_flops_per_sample
from rankmixer.models.rankmixer import RankMixerConfig, rankmixer_flops_per_sample, rankmixer_param_count
from rankmixer.nn.embedding import split_parameters

pytestmark = pytest.mark.usefixtures("single_thread")

KEYS = ["name", "summary", "config", "params", "flops", "notes"]


def _is_rankmixer(name: str) -> bool:
    return registry.get(name).config_cls is RankMixerConfig


@pytest.mark.parametrize("name", list(registry.available()))
def test_without_a_feature_map(name):
    d = describe_model(name)
    assert list(d) == KEYS and d["name"] == name and d["summary"] == registry.get(name).summary
    assert d["config"] == registry.parse_config(name, {}).model_dump(mode="json")
    assert d["notes"] and all(isinstance(n, str) for n in d["notes"])
    if _is_rankmixer(name):
        cfg = registry.parse_config(name, {})
        blocks = rankmixer_param_count(cfg)["blocks"]
        assert d["params"] == {"blocks": blocks, "paper_estimate": rankmixer_param_count(cfg)["paper_estimate"],
                               "meta_module_params": blocks}
        f = rankmixer_flops_per_sample(cfg)
        assert d["flops"]["blocks"] == f["blocks"] and d["flops"]["train"] == 3 * f["blocks"]
        assert ("blocks_active" in d["flops"]) == (cfg.moe is not None)
        assert any("--feature-map" in n for n in d["notes"])
    else:
        assert d["params"] is None and d["flops"] is None
        assert any("--feature-map" in n for n in d["notes"])


@pytest.mark.parametrize("name", registered_models())
def test_parameters_equal_the_built_model(name, tiny_feature_map):
    d = describe_model(name, {}, tiny_feature_map)
    p = d["params"]
    assert all(isinstance(v, int) for v in p.values())
    if p["total"] > LARGE:  # not built in memory here; RankMixer's count is checked analytically
        assert p["total"] == p["embedding"] + p["dense"]
        return
    torch.manual_seed(0)
    model = registry.build_model(name, tiny_feature_map)
    emb, rest = split_parameters(model)
    assert p["total"] == sum(x.numel() for x in model.parameters())
    assert p["embedding"] == sum(x.numel() for x in emb) and p["dense"] == sum(x.numel() for x in rest)
    if _is_rankmixer(name):
        assert p["meta_module_params"] == p["total"]
        if model.cfg.moe is None:  # MoE eval FLOPs depend on the routing (test_rankmixer_counting.py)
            measured = forward_flops_per_sample(model, random_batch(tiny_feature_map, 8))
            assert d["flops"]["forward"] == measured
    else:
        assert d["flops"] is None


def test_overrides_and_errors():
    d = describe_model("rankmixer-100m", {"num_layers": 3})
    assert d["config"]["num_layers"] == 3
    assert d["params"]["blocks"] == rankmixer_param_count(registry.parse_config("rankmixer-100m", {}))["blocks"] * 3 // 2
    with pytest.raises(KeyError, match="unknown model"):
        describe_model("nope")
    with pytest.raises(ValueError, match="num_layrs"):
        describe_model("dcnv2", {"num_layrs": 3})


def test_cli_models_describe(tmp_path):
    from typer.testing import CliRunner

    from rankmixer.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["models"], terminal_width=300)
    assert res.exit_code == 0 and "rankmixer-1b-moe" in res.output
    res = runner.invoke(app, ["models", "--describe", "rankmixer-1b"], terminal_width=300)
    assert res.exit_code == 0, res.output
    blocks = rankmixer_param_count(registry.parse_config("rankmixer-1b", {}))["blocks"]
    flops = rankmixer_flops_per_sample(registry.parse_config("rankmixer-1b", {}))["blocks"]
    assert f"{blocks:,}" in res.output and f"{flops:,}" in res.output and "hidden_dim" in res.output
    fm = make_feature_map(feature_groups=THREE_GROUPS)
    fm.save(tmp_path / "feature_map.json")
    res = runner.invoke(app, ["models", "--describe", "rankmixer-100m", "--feature-map", str(tmp_path), "-o",
                              "num_layers=3"], terminal_width=300)
    assert res.exit_code == 0, res.output
    total = rankmixer_param_count(registry.parse_config("rankmixer-100m", {"num_layers": 3}), fm)["total"]
    assert f"{total:,}" in res.output
    res = runner.invoke(app, ["models", "--describe", "nope"], terminal_width=300)
    assert res.exit_code == 2 and "unknown model" in res.output
