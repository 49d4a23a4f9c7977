"""Measured ``auto``: the faster kernel is chosen, cached per machine and shape, and used."""

from __future__ import annotations

import copy

import pytest
import torch

from rankmixer.nn.per_token_ffn import PerTokenFFN
from rankmixer.system import auto
from rankmixer.system.history import read_history
from rankmixer.train.config import OptimizerConfig


def test_time_choices_picks_the_fastest_function(monkeypatch):
    """On a fake clock that each call advances by its own cost (no wall-clock timing, which a
    loaded machine makes noisy): the median seconds per call of each function, interleaved."""
    now = [0.0]
    monkeypatch.setattr(auto.time, "perf_counter", lambda: now[0])

    def costs(seconds: float):
        def call() -> None:
            now[0] += seconds
        return call

    seconds = auto.time_choices({"slow": costs(0.004), "fast": costs(0.0005)}, torch.device("cpu"), rounds=3,
                                min_seconds=0.005)
    assert seconds == pytest.approx({"slow": 0.004, "fast": 0.0005})
    assert min(seconds, key=seconds.get) == "fast"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(PerTokenFFN(4, 8, 2), PerTokenFFN(4, 8, 2), PerTokenFFN(4, 8, 2, impl="fused"))


X = torch.randn(16, 4, 8)


def _step(m: torch.nn.Module) -> None:
    m(X).square().mean().backward()


def test_ffn_choice_is_measured_once_then_read_from_the_history(tmp_path, monkeypatch, single_thread):
    path = tmp_path / "history.parquet"
    model = _model()
    calls = []
    real_train, real_infer = auto._time_training, auto._time_inference
    monkeypatch.setattr(auto, "_time_training", lambda *a, **k: calls.append("train") or real_train(*a, **k))
    monkeypatch.setattr(auto, "_time_inference", lambda *a, **k: calls.append("infer") or real_infer(*a, **k))
    choices = auto.measured_ffn_impls(model, 16, "fp32", torch.device("cpu"), _step, path, log=lambda *_: None)
    train_choice = choices[0]["choice"]
    assert train_choice in auto.FFN_CHOICES and set(choices[0]["seconds"]) == set(auto.FFN_CHOICES)
    # one training timing for the model; one inference timing for its one shape unless split won
    assert calls == (["train"] if train_choice == "split" else ["train", "infer"])
    for f in model[:2]:
        if train_choice == "split":
            assert f.impl == "split" and f.measured_impl == {}
        else:
            assert f.measured_impl[(True, torch.float32)] == train_choice
            assert f.measured_impl[(False, torch.float32)] in auto.SHARED_STORAGE
    assert model[2].measured_impl == {} and model[2].impl == "bmm" and model[2].requested_impl == "fused"
    assert all(r["kind"] == "auto" and r["fingerprint"] for r in read_history(path))
    # a second build on this machine reads the choices instead of timing
    fresh = _model()
    auto.measured_ffn_impls(fresh, 16, "fp32", torch.device("cpu"), _step, path, log=lambda *_: None)
    assert len(calls) == len(choices) and fresh[0].measured_impl == model[0].measured_impl and fresh[0].impl == model[0].impl
    # another batch is another key: timed again
    auto.measured_ffn_impls(_model(), 32, "fp32", torch.device("cpu"), _step, path, log=lambda *_: None)
    assert calls.count("train") == 2


@pytest.mark.parametrize("fastest", ["bmm", "fused", "split"])
def test_the_fastest_implementation_is_applied(fastest, tmp_path, monkeypatch, single_thread):
    monkeypatch.setattr(auto, "_time_training", lambda *a: {i: (1.0 if i == fastest else 2.0) for i in auto.FFN_CHOICES})
    monkeypatch.setattr(auto, "_time_inference", lambda *a: {"bmm": 2.0, "fused": 1.0})
    model = _model()
    before = model(X).detach()
    auto.measured_ffn_impls(model, 16, "fp32", torch.device("cpu"), _step, tmp_path / "h.parquet", log=lambda *_: None)
    f = model[0]
    if fastest == "split":
        assert f.impl == "split" and len(list(f.parameters())) == 4 * 4 and f.forward_impl(X) == "split"
    else:
        assert f.impl == "bmm" and f.forward_impl(X) == fastest
        with torch.no_grad():
            assert f.forward_impl(X) == "fused"  # inference: the faster of bmm and fused
    torch.testing.assert_close(model(X), before)  # the same function, whatever runs it


def test_the_real_timing_leaves_the_model_untouched(single_thread):
    model = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = auto._time_training(model, _step, torch.device("cpu"))
    assert set(seconds) == set(auto.FFN_CHOICES) and all(v > 0 for v in seconds.values())
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    assert [f.requested_impl for f in model] == ["auto", "auto", "fused"]


def test_the_real_timing_runs_every_implementation(single_thread, monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(PerTokenFFN(4, 8, 2), PerTokenFFN(4, 8, 2))
    ran = []
    real = PerTokenFFN.forward_impl
    monkeypatch.setattr(PerTokenFFN, "forward_impl", lambda self, x: ran.append(real(self, x)) or ran[-1])
    auto._time_training(model, _step, torch.device("cpu"))
    counts = {impl: ran.count(impl) for impl in auto.FFN_CHOICES}
    # warm-up and 3 rounds, 2 layers each: every implementation ran at least 8 times
    assert set(ran) == set(auto.FFN_CHOICES) and min(counts.values()) >= 8, counts


@pytest.mark.parametrize("choice", ["bmm", "fused"])
def test_the_measured_choice_is_what_runs_and_computes_the_same(choice, single_thread):
    ffn = PerTokenFFN(4, 8, 2)
    x = torch.randn(5, 4, 8)
    ffn.measured_impl = {(True, torch.float32): choice, (False, torch.float32): choice}
    assert ffn.forward_impl(x) == choice
    with torch.no_grad():
        assert ffn.forward_impl(x) == choice
    ref = PerTokenFFN(4, 8, 2, impl="split")
    ref.load_stacked(*[w.detach() for w in ffn.stacked_weights()])
    torch.testing.assert_close(ffn(x), ref(x))


def test_split_storage_saves_and_loads_the_stacked_layout(single_thread):
    torch.manual_seed(0)
    a = PerTokenFFN(3, 4, 2)
    b = copy.deepcopy(a)
    b.set_storage("split")
    x = torch.randn(5, 3, 4)
    torch.testing.assert_close(a(x), b(x))
    # an auto module saves stacked keys whatever its storage: checkpoints load into any build
    assert set(b.state_dict()) == set(a.state_dict()) == {"w1", "b1", "w2", "b2"}
    fresh_split = PerTokenFFN(3, 4, 2)
    fresh_split.set_storage("split")
    fresh_split.load_state_dict(a.state_dict())
    torch.testing.assert_close(fresh_split(x), a(x))
    fresh = PerTokenFFN(3, 4, 2)
    fresh.load_state_dict(b.state_dict())
    torch.testing.assert_close(fresh(x), a(x))
    # a module that asked for split keeps its own layout, and the stacked one loads into it
    asked = PerTokenFFN(3, 4, 2, impl="split")
    assert "w1.0" in asked.state_dict()
    asked.load_state_dict(a.state_dict())
    torch.testing.assert_close(asked(x), a(x))
    a.load_state_dict(PerTokenFFN(3, 4, 2, impl="split").state_dict())  # and the other way round
    b.set_storage("stacked")
    assert b.impl == "bmm" and isinstance(b.w1, torch.nn.Parameter)
    with pytest.raises(ValueError, match="stacked or split"):
        b.set_storage("bmm")


def test_optimizer_kernel_is_measured_and_cached(tmp_path, single_thread):
    path = tmp_path / "history.parquet"
    params = [torch.nn.Parameter(torch.randn(64, 64)) for _ in range(3)]
    before = [p.detach().clone() for p in params]
    cfg = OptimizerConfig(name="adamw", lr=1e-3)
    choice = auto.measured_optimizer_impl(cfg, params, torch.device("cpu"), path, log=lambda *_: None)
    assert choice in auto.OPTIM_CHOICES
    for p, b in zip(params, before):
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=0)  # timed on copies
    rec = read_history(path)[-1]
    assert rec["setting"]["choice"] == choice and set(rec["setting"]["seconds"]) == set(auto.OPTIM_CHOICES)
    assert auto.measured_optimizer_impl(cfg, params, torch.device("cpu"), path, log=lambda *_: None) == choice
    assert len(read_history(path)) == 1
    # rmsprop has no fused kernel: only foreach and the loop are timed
    auto.measured_optimizer_impl(OptimizerConfig(name="rmsprop", lr=1e-3), params, torch.device("cpu"), path,
                                 log=lambda *_: None)
    assert set(read_history(path)[-1]["setting"]["seconds"]) == {"foreach", "forloop"}
    assert auto.measured_optimizer_impl(OptimizerConfig(name="sparse_adam", lr=1e-3), params, torch.device("cpu"),
                                        path) is None
    # a frozen parameter (FuxiCTR's DLRM keeps its boolean triangle mask as one) is not timed
    mask = torch.nn.Parameter(torch.ones(4, 4, dtype=torch.bool), requires_grad=False)
    fresh = tmp_path / "fresh.parquet"
    assert auto.measured_optimizer_impl(cfg, [mask, *params], torch.device("cpu"), fresh,
                                        log=lambda *_: None) in auto.OPTIM_CHOICES
    assert read_history(fresh)[-1]["setting"]["tensors"] == 3
    assert auto.measured_optimizer_impl(cfg, [mask], torch.device("cpu"), fresh) is None  # nothing it updates


def test_training_applies_the_measured_choices(tmp_path, monkeypatch):
    from rankmixer.config import load_config
    from rankmixer.experiment import train
    from tests.factories import TINY_DATA

    monkeypatch.setenv("RANKMIXER_SYSTEM_HISTORY", str(tmp_path / "history.parquet"))

    def cfg(run: str, *extra: str):
        return load_config(None, [
            "data.dataset=synthetic", f"data.preset_options={TINY_DATA}", f"data.prepared_dir={tmp_path / 'prep'}",
            f"run_dir={tmp_path / run}", "model.name=rankmixer", "model.num_tokens=4", "model.hidden_dim=8",
            "model.num_layers=1", "model.embedding_dim=4", "train.max_steps=2", "train.batch_size=64",
            "train.tensorboard=false", "train.progress=false", "train.early_stopping=null", "train.threads=1", *extra])

    result = train(cfg("a"), log=lambda *_: None)
    ffn = [c for c in result["measured_auto"] if c["component"] == "per_token_ffn"]
    assert ffn[0]["training"] and len(ffn) == (1 if ffn[0]["choice"] == "split" else 2)
    assert [c["component"] for c in result["measured_auto"]].count("optimizer") == 1
    assert len(read_history(tmp_path / "history.parquet")) == len(ffn) + 1
    off = train(cfg("b", "train.measured_auto=false"), log=lambda *_: None)
    assert off["measured_auto"] == []


def test_a_resumed_run_keeps_the_kernels_its_checkpoints_were_written_under(tmp_path, monkeypatch):
    from rankmixer.config import load_config
    from rankmixer.core.rundir import MEASURED_AUTO_FILE
    from rankmixer.experiment import train
    from tests.factories import TINY_DATA

    history = tmp_path / "history.parquet"
    monkeypatch.setenv("RANKMIXER_SYSTEM_HISTORY", str(history))
    monkeypatch.setattr(auto, "_time_training", lambda *a: {"bmm": 2.0, "fused": 2.0, "split": 1.0})

    def cfg(steps: int):
        return load_config(None, [
            "data.dataset=synthetic", f"data.preset_options={TINY_DATA}", f"data.prepared_dir={tmp_path / 'prep'}",
            f"run_dir={tmp_path / 'run'}", "model.name=rankmixer", "model.num_tokens=4", "model.hidden_dim=8",
            "model.num_layers=1", "model.embedding_dim=4", f"train.max_steps={steps}", "train.batch_size=64",
            "train.checkpoint_every_steps=2", "train.tensorboard=false", "train.progress=false",
            "train.early_stopping=null", "train.threads=1"])

    first = train(cfg(4), log=lambda *_: None)
    assert first["measured_auto"][0]["choice"] == "split"
    assert (tmp_path / "run" / MEASURED_AUTO_FILE).is_file()
    # the cache is gone and a new timing would pick another storage: the resumed run must not
    # time again (its optimizer state holds the split parameters)
    history.unlink()

    def must_not_time(*a):
        raise AssertionError("a resumed run timed its kernels again")

    monkeypatch.setattr(auto, "_time_training", must_not_time)
    resumed = train(cfg(4), resume=True, log=lambda *_: None)  # from its last checkpoint
    assert resumed["measured_auto"] == first["measured_auto"]
