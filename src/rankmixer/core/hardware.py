"""This machine: device choice, autocast, and whether a precision is fast here.

The same setting can be fast on one machine and a trap on another: a bf16 matmul runs on AMX or
AVX512-BF16 units where the CPU has them (several times fp32's rate) and is emulated where it
has not (AVX2-only CPUs: about 50x slower than fp32). :func:`precision_warning` says so before a
run starts; every benchmark records :func:`machine_info` so numbers are compared only within a
machine.
"""

from __future__ import annotations

import hashlib
import os
import platform
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import ContextManager

import torch

__all__ = [
    "PRECISIONS", "autocast", "cpu_flags", "device_name", "hardware_features", "hardware_fingerprint", "machine_info",
    "native_low_precision", "pick_device", "precision_warning",
]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# CPU flags that decide low-precision matmul speed (recorded in every benchmark JSON).
_SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "amx_tile")


@lru_cache(maxsize=1)
def _all_cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):  # x86 / ARM
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_flags() -> list[str]:
    """The CPU flags that matter for matmul speed (AVX2, AVX512, BF16/FP16, AMX), sorted."""
    return sorted(f for f in _all_cpu_flags() if f in _SPEED_FLAGS or f.startswith("amx"))


def native_low_precision(precision: str, device: torch.device) -> bool:
    """True if ``precision`` matmuls run on native units of ``device`` (not emulated).

    CPU bf16: AMX-BF16 or AVX512-BF16 (oneDNN's fast kernels); fp16: AMX-FP16 or AVX512-FP16.
    CUDA: bf16 from compute capability 8.0, fp16 everywhere. fp32 is always native. Where
    ``/proc/cpuinfo`` is unreadable (not Linux) the answer is True: unknown is not slow."""
    if precision == "fp32":
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    flags = _all_cpu_flags()
    if not flags:
        return True
    if precision == "bf16":
        return bool(flags & {"amx_bf16", "avx512_bf16"})
    if precision == "fp16":
        return bool(flags & {"amx_fp16", "avx512_fp16"})
    raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")


def precision_warning(precision: str, device: torch.device) -> str | None:
    """A sentence for the user when ``precision`` is emulated (slow) on ``device``, else None."""
    if native_low_precision(precision, device):
        return None
    have = ", ".join(cpu_flags()) or "none of the relevant flags"
    return (f"precision {precision} has no native support on this CPU (flags: {have}): its matmuls are "
            f"emulated and can be tens of times slower than fp32; use precision fp32 here")


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda`` (an error without CUDA)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no CUDA device is available (this torch: "
                         f"{torch.__version__}); use device auto or cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The autocast context of a precision (fp32: none)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model with its core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} CPUs)"


def machine_info(device: torch.device | None = None) -> dict:
    """What every benchmark JSON records about where it ran."""
    device = device or torch.device("cpu")
    return {
        "device": device.type,
        "device_name": device_name(device),
        "cpu_flags": cpu_flags(),
        "native_bf16": native_low_precision("bf16", device),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def hardware_features(device: torch.device | None = None) -> dict:
    """What decides a training step's speed on this machine, as predictor inputs: the device
    name, core count, the speed-relevant CPU flags (one 0/1 entry each) and the torch version."""
    device = device or torch.device("cpu")
    flags = set(cpu_flags())
    return {"device_name": device_name(device), "cpus": os.cpu_count() or 1, "torch": torch.__version__,
            **{f"flag_{f}": int(f in flags) for f in _SPEED_FLAGS}}


def hardware_fingerprint(device: torch.device | None = None) -> str:
    """A short stable id of :func:`hardware_features`: measurements cached under one fingerprint
    are reused only on a machine that has the same one."""
    feats = hardware_features(device)
    text = "|".join(f"{k}={feats[k]}" for k in sorted(feats))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
