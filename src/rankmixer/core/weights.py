"""Model weights as one safetensors file: written atomically, checked on read, never pickled.

Used by training (the best model, checkpoints' model files) and by serving (eager artifacts),
which must not import each other: both come here.

A weights file stores each distinct tensor once (tied weights become aliases in the metadata)
and a sha256 over names, dtypes, shapes and bytes, so :func:`load_weights` refuses a corrupted
file by name before touching the model. Unpickling runs arbitrary code; safetensors is data.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from rankmixer.core.files import atomic_file

__all__ = [
    "WeightsError",
    "save_weights",
    "load_weights",
    "write_model_file",
    "read_safetensors",
    "state_dict_for",
]

# safetensors metadata keys (str -> str) written into model files.
META_ALIASES = "rankmixer.aliases"
META_DIGEST = "rankmixer.tensor_sha256"


class WeightsError(RuntimeError):
    """A weights file is unusable: missing, corrupted, or not matching the model."""


# ---- model tensors ----------------------------------------------------------------------------


def _model_tensors(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, str]]:
    """CPU tensors to store, one per distinct tensor, and {alias name: stored name}.

    Tied weights (an output layer sharing the embedding table) appear under several names in
    the state dict; safetensors refuses shared memory, and storing them once keeps the tie
    explicit. Partial overlaps (different views of one storage) are stored as copies.
    """
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    exact: dict[tuple, str] = {}
    seen_storage: set[tuple] = set()
    for name, t in model.state_dict().items():
        t = t.detach()
        if t.numel() > 0:
            sp = (t.device, t.untyped_storage().data_ptr())
            key = (*sp, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
            if key in exact:
                aliases[name] = exact[key]
                continue
            exact[key] = name
            if sp in seen_storage:
                t = t.clone()
            seen_storage.add(sp)
        tensors[name] = t.to("cpu").contiguous()
    return tensors, aliases


def _tensor_digest(tensors: Mapping[str, Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes: lets a bare weights file check itself."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def write_model_file(path: Path, model: nn.Module, digest: bool) -> None:
    """The model's state dict into ``path`` (not atomic: callers write to a temp name)."""
    tensors, aliases = _model_tensors(model)
    meta = {"format": "pt", META_ALIASES: json.dumps(aliases, sort_keys=True)}
    if digest:
        meta[META_DIGEST] = _tensor_digest(tensors)
    save_file(tensors, str(path), metadata=meta)


def read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, or WeightsError naming the file."""
    if not path.is_file():
        raise WeightsError(f"{path}: file is missing")
    try:
        tensors = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # SafetensorError, OSError, header JSON errors ...
        raise WeightsError(f"{path}: cannot be parsed as safetensors ({e})") from e
    return tensors, meta


def state_dict_for(
    path: Path, model: nn.Module, tensors: dict[str, Tensor], meta: Mapping[str, str]
) -> dict[str, Tensor]:
    """State dict for ``model`` from a model file's tensors, or WeightsError listing every
    mismatch (missing and unexpected keys, shapes)."""
    try:
        aliases = json.loads(meta.get(META_ALIASES, "{}"))
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: malformed {META_ALIASES} metadata ({e})") from e
    sd = dict(tensors)
    for alias, target in aliases.items():
        if target not in tensors:
            raise WeightsError(f"{path}: alias {alias!r} points to absent tensor {target!r}")
        sd[alias] = tensors[target]
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and sd[k].shape != v.shape
    ]
    problems = []
    for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
            problems.append(f"{what}: {', '.join(items[:10])}{more}")
    if problems:
        raise WeightsError(f"{path} does not match the model; " + "; ".join(problems))
    return sd


def save_weights(path: str | os.PathLike, model: nn.Module) -> Path:
    """Write the model's state dict to one safetensors file, atomically (temp file, fsync,
    rename). The file carries a sha256 of its tensors, which :func:`load_weights` checks."""
    path = Path(path)
    with atomic_file(path) as tmp:
        write_model_file(tmp, model, digest=True)
    return path


def load_weights(path: str | os.PathLike, model: nn.Module) -> None:
    """Load a file written by :func:`save_weights` (or a checkpoint's model file) into ``model``.

    Raises WeightsError naming the file if it is missing, unparsable, fails its tensor checksum,
    or does not match the model's keys and shapes; the model is untouched then.
    """
    path = Path(path)
    tensors, meta = read_safetensors(path)
    want = meta.get(META_DIGEST)
    if want is not None:
        got = _tensor_digest(tensors)
        if got != want:
            raise WeightsError(
                f"{path}: tensor checksum mismatch (expected {want}, got {got}); file is corrupted"
            )
    model.load_state_dict(state_dict_for(path, model, tensors, meta), strict=True)
