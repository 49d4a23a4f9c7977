"""bench speed: its code path on tiny sizes (no timing asserted; every matmul small, so the file
runs in seconds on any x86 CPU, bf16 emulated or not), the public-style baseline as a loop
reference of our block, the inference weight cache, the optimizer kernels. The harness's
arithmetic (MFU, peaks, percentiles, precision choice) is in test_harness.py."""

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


TINY_PEAK = ["--peak-shape", "32x32x32"]  # the default 2048^3 bf16 peak takes minutes where bf16 is emulated


def _run_cli(tmp_path, *args):
    from rankmixer.cli import app

    out = tmp_path / "speed.json"
    res = CliRunner().invoke(app, ["bench", "speed", *args, *TINY_PEAK, "--rounds", "1", "--threads", "1",
                                   "--json", str(out)])
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text()), res.output


def _check_rows(report):
    """Every timed row against its own unrounded seconds: rates, and MFU over the ONE stated peak
    of its precision (the report's peak_gflops), exactly as rounded for the JSON."""
    peaks = report["peak_gflops"]
    for r in report["rows"]:
        if r["kind"] in ("peak", "optim"):
            continue
        best, med = r["seconds_best"], r["seconds_median"]
        assert 0 < best <= med
        assert r["samples_per_s_best"] == round(r["batch"] / best, 1)
        assert r["achieved_gflops_best"] == round(r["flops_per_call"] / best / 1e9, 2)
        assert r["achieved_gflops_median"] == round(r["flops_per_call"] / med / 1e9, 2)
        assert r["peak_gflops"] == peaks[r["precision"]]
        assert r["mfu_best"] == round(r["flops_per_call"] / best / 1e9 / peaks[r["precision"]], 4)
        assert r["mfu_median"] == round(r["flops_per_call"] / med / 1e9 / peaks[r["precision"]], 4)
        assert r["mfu_median"] <= r["mfu_best"]
        assert r["memory"]["peak_mb"] is None or r["memory"]["peak_mb"] > 0
    assert "peak_gflops[precision]" in report["mfu_definition"]


def test_bench_speed_tiny_end_to_end(tmp_path):
    rep, _ = _run_cli(tmp_path, "--model", "rankmixer-tiny", "--batch-sizes", "4,8", "--train-batch", "8",
                      "--precision", "fp32", "--precision", "bf16", "--no-dcn", "--no-moe")
    assert set(rep["peak_gflops"]) == {"fp32", "bf16"} and all(v > 0 for v in rep["peak_gflops"].values())
    assert rep["setup"]["peak_shapes"] == [[32, 32, 32]]
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
    _check_rows(rep)
    assert len(rep["setup"]["loadavg_start"]) == 3 and len(rep["setup"]["loadavg_end"]) == 3
    machine = rep["setup"]["machine"]
    assert {"cpu_flags", "native_bf16", "device_name", "threads"} <= set(machine) and machine["threads"] == 1


def test_bench_speed_tiny_moe_sparse_vs_dense(tmp_path):
    rep, _ = _run_cli(tmp_path, "--model", "rankmixer-tiny-moe", "--batch-sizes", "16", "--precision", "fp32",
                      "--no-dcn", "--no-moe", "--no-ablations")
    ratios = rep["rankmixer"]["moe_active_ratio_per_block"]
    assert all(abs(r - 0.25) < 0.02 for r in ratios)
    names = {r["name"] for r in rep["rows"]}
    assert {"ours/train/fp32/b16", "ours/infer/fp32/b16", "ours-moe-dense/infer/fp32/b16"} <= names
    assert not any(n.startswith("public/") for n in names)  # no public baseline for MoE
    _check_rows(rep)


def _flags(monkeypatch, *flags):
    """Pretend the CPU has exactly these flags (the hardware module's /proc/cpuinfo reader)."""
    from rankmixer.core import hardware

    monkeypatch.setattr(hardware, "_all_cpu_flags", lambda: frozenset(flags))


def test_without_native_bf16_the_default_drops_bf16_with_a_message(tmp_path, monkeypatch):
    _flags(monkeypatch, "fpu", "avx2")  # an AVX2-only x86 CPU: no avx512_bf16, no AMX
    rep, output = _run_cli(tmp_path, "--model", "rankmixer-tiny", "--batch-sizes", "4", "--no-dcn", "--no-moe",
                           "--no-baseline", "--no-ablations")
    assert rep["setup"]["precisions"] == ["fp32"] and set(rep["peak_gflops"]) == {"fp32"}
    assert {r["precision"] for r in rep["rows"]} == {"fp32"}
    assert rep["setup"]["machine"]["native_bf16"] is False and rep["setup"]["machine"]["cpu_flags"] == ["avx2"]
    assert "WARNING: precision bf16 has no native support" in output and "Dropped bf16" in output


def test_without_native_bf16_an_explicit_bf16_runs_with_a_warning(tmp_path, monkeypatch):
    _flags(monkeypatch, "avx2")
    rep, output = _run_cli(tmp_path, "--model", "rankmixer-tiny", "--batch-sizes", "4", "--precision", "bf16",
                           "--no-dcn", "--no-moe", "--no-baseline", "--no-ablations")
    assert {r["precision"] for r in rep["rows"] if r["kind"] != "optim"} == {"bf16"}
    assert "WARNING: precision bf16 has no native support" in output and "Timing bf16 as asked" in output


def test_with_native_bf16_the_default_keeps_it(tmp_path, monkeypatch):
    _flags(monkeypatch, "avx2", "avx512f", "avx512_bf16")
    rep, output = _run_cli(tmp_path, "--model", "rankmixer-tiny", "--batch-sizes", "4", "--no-dcn", "--no-moe",
                           "--no-baseline", "--no-ablations")
    assert rep["setup"]["precisions"] == ["fp32", "bf16"] and "WARNING" not in output


@pytest.mark.parametrize("args, message", [
    (["--precision", "fp8"], "unknown precision 'fp8'"),
    (["--peak-shape", "32x32"], "expected MxKxN"),
])
def test_bad_options_are_clear_errors(tmp_path, args, message):
    from rankmixer.cli import app

    res = CliRunner().invoke(app, ["bench", "speed", "--model", "rankmixer-tiny", *args,
                                   "--json", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and message in res.output


def _dcnv2_forward_flops(in_dim: int, cross_layers: int, hidden) -> int:
    """Hand count, the reference for the counter: full-rank cross layers, the DNN, one logit."""
    widths = [in_dim, *hidden]
    dnn = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    return cross_layers * 2 * in_dim * in_dim + dnn + 2 * (in_dim + widths[-1])


def test_dcn_comparison_tiny():
    from rankmixer.bench.fuxictr_dcnv2 import fuxictr_available, run_dcn_comparison

    rep = run_dcn_comparison(precisions=("fp32",), rounds=1, batch_size=32, num_fields=4, vocab_size=20,
                             emb_dim=4, hidden=(8, 8), peaks={"fp32": 10.0}, log=lambda m: None)
    names = {r["name"] for r in rep["rows"]}
    assert {"dcnv2-ours/train/fp32/b32", "dcnv2-ours/infer/fp32/b32", "dcnv2-ours-sparsegrad/train/fp32/b32"} <= names
    # FLOPs counted on the model: the hand formula forward, 3x forward for a step (every
    # matmul's input gradient is needed: the embeddings train)
    fwd = _dcnv2_forward_flops(4 * 4, 3, (8, 8))
    flops = rep["setup"]["flops_per_sample"]
    assert flops["dcnv2-ours"] == {"forward_per_sample": fwd, "train_per_sample": 3 * fwd}
    train = next(r for r in rep["rows"] if r["name"] == "dcnv2-ours/train/fp32/b32")
    assert train["flops_per_call"] == 3 * fwd * 32 and train["peak_gflops"] == 10.0
    assert train["mfu_best"] == round(3 * fwd * 32 / train["seconds_best"] / 1e9 / 10.0, 4)
    if not fuxictr_available():
        assert "fuxictr is not installed" in rep["setup"]["note"]
        return
    assert {"dcnv2-fuxictr/train/fp32/b32", "dcnv2-fuxictr/infer/fp32/b32",
            "dcnv2-fuxictr-ourstep/train/fp32/b32"} <= names
    assert flops["dcnv2-fuxictr"] == flops["dcnv2-ours"]  # the same architecture, counted on FuxiCTR's layers
    ours = next(r for r in rep["rows"] if r["name"] == "dcnv2-ours/train/fp32/b32")
    assert "vs_fuxictr_best" in ours
    assert "vs_fuxictr_best" in next(r for r in rep["rows"] if r["name"] == "dcnv2-fuxictr-ourstep/train/fp32/b32")


def test_fuxictr_base_model_runs_fuxictrs_own_step_on_the_registered_network():
    pytest.importorskip("fuxictr")
    from rankmixer.bench.fuxictr_dcnv2 import bench_feature_map, fuxictr_base_model
    from rankmixer.data.batch import Batch
    from rankmixer.models import registry

    torch.manual_seed(0)
    net = registry.build_model("fuxictr-dcnv2", bench_feature_map(4, 20), {"embedding_dim": 4, "dnn_hidden": [8]})
    peer = fuxictr_base_model(net, torch.device("cpu"))
    assert type(peer.optimizer).__name__ == "Adam" and peer.net is net
    batch = Batch(dense=torch.zeros(16, 0), sparse=torch.randint(1, 20, (16, 4)), labels=torch.ones(16, 1))
    before = [p.detach().clone() for p in net.parameters()]
    loss = peer.train_step(batch)
    # FuxiCTR's step: BCE of its sigmoid output against our labels, then an Adam update of the net
    with torch.no_grad():
        expect = torch.nn.functional.binary_cross_entropy(torch.sigmoid(_logits(net, before, batch)), batch.labels)
    torch.testing.assert_close(loss.detach(), expect)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def _logits(net, params, batch):
    """``net``'s logits with ``params`` swapped in (the weights before the step)."""
    from torch.func import functional_call

    names = [n for n, _ in net.named_parameters()]
    return functional_call(net, dict(zip(names, params)), (batch,)).logits


@pytest.mark.slow  # four CLI processes (~2 min on the loaded dev box); the library path is covered above
def test_gpu_script_code_path_on_cpu(tmp_path):
    """scripts/gpu_speed.sh end to end on CPU with tiny sizes (dense and MoE, eager)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_speed.sh"
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "MODELS": "rankmixer-tiny rankmixer-tiny-moe",
           "BATCHES": "8", "TRAIN_BATCH": "8", "TRAIN_BATCH_MOE": "8", "ROUNDS": "1", "COMPILE": "none",
           "PRECISIONS": "fp32 bf16", "PEAK_SHAPES": "32x32x32", "PEERS": "0", "OUT": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for model in ("rankmixer-tiny", "rankmixer-tiny-moe"):
        rep = json.loads((tmp_path / f"{model}.json").read_text())
        assert rep["setup"]["model"] == model and rep["setup"]["optimizer"] == "rmsprop"
        assert {r["precision"] for r in rep["rows"] if r["kind"] == "train"} == {"fp32", "bf16"}
        _check_rows(rep)


def test_bench_speed_profiles_every_precision(tmp_path):
    rep, _ = _run_cli(tmp_path, "--model", "rankmixer-tiny", "--batch-sizes", "8", "--train-batch", "8",
                      "--precision", "fp32", "--precision", "bf16", "--no-dcn", "--no-moe", "--no-baseline",
                      "--no-ablations", "--profile")
    assert set(rep["profile"]) == {"fp32", "bf16"}
    for prof in rep["profile"].values():
        for what in ("train", "infer"):
            top = prof[what]["top"]
            assert top and 0 < sum(e["share"] for e in top) <= 1.0 + 1e-6
            assert any("mm" in e["op"] for e in top)  # the matmuls are among the ops it names


@pytest.mark.slow  # five CLI stages (~40 s alone on 2 cores)
def test_gpu_checks_script_stages_on_cpu(tmp_path):
    """scripts/gpu_checks.sh on CPU with tiny sizes: every stage runs, writes its JSON, and the
    packed archive holds them (what comes back from a GPU machine even when a stage times out)."""
    import os
    import subprocess
    import sys
    import tarfile
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_checks.sh"
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "SMALL": "1", "OUT": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    stages = (tmp_path / "gpu_checks" / "stages.txt").read_text()
    for name in ("env", "speed_100m", "speed_1b", "seqlen", "moe"):
        assert f"{name} rc=0" in stages, stages
    with tarfile.open(tmp_path / "gpu_checks.tgz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"speed_100m.json", "speed_1b.json", "sequence_length.json", "speed_100m_moe.json"} <= names
    rep = json.loads((tmp_path / "gpu_checks" / "speed_1b.json").read_text())
    assert {r["precision"] for r in rep["rows"] if r["kind"] == "train"} == {"fp32", "bf16"}
