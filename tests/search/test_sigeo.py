"""SiGeo: the proxies against a float64 recomputation with autograd.grad on the path's own
weights, the path sampler, the warm-up's budget, the ranking, and the proxy benchmark (its rank
correlations against scipy's, and every subnet trained from scratch)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rankmixer import experiment
from rankmixer.bench.sigeo import picks, picks_table, run_sigeo_bench
from rankmixer.core.rank_correlation import kendall_tau, partial_spearman, spearman
from rankmixer.config import load_config
from rankmixer.models import registry
from rankmixer.models.supernet import SupernetConfig
from rankmixer.search.sigeo import path_model, proxies, run_sigeo, sample_paths, warm_up
from tests.factories import random_batch, tiny_config_file

SPACE = {
    "model": {"embedding_dim": 4},
    "blocks": {"int": [1, 2]},
    "types": {"mlp": {"width": {"int": [4, 16]}}, "cross": {"depth": {"int": [1, 2]}}, "dot": {}},
    "supernet": {"choice_blocks": 2, "set_size": 3},
}
CANDIDATES = [{"type": "mlp", "width": 8}, {"type": "cross", "rank": 2}, {"type": "dot"}, {"type": "zero"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_config_file(tmp_path_factory.mktemp("sigeo"))


def space_file(folder: Path) -> Path:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return path


def test_proxies_are_the_definitions(tiny_feature_map, generator):
    torch.manual_seed(0)
    model = registry.build_model("supernet", tiny_feature_map, {"embedding_dim": 4, "choice_blocks": 2, "set_size": 3,
                                                                 "candidates": CANDIDATES})
    batches = [random_batch(tiny_feature_map, 16, generator) for _ in range(4)]
    path = [3, 1]  # zero, then the low-rank cross: the path's weights are block 1's cross, its map and the heads
    got = proxies(model, batches, path)
    own = [*model.ops[1][1].parameters(), *model.projections[1][1].parameters(), *model.heads.parameters()]
    model.set_path(path)
    grads, losses = [], []
    for b in batches:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(b).logits, b.labels.float())
        grads.append([g.double().numpy().ravel() for g in torch.autograd.grad(loss, own)])
        losses.append(float(loss))
    model.set_path(None)
    zico = dot = 0.0
    for j, p in enumerate(own):
        g = np.stack([gs[j] for gs in grads])
        sd = g.std(axis=0)
        zico += math.log((np.abs(g).mean(axis=0)[sd > 0] / sd[sd > 0]).sum())
        dot += float(p.detach().double().numpy().ravel() @ g.mean(axis=0))
    assert got["zico"] == pytest.approx(zico, rel=1e-9)
    assert got["fisher_rao"] == pytest.approx(math.log(dot * dot), rel=1e-9)
    assert got["neg_loss"] == pytest.approx(-np.mean(losses), rel=1e-9)
    assert got["sigeo"] == pytest.approx(zico + math.log(dot * dot) - np.mean(losses), rel=1e-9)
    assert model.path is None and all(p.grad is None for p in model.parameters())


def test_paths_are_distinct_allowed_and_seeded():
    allowed = [[0, 1, 2, 3], [0, 1, 2]]
    paths = sample_paths(allowed, 8, seed=5)
    assert len({tuple(p) for p in paths}) == 8 and all(p[0] in allowed[0] and p[1] in allowed[1] for p in paths)
    assert paths == sample_paths(allowed, 8, seed=5) != sample_paths(allowed, 8, seed=6)
    assert sorted(map(tuple, sample_paths(allowed, 50, seed=0))) == [(a, b) for a in range(4) for b in range(3)]


def test_a_paths_model_drops_zero_blocks():
    net = SupernetConfig(embedding_dim=4, choice_blocks=3, candidates=CANDIDATES)
    model = path_model(net, [3, 0, 2])
    assert [(b["name"], b["inputs"]) for b in model["blocks"]] == [("c1_mlp0", ["emb"]), ("c2_dot2", ["emb", "c1_mlp0"])]


def test_warm_up_trains_the_share_of_rows_it_is_given(tiny, tmp_path):
    supernet = {"name": "supernet", "embedding_dim": 4, "choice_blocks": 2, "set_size": 3, "candidates": CANDIDATES}
    base = load_config(tiny, ["train.max_steps=null"])
    fm = experiment.prepare_data(base.data, log=lambda *_: None)
    cold = warm_up(tiny, supernet, 0.0, tmp_path, [], base, fm, log=lambda *_: None)
    assert not any(tmp_path.iterdir())  # no run for no warm-up
    warm = warm_up(tiny, supernet, 0.5, tmp_path, ["train.max_steps=null"], base, fm, log=lambda *_: None)
    cfg = yaml.safe_load((tmp_path / "warmup-0.5" / "config.yaml").read_text())
    assert cfg["model"]["training"] == "sampled_path"
    assert cfg["train"]["max_steps"] == math.ceil(0.5 * 400 / 64)  # 400 train rows, batches of 64
    changed = [n for n, p in warm.state_dict().items() if not torch.equal(p, cold.state_dict()[n])]
    assert changed and "alpha_stored" not in changed  # alpha is not used by single-path training


def test_the_search_ranks_paths_by_the_proxy(tiny, tmp_path):
    report = run_sigeo(tiny, space_file(tmp_path), tmp_path / "out", warmup=0.0, subnets=5, batches=2,
                       log=lambda *_: None)
    scores = [p["sigeo"] for p in report["paths"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert report["best"]["path"] == report["paths"][0]["path"]
    assert json.loads((tmp_path / "out" / "sigeo.json").read_text())["best"] == report["best"]
    load_config(tiny, [f"model={json.dumps(report['best']['model'])}"])  # a valid experiment


def test_rank_correlations_are_scipys():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, 40).astype(float)  # ties
    y = x + rng.normal(0, 2, 40)
    y[:5] = y[0]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_partial_spearman_is_the_correlation_of_rank_residuals():
    """Spearman's rho with z held fixed, against its definition: the Pearson correlation of the
    ranks of x and y (scipy's, ties averaged) after each is regressed by least squares on the
    ranks of z. A proxy that is z plus noise knows nothing beyond z."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(4)
    z = rng.integers(0, 8, 60).astype(float)  # ties
    y = z + rng.normal(0, 2, 60)
    x = 0.5 * z + y + rng.normal(0, 3, 60)
    rz = np.column_stack([np.ones(60), stats.rankdata(z)])

    def residual(v):
        r = stats.rankdata(v)
        return r - rz @ np.linalg.lstsq(rz, r, rcond=None)[0]

    assert partial_spearman(x, y, z) == pytest.approx(stats.pearsonr(residual(x), residual(y)).statistic, abs=1e-12)
    noise_only = z + rng.normal(0, 1e-3, 60)  # z's order, ties broken at random
    assert abs(partial_spearman(noise_only, y, z)) < abs(spearman(noise_only, y)) / 2
    assert math.isnan(partial_spearman(x, y, x))


def test_the_proxy_benchmark_trains_every_path(tiny, tmp_path):
    report = run_sigeo_bench(tiny, space_file(tmp_path), tmp_path / "bench", warmups=[0.0, 0.5], subnets=4,
                             batches=2, log=lambda *_: None)
    assert len(report["paths"]) == 4 and len(report["correlations"]) == 2 * 4 + 1  # and FLOPs as a proxy
    for row in report["paths"]:
        assert row["test_auc"] is not None and set(row["proxies"]) == {"0", "0.5"}
        run = tmp_path / "bench" / "scratch" / "runs" / f"{row['label']}-s0"
        assert yaml.safe_load((run / "config.yaml").read_text())["model"]["name"] == "searched"
    c = next(c for c in report["correlations"] if c["warmup"] == 0.5 and c["proxy"] == "neg_loss")
    xs = [r["proxies"]["0.5"]["neg_loss"] for r in report["paths"]]
    assert c["spearman"] == pytest.approx(spearman(xs, [r["test_auc"] for r in report["paths"]]))
    assert report["seed_agreement"] is None  # one seed
    # another bench (here: other warm-ups) reads the same from-scratch runs instead of training them again
    scratch = tmp_path / "bench" / "scratch"
    before = {p: p.stat().st_mtime_ns for p in (scratch / "runs").rglob("*") if p.is_file()}
    other = run_sigeo_bench(tiny, space_file(tmp_path), tmp_path / "other", warmups=[0.25], subnets=4, batches=2,
                            scratch_dir=scratch, log=lambda *_: None)
    assert [r["test_auc"] for r in other["paths"]] == [r["test_auc"] for r in report["paths"]]
    assert {p: p.stat().st_mtime_ns for p in (scratch / "runs").rglob("*") if p.is_file()} == before
    assert not (tmp_path / "other" / "scratch").exists() and other["context"]["scratch"] == str(scratch)


def test_seed_agreement_ranks_one_seed_against_the_other():
    from rankmixer.bench.sigeo import _seed_agreement

    cells = [{"label": lab, "seed": s, "test": {"auc": auc}}
             for lab, aucs in (("a", (0.70, 0.71)), ("b", (0.72, 0.69)), ("c", (0.74, 0.75)))
             for s, auc in zip((0, 1), aucs)]
    got = _seed_agreement(cells, ["a", "b", "c"], [0, 1])
    assert got == {"seeds": [0, 1], "spearman": pytest.approx(0.5), "kendall": pytest.approx(1 / 3)}


def test_each_proxy_picks_its_top_subnet_and_its_rank_by_auc():
    """The pick of each proxy, worked by hand on four subnets: the highest proxy value (a NaN
    proxy never picks), its AUC and its rank by AUC; FLOPs picks the costliest."""
    def path(label, auc, flops, sigeo, zico):
        scores = {"sigeo": sigeo, "zico": zico, "fisher_rao": 0.0, "neg_loss": auc}
        return {"label": label, "architecture": label.upper(), "flops_per_sample": flops, "test_auc": auc,
                "proxies": {"0": scores}}

    report = {"context": {"warmups": [0.0]},
              "paths": [path("a", 0.70, 10.0, 1.0, float("nan")), path("b", 0.74, 30.0, 3.0, 1.0),
                        path("c", 0.72, 20.0, 5.0, 2.0), path("d", 0.71, 40.0, 4.0, 0.5)]}
    got = {r["proxy"]: (r["label"], r["test_auc"], r["rank"], r["subnets"]) for r in picks(report)}
    assert got == {"sigeo": ("c", 0.72, 2, 4), "zico": ("c", 0.72, 2, 4), "fisher_rao": ("a", 0.70, 4, 4),
                   "neg_loss": ("b", 0.74, 1, 4), "flops": ("d", 0.71, 3, 4)}
    assert "| 0 | sigeo | `C` | 20 | 0.7200 | 2 of 4 |" in picks_table(report)
    assert "best 0.7400, median 0.7150, worst 0.7000" in picks_table(report)
