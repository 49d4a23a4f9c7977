"""State dicts as JSON plus tensors, and the RNG states a checkpoint saves: the encoding
:mod:`rankmixer.train.checkpoint` writes into ``state.json`` and ``optim.safetensors``."""

from __future__ import annotations

import random
import warnings
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = ["MissingTensor", "decode_state", "encode_state", "rng_state", "set_rng_state"]

# Markers of the JSON encoding of state dicts (see encode_state).
_T_TENSOR = "__tensor__"
_T_TUPLE = "__tuple__"
_T_DICT = "__dict__"


class MissingTensor(KeyError):
    """The encoded state names a tensor that is not among the tensors given."""


# ---- JSON encoding of state dicts -----------------------------------------------------------
#
# Optimizer and scheduler state dicts mix tensors, tuples (Adam's betas), int dict keys (param
# indices) and plain scalars. JSON has none of the first three, and a list where torch expects a
# tuple (random.setstate, for one) breaks restore, so they are tagged explicitly.


def encode_state(obj: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    """``obj`` as JSON-able data; its tensors go into ``tensors`` under their path (``path``
    names ``obj``), replaced by ``{"__tensor__": <path>}``."""
    if isinstance(obj, Tensor):
        if obj.layout != torch.strided:
            raise TypeError(f"{path}: {obj.layout} tensors are not supported in checkpoints")
        if path in tensors:
            raise ValueError(f"two state entries map to the tensor name {path!r}")
        tensors[path] = obj.detach().to("cpu").contiguous()
        return {_T_TENSOR: path}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, float, str)):
        return obj
    if isinstance(obj, np.generic):  # np.float32 metrics etc. in the trainer state
        return obj.item()
    if isinstance(obj, tuple):
        return {_T_TUPLE: [encode_state(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_state(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj):
            return {k: encode_state(v, f"{path}/{k}", tensors) for k, v in obj.items()}
        return {
            _T_DICT: [
                [encode_state(k, f"{path}/<key>", {}), encode_state(v, f"{path}/{k}", tensors)]
                for k, v in obj.items()
            ]
        }
    raise TypeError(f"{path}: cannot store a {type(obj).__name__} in a checkpoint")


def decode_state(obj: Any, tensors: Mapping[str, Tensor], used: set[str]) -> Any:
    """The inverse of :func:`encode_state`; the tensor names it reads are added to ``used``."""
    if isinstance(obj, list):
        return [decode_state(v, tensors, used) for v in obj]
    if isinstance(obj, dict):
        if len(obj) == 1:
            ((tag, val),) = obj.items()
            if tag == _T_TENSOR:
                if val not in tensors:
                    raise MissingTensor(val)
                used.add(val)
                return tensors[val]
            if tag == _T_TUPLE:
                return tuple(decode_state(v, tensors, used) for v in val)
            if tag == _T_DICT:
                return {
                    _hashable(decode_state(k, tensors, used)): decode_state(v, tensors, used)
                    for k, v in val
                }
        return {k: decode_state(v, tensors, used) for k, v in obj.items()}
    return obj


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


# ---- RNG ----------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python's, NumPy's, torch's (and CUDA's, when in use) RNG states."""
    # Python's and numpy's Mersenne Twister states are 624-625 ints: stored as int64 tensors
    # rather than as thousands of JSON numbers.
    py_version, py_internal, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch_cpu": torch.get_rng_state(),
    }
    # Only when CUDA is already in use: asking would otherwise initialise it on CPU-only runs.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch_cpu"].to(torch.uint8))
    cuda = state.get("torch_cuda")
    if cuda and torch.cuda.is_available():
        if torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in cuda])
        else:
            warnings.warn(
                f"checkpoint has CUDA RNG states for {len(cuda)} devices, this process sees "
                f"{torch.cuda.device_count()}: CUDA RNG not restored",
                stacklevel=3,
            )
