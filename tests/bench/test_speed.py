"""bench speed: its code path on tiny sizes (no timing asserted), the public-style baseline as
a loop reference of our block, the inference weight cache, the optimizer kernels."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from rankmixer.bench.public_rankmixer import PublicRankMixerBackbone, load_from_ours
from rankmixer.train.config import OptimizerConfig
from rankmixer.models.rankmixer import RankMixerBackbone, RankMixerConfig
from rankmixer.nn.per_token_ffn import PerTokenFFN
from rankmixer.train.optim import make_optimizer


def test_public_baseline_is_the_same_function_as_ours():
    torch.manual_seed(0)
    cfg = RankMixerConfig(num_tokens=4, hidden_dim=16, num_layers=2, expansion=2)
    ours = RankMixerBackbone(cfg).double()
    for p in ours.parameters():  # LayerNorm affine away from (1, 0) so a swap would show
        torch.nn.init.uniform_(p, -0.5, 0.5) if p.dim() == 1 else None
    public = PublicRankMixerBackbone(4, 16, cfg.ffn_hidden, 2).double()
    load_from_ours(public, ours)
    x = torch.randn(5, 4, 16, dtype=torch.float64, requires_grad=True)
    y_ours, _, _ = ours(x)
    y_pub = public(x)
    torch.testing.assert_close(y_ours, y_pub, rtol=1e-10, atol=1e-10)
    g_ours, = torch.autograd.grad(y_ours.square().sum(), x)
    g_pub, = torch.autograd.grad(y_pub.square().sum(), x)
    torch.testing.assert_close(g_ours, g_pub, rtol=1e-10, atol=1e-10)


def _ffn_out(ffn: PerTokenFFN, x: torch.Tensor, cache: bool) -> torch.Tensor:
    ffn.cache_autocast_weights = cache
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return ffn(x)


def test_inference_weight_cache_is_bitwise_autocast_and_follows_weight_updates():
    torch.manual_seed(0)
    ffn = PerTokenFFN(4, 16, 2, impl="bmm").eval()
    x = torch.randn(6, 4, 16)
    ref = _ffn_out(ffn, x, cache=False)
    assert ffn._cast_key is None
    out = _ffn_out(ffn, x, cache=True)
    assert torch.equal(out, ref)
    cached = ffn._cast[0]
    ffn.eval()  # eval() again (every inference call does it) keeps the copies
    _ffn_out(ffn, x, cache=True)
    assert ffn._cast[0] is cached
    with torch.no_grad():  # an optimizer-like in-place update must invalidate the copies
        ffn.w1.add_(0.5)
        ffn.b2.mul_(2.0)
    fresh = _ffn_out(ffn, x, cache=False)
    assert not torch.equal(fresh, ref)
    assert torch.equal(_ffn_out(ffn, x, cache=True), fresh)
    ffn.train()
    assert ffn._cast_key is None and ffn._cast == ()
    # training (autograd on) never uses the copies: gradients reach the fp32 weights
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ffn(x).float().sum().backward()
    assert ffn.w1.grad is not None and ffn.w1.grad.dtype == torch.float32


def test_optimizer_impl_selection():
    p = [torch.nn.Parameter(torch.randn(3))]
    assert make_optimizer(OptimizerConfig(name="adamw"), p).defaults["fused"] is True
    assert make_optimizer(OptimizerConfig(name="rmsprop"), p).defaults["foreach"] is True
    assert make_optimizer(OptimizerConfig(name="adagrad"), p, sparse=True).defaults["fused"] in (None, False)
    assert make_optimizer(OptimizerConfig(name="adamw", impl="forloop"), p).defaults["foreach"] is False
    with pytest.raises(ValueError, match="no fused"):
        make_optimizer(OptimizerConfig(name="rmsprop", impl="fused"), p)
    with pytest.raises(ValueError, match="sparse"):
        make_optimizer(OptimizerConfig(name="adagrad", impl="fused"), p, sparse=True)


@pytest.mark.parametrize("name", ["adamw", "adagrad", "rmsprop"])
def test_fused_and_foreach_steps_match_the_per_tensor_loop(name):
    torch.manual_seed(0)
    init = [torch.randn(7, 5), torch.randn(5)]
    grads = [[torch.randn_like(t) for t in init] for _ in range(4)]
    results = {}
    for impl in ("auto", "forloop"):
        ps = [torch.nn.Parameter(t.clone()) for t in init]
        opt = make_optimizer(OptimizerConfig(name=name, lr=0.01, weight_decay=0.01, impl=impl), ps)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opt.step()
        results[impl] = [p.detach() for p in ps]
    for a, b in zip(results["auto"], results["forloop"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _run_cli(tmp_path, *args):
    from rankmixer.cli import app

    out = tmp_path / "speed.json"
    res = CliRunner().invoke(app, ["bench", "speed", *args, "--rounds", "1", "--threads", "1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


def _check_mfu(report):
    peaks = report["peak_gflops"]
    for r in report["rows"]:
        if r["kind"] in ("peak", "optim"):
            continue
        ms = r["ms_best"] / 1e3
        assert r["achieved_gflops_best"] == pytest.approx(r["flops_per_call"] / ms / 1e9, rel=2e-3, abs=0.01)
        assert r["samples_per_s_best"] == pytest.approx(r["batch"] / ms, rel=2e-3)
        assert r["peak_gflops"] == peaks[r["precision"]]
        assert r["mfu_best"] == pytest.approx(r["achieved_gflops_best"] / r["peak_gflops"], abs=1e-4)
        assert r["memory"]["peak_mb"] is None or r["memory"]["peak_mb"] > 0


def test_bench_speed_tiny_end_to_end(tmp_path):
    rep = _run_cli(tmp_path, "--model", "rankmixer-tiny", "--batch-sizes", "4,8", "--train-batch", "8",
                   "--no-dcn", "--no-moe")
    assert set(rep["peak_gflops"]) == {"fp32", "bf16"} and all(v > 0 for v in rep["peak_gflops"].values())
    info = rep["rankmixer"]
    # the analytic count and torch's flop counter agree (3x forward for a training step)
    assert info["flop_counter_per_sample"]["forward_per_sample"] == info["analytic_flops_per_sample"]["forward"]
    assert info["flop_counter_per_sample"]["train_per_sample"] == info["analytic_flops_per_sample"]["train"]
    names = {r["name"] for r in rep["rows"]}
    for p in ("fp32", "bf16"):
        assert {f"ours/train/{p}/b8", f"public/train/{p}/b8", f"ours-forloop-opt/train/{p}/b8",
                f"ours/infer/{p}/b4", f"public/infer/{p}/b8"} <= names
    assert "ours-nocache/infer/bf16/b8" in names
    assert {"ours-bmm/train/bf16/b8", "ours-fused/infer/bf16/b8"} <= names  # what auto does not pick
    assert "ours_speedup_best" in next(r for r in rep["rows"] if r["name"] == "ours-bmm/train/bf16/b8")
    assert {"optstep/adamw-fused", "optstep/adamw-foreach", "optstep/adamw-forloop"} <= names
    train = next(r for r in rep["rows"] if r["name"] == "ours/train/fp32/b8")
    assert train["flops_per_call"] == info["analytic_flops_per_sample"]["train"] * 8
    assert "vs_public_best" in train
    infer = next(r for r in rep["rows"] if r["name"] == "ours/infer/bf16/b4")
    assert infer["latency_ms_p50"] <= infer["latency_ms_p99"]
    _check_mfu(rep)
    assert len(rep["setup"]["loadavg_start"]) == 3 and len(rep["setup"]["loadavg_end"]) == 3


def test_bench_speed_tiny_moe_sparse_vs_dense(tmp_path):
    rep = _run_cli(tmp_path, "--model", "rankmixer-tiny-moe", "--batch-sizes", "16", "--precision", "fp32",
                   "--no-dcn", "--no-moe", "--no-ablations")
    ratios = rep["rankmixer"]["moe_active_ratio_per_block"]
    assert all(abs(r - 0.25) < 0.02 for r in ratios)
    names = {r["name"] for r in rep["rows"]}
    assert {"ours/train/fp32/b16", "ours/infer/fp32/b16", "ours-moe-dense/infer/fp32/b16"} <= names
    assert not any(n.startswith("public/") for n in names)  # no public baseline for MoE
    _check_mfu(rep)


def test_bad_precision_is_a_clear_error(tmp_path):
    from rankmixer.cli import app

    res = CliRunner().invoke(app, ["bench", "speed", "--model", "rankmixer-tiny", "--precision", "fp8",
                                   "--json", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "unknown precision 'fp8'" in res.output


def test_dcn_comparison_tiny():
    from rankmixer.bench.fuxictr_dcnv2 import build_fuxictr_dcnv2, fuxictr_available, run_dcn_comparison

    rep = run_dcn_comparison(precisions=("fp32",), rounds=1, batch_size=32, num_fields=4, vocab_size=20,
                             emb_dim=4, hidden=(8, 8), peaks={"fp32": 10.0}, log=lambda m: None)
    names = {r["name"] for r in rep["rows"]}
    assert {"dcnv2-ours/train/fp32/b32", "dcnv2-ours/infer/fp32/b32"} <= names
    if not fuxictr_available():
        assert "fuxictr is not installed" in rep["setup"]["note"]
        return
    assert "dcnv2-fuxictr/train/fp32/b32" in names
    ours = next(r for r in rep["rows"] if r["name"] == "dcnv2-ours/train/fp32/b32")
    assert "vs_fuxictr_best" in ours
    # matched architecture: the same dense (non-embedding) parameter count as ours
    from rankmixer.data.feature_map import FeatureInfo, FeatureMap
    from rankmixer.models import registry

    fm = FeatureMap(dataset="t", schema_hash="0" * 16, labels=["label"],
                    features=[FeatureInfo(f"f{i}", "sparse", vocab_size=20) for i in range(4)])
    mine = registry.build_model("dcnv2", fm, {"embedding_dim": 4, "num_cross_layers": 3, "dnn_hidden": [8, 8]})
    peer = build_fuxictr_dcnv2(4, 20, 4, 3, (8, 8), torch.device("cpu"))
    dense = lambda m, emb: sum(p.numel() for n, p in m.named_parameters() if not n.startswith(emb))  # noqa: E731
    assert dense(mine, "embedding") == dense(peer, "embedding_layer")


@pytest.mark.slow  # four CLI processes (~2 min on the loaded dev box); the library path is covered above
def test_gpu_script_code_path_on_cpu(tmp_path):
    """scripts/gpu_speed.sh end to end on CPU with tiny sizes (dense and MoE, eager)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_speed.sh"
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "MODELS": "rankmixer-tiny rankmixer-tiny-moe",
           "BATCHES": "8", "TRAIN_BATCH": "8", "TRAIN_BATCH_MOE": "8", "ROUNDS": "1", "COMPILE": "none", "PRECISIONS": "fp32 bf16",
           "PEERS": "0", "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for model in ("rankmixer-tiny", "rankmixer-tiny-moe"):
        rep = json.loads((tmp_path / f"{model}.json").read_text())
        assert rep["setup"]["model"] == model and rep["setup"]["optimizer"] == "rmsprop"
        assert {r["precision"] for r in rep["rows"] if r["kind"] == "train"} == {"fp32", "bf16"}
        _check_mfu(rep)


def test_bench_speed_profiles_every_precision(tmp_path):
    rep = _run_cli(tmp_path, "--model", "rankmixer-tiny", "--batch-sizes", "8", "--train-batch", "8", "--rounds", "1",
                   "--no-dcn", "--no-moe", "--no-baseline", "--no-ablations", "--profile")
    assert set(rep["profile"]) == {"fp32", "bf16"}
    for prof in rep["profile"].values():
        for what in ("train", "infer"):
            top = prof[what]["top"]
            assert top and 0 < sum(e["share"] for e in top) <= 1.0 + 1e-6
            assert any("mm" in e["op"] for e in top)  # the matmuls are among the ops it names
