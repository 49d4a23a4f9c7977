"""The machine: native low-precision detection, the warning a user gets where bf16 is emulated,
device choice and autocast. The CPU's flags are replaced here to play both kinds of machine."""

from __future__ import annotations

import pytest
import torch

from rankmixer.core import hardware

AVX2_ONLY = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"})
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512_bf16"}
AMX = AVX2_ONLY | {"avx512f", "amx_tile", "amx_bf16"}


@pytest.fixture
def flags(monkeypatch):
    def use(found: frozenset[str]) -> None:
        monkeypatch.setattr(hardware, "_all_cpu_flags", lambda: found)

    return use


@pytest.mark.parametrize("found,native", [(AVX2_ONLY, False), (AVX512_BF16, True), (AMX, True)])
def test_bf16_is_native_only_with_avx512_bf16_or_amx(flags, found, native):
    flags(found)
    cpu = torch.device("cpu")
    assert hardware.native_low_precision("bf16", cpu) is native
    assert hardware.native_low_precision("fp32", cpu) is True
    warning = hardware.precision_warning("bf16", cpu)
    assert (warning is None) is native
    if not native:
        assert "emulated" in warning and "avx2" in warning and "fp32" in warning


def test_unreadable_cpu_flags_are_not_called_slow(flags):
    flags(frozenset())
    assert hardware.native_low_precision("bf16", torch.device("cpu")) is True


def test_speed_flags_listed_and_unknown_precision_refused(flags):
    flags(AMX)
    assert hardware.cpu_flags() == ["amx_bf16", "amx_tile", "avx2", "avx512f"]
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        hardware.native_low_precision("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown precision"):
        hardware.autocast("int4", torch.device("cpu"))


def test_device_choice():
    assert hardware.pick_device("cpu") == torch.device("cpu")
    assert hardware.pick_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        hardware.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            hardware.pick_device("cuda")


def test_autocast_runs_bf16_matmuls_and_fp32_is_untouched():
    x = torch.randn(4, 8)
    with hardware.autocast("bf16", torch.device("cpu")):
        assert (x @ x.T).dtype == torch.bfloat16
    with hardware.autocast("fp32", torch.device("cpu")):
        assert (x @ x.T).dtype == torch.float32


def test_machine_info_records_what_benchmarks_need(flags):
    flags(AVX2_ONLY)
    info = hardware.machine_info()
    assert info["cpu_flags"] == ["avx2"] and info["native_bf16"] is False
    assert {"device_name", "threads", "torch", "loadavg"} <= set(info)


def test_training_in_bf16_on_a_cpu_without_it_warns(flags, tmp_path):
    """`train.precision: bf16` on an AVX2-only CPU: the run says so before it starts (and still
    runs, in the precision the user asked for)."""
    from rankmixer import experiment
    from rankmixer.config import load_config

    flags(AVX2_ONLY)
    small = {"rows_train": 600, "rows_valid": 200, "rows_test": 200, "n_users": 50, "n_items": 60,
             "vocab_max": 100, "n_tags": 20, "seq_len": 4, "n_categorical": 4, "n_dense": 2}
    cfg = load_config(None, [
        "data.dataset=synthetic", f"data.preset_options={small}", f"data.prepared_dir={tmp_path / 'data'}",
        f"run_dir={tmp_path / 'run'}", "model.name=lr", "train.precision=bf16", "train.max_steps=2",
        "train.batch_size=100", "train.progress=false", "train.tensorboard=false", "train.threads=1",
    ])
    lines: list[str] = []
    result = experiment.train(cfg, log=lines.append)
    warnings = [ln for ln in lines if "warning: train.precision bf16" in ln]
    assert len(warnings) == 1 and "emulated" in warnings[0]
    assert result["steps"] == 2
