"""Training checkpoints in safetensors (never pickle) that resume bit-identically.

Layout::

    <run_dir>/checkpoints/step_<8-digit step>/
        model.safetensors   model state dict (tied tensors stored once, aliases in the metadata)
        optim.safetensors   every tensor of the optimizer and scheduler state dicts, named
                            ``optim/<name>/state/<idx>/<key>``, ``sched/<name>/...``; RNG state
                            tensors under ``rng/...``; tensors of the trainer state under
                            ``trainer/...``
        state.json          everything else: the non-tensor parts of those state dicts (with
                            tensors replaced by ``{"__tensor__": "<name>"}``) and the caller's
                            trainer state
        manifest.json       the sha256 and size of every other file, state.json included

Why not ``torch.save``: unpickling runs arbitrary code, so a checkpoint downloaded or shared
between users would be a code-execution vector; safetensors files are plain data.

Atomicity: everything is written into a hidden temp directory inside ``checkpoints/``, fsynced,
then renamed onto ``step_XXXXXXXX`` with one ``os.replace``. A process killed mid-write leaves
only a ``.tmp-*`` directory, which :func:`latest_checkpoint` never returns. A bit flip, a
truncated or missing file or an edited state.json is caught on load by the manifest's sha256,
before anything is modified; :func:`load_latest` then reports it and falls back to the newest
intact checkpoint. (Format 1 checkpoints, without a manifest, hashed only the .safetensors files
in state.json; they still load.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from rankmixer.core.files import fsync_dir, fsync_file, sha256_file, unique_suffix
from rankmixer.core.weights import WeightsError, read_safetensors, state_dict_for, write_model_file
from rankmixer.train.state_codec import MissingTensor, decode_state, encode_state, rng_state, set_rng_state

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "load_latest",
    "verify_checkpoint",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "OPTIM_FILE",
    "STATE_FILE",
]

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.safetensors"
STATE_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
CHECKPOINTS_DIR = "checkpoints"
FORMAT_VERSION = 2
LEGACY_VERSION = 1  # no manifest: state.json holds the hashes of the two .safetensors files

_STEP_DIR = re.compile(r"step_(\d{8,})")


class CheckpointError(WeightsError, ValueError):
    """A checkpoint is unusable: missing files, corrupted, or not matching the model. (A
    ValueError too: it is the user's file that is wrong, and the CLI reports it in one line.)"""


# ---- checkpoint directories ------------------------------------------------------------------


def _step_of(path: Path) -> int | None:
    m = _STEP_DIR.fullmatch(path.name)
    return int(m.group(1)) if m else None


def _is_complete(path: Path) -> bool:
    return (
        _step_of(path) is not None
        and path.is_dir()
        and all((path / f).is_file() for f in (MODEL_FILE, OPTIM_FILE, STATE_FILE))
    )


# ---- checkpoints ------------------------------------------------------------------------------


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest step first (temp and incomplete dirs left out)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _is_complete(p)]
    return sorted(found, key=lambda p: _step_of(p) or 0)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    model: nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    schedulers: Mapping[str, Any],
    trainer_state: Mapping[str, Any],
    keep_last: int | None = 3,
) -> Path:
    """Write ``<run_dir>/checkpoints/step_<step>`` atomically and prune older checkpoints.

    ``schedulers`` are anything with ``state_dict``/``load_state_dict`` (LR schedulers, a grad
    scaler ...). ``trainer_state`` must be JSON-able (tensors in it are allowed and go to
    optim.safetensors). The current RNG states are saved too, so call this at the point where the
    resumed run should pick up. ``keep_last`` checkpoints are kept (None: all); the one just
    written is never pruned, even if an older run left higher steps behind. Saving a step that
    already exists replaces it.
    """
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")

    # Encode everything before touching the disk: an unstorable value fails fast and cleanly.
    tensors: dict[str, Tensor] = {}
    state: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "torch_version": torch.__version__,
        "optimizers": {
            n: encode_state(o.state_dict(), f"optim/{n}", tensors) for n, o in optimizers.items()
        },
        "schedulers": {
            n: encode_state(s.state_dict(), f"sched/{n}", tensors) for n, s in schedulers.items()
        },
        "trainer_state": encode_state(dict(trainer_state), "trainer", tensors),
        "rng": encode_state(rng_state(), "rng", tensors),
    }

    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-{final.name}-{unique_suffix()}"
    tmp.mkdir()
    old: Path | None = None
    try:
        write_model_file(tmp / MODEL_FILE, model, digest=False)
        save_file(tensors, str(tmp / OPTIM_FILE), metadata={"format": "pt"})
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, allow_nan=True))
        manifest = {
            "format_version": FORMAT_VERSION,
            "files": {f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size}
                      for f in (MODEL_FILE, OPTIM_FILE, STATE_FILE)},
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        for f in (MODEL_FILE, OPTIM_FILE, STATE_FILE, MANIFEST_FILE):
            fsync_file(tmp / f)
        fsync_dir(tmp)
        if final.exists():
            # os.replace cannot overwrite a non-empty directory: move the old one aside first.
            old = root / f".old-{final.name}-{unique_suffix()}"
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists():
            os.replace(old, final)  # put the previous checkpoint of this step back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

    if keep_last is not None:
        others = [p for p in list_checkpoints(run_dir) if p != final]
        for p in others[: max(0, len(others) - (keep_last - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    return final


def _read_json(f: Path, what: str) -> Any:
    if not f.is_file():
        raise CheckpointError(f"{f}: file is missing (incomplete or not a checkpoint)")
    try:
        return json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{f}: cannot be parsed ({e})") from e


def _read_state(path: Path, version: int) -> dict[str, Any]:
    f = path / STATE_FILE
    state = _read_json(f, "state")
    needed = ("format_version", "optimizers", "schedulers", "trainer_state", "rng")
    if version == LEGACY_VERSION:
        needed += ("files",)
    missing = [k for k in needed if k not in state] if isinstance(state, dict) else list(needed)
    if missing:
        raise CheckpointError(f"{f}: malformed, lacks {missing}")
    if state["format_version"] != version:
        raise CheckpointError(f"{f}: format version {state['format_version']!r}, expected {version}")
    return state


def _verify_file(path: Path, record: Any) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing")
    if not isinstance(record, Mapping):
        raise CheckpointError(f"{path}: malformed checksum record {record!r}")
    size = path.stat().st_size
    if "bytes" in record and size != record["bytes"]:
        kind = "truncated" if isinstance(record["bytes"], int) and size < record["bytes"] else "has extra bytes"
        raise CheckpointError(
            f"{path}: {size} bytes, expected {record['bytes']}: file is {kind} (corrupted)"
        )
    got = sha256_file(path)
    if got != record.get("sha256"):
        raise CheckpointError(
            f"{path}: sha256 mismatch (expected {record.get('sha256')}, got {got}): "
            "file is corrupted"
        )


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check every file of a checkpoint against its manifest (state.json included) and
    return the parsed state; raises :class:`CheckpointError` naming the first bad file."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory is missing")
    mpath = path / MANIFEST_FILE
    if not mpath.exists():
        # Format 1 (no manifest) or a manifest that went missing: state.json tells which.
        state = _read_json(path / STATE_FILE, "state")
        if not isinstance(state, dict) or state.get("format_version") != LEGACY_VERSION:
            raise CheckpointError(f"{mpath}: file is missing (incomplete or corrupted checkpoint)")
        state = _read_state(path, LEGACY_VERSION)
        for f in (MODEL_FILE, OPTIM_FILE):
            if f not in state["files"]:
                raise CheckpointError(f"{path / STATE_FILE}: no checksum recorded for {f}")
            _verify_file(path / f, state["files"][f])
        return state
    manifest = _read_json(mpath, "manifest")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{mpath}: malformed (expected format_version {FORMAT_VERSION} and files)")
    for f in (MODEL_FILE, OPTIM_FILE, STATE_FILE):
        if f not in files:
            raise CheckpointError(f"{mpath}: no checksum recorded for {f}")
    unlisted = sorted(p.name for p in path.iterdir() if p.name != MANIFEST_FILE and p.name not in files)
    if unlisted:
        raise CheckpointError(f"{path}: file(s) {unlisted} are not in {MANIFEST_FILE}")
    for f, record in files.items():
        if f not in (MODEL_FILE, OPTIM_FILE, STATE_FILE):
            raise CheckpointError(f"{mpath}: lists an unknown file {f!r}")
        _verify_file(path / f, record)
    return _read_state(path, FORMAT_VERSION)


def _names_match(
    kind: str, saved: Mapping[str, Any], given: Mapping[str, Any], where: Path
) -> None:
    if set(saved) != set(given):
        raise CheckpointError(
            f"{where}: checkpoint has {kind} {sorted(saved)}, caller passed {sorted(given)}"
        )


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    schedulers: Mapping[str, Any],
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore model, optimizers, schedulers (and RNGs) from a checkpoint; return trainer_state.

    Everything is read and checked first (files present, sha256 of every file, parse, keys, shapes, optimizer
    and scheduler names, param-group sizes); only then is anything modified, so a
    CheckpointError leaves the caller's objects as they were.
    """
    path = Path(path)
    state = verify_checkpoint(path)

    try:
        model_tensors, meta = read_safetensors(path / MODEL_FILE)
        model_sd = state_dict_for(path / MODEL_FILE, model, model_tensors, meta)
        optim_tensors, _ = read_safetensors(path / OPTIM_FILE)
    except WeightsError as e:
        raise CheckpointError(str(e)) from e

    _names_match("optimizers", state["optimizers"], optimizers, path)
    _names_match("schedulers", state["schedulers"], schedulers, path)
    used: set[str] = set()
    try:
        opt_sds = {n: decode_state(state["optimizers"][n], optim_tensors, used) for n in optimizers}
        sched_sds = {n: decode_state(state["schedulers"][n], optim_tensors, used) for n in schedulers}
        trainer_state = decode_state(state["trainer_state"], optim_tensors, used)
        rng = decode_state(state["rng"], optim_tensors, used)
    except MissingTensor as e:
        raise CheckpointError(f"{path}: {OPTIM_FILE} lacks tensor {e.args[0]!r} named in {STATE_FILE}") from e
    unused = sorted(set(optim_tensors) - used)
    if unused:
        raise CheckpointError(
            f"{path / OPTIM_FILE}: unexpected tensors not referenced by {STATE_FILE}: {unused[:10]}"
        )
    for name, opt in optimizers.items():
        saved_groups = opt_sds[name].get("param_groups", [])
        live_groups = opt.param_groups
        saved_sizes = [len(g["params"]) for g in saved_groups]
        live_sizes = [len(g["params"]) for g in live_groups]
        if saved_sizes != live_sizes:
            raise CheckpointError(
                f"{path}: optimizer {name!r} has param groups of sizes {saved_sizes} in the "
                f"checkpoint but {live_sizes} here"
            )

    # All checks passed: apply.
    try:
        model.load_state_dict(model_sd, strict=True)
        for name, opt in optimizers.items():
            opt.load_state_dict(opt_sds[name])
        for name, sched in schedulers.items():
            sched.load_state_dict(sched_sds[name])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: restoring state failed ({e})") from e
    if restore_rng:
        set_rng_state(rng)
    return trainer_state


def load_latest(
    run_dir: str | os.PathLike,
    *,
    model: nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    schedulers: Mapping[str, Any],
    warn: Callable[[str], None],
    restore_rng: bool = True,
) -> tuple[Path, dict[str, Any]] | None:
    """Restore the newest *intact* checkpoint of a run: (its path, trainer_state), or None when
    the run has no checkpoint. A newer one that fails its checks (corrupted, truncated, a file
    missing, an edited state, not matching the model) is reported through ``warn`` and skipped;
    only when none is usable is it an error, listing why each was refused."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    steps = sorted((p for p in root.iterdir() if _step_of(p) is not None and p.is_dir()),
                   key=lambda p: _step_of(p) or 0, reverse=True) if root.is_dir() else []
    refused = []
    for path in steps:
        try:
            state = load_checkpoint(path, model=model, optimizers=optimizers, schedulers=schedulers,
                                    restore_rng=restore_rng)
        except CheckpointError as e:
            refused.append(f"{path.name}: {e}")
            warn(f"warning: checkpoint {path} is unusable, trying an older one: {e}")
            continue
        return path, state
    if refused:
        raise CheckpointError(f"no intact checkpoint in {root} to resume from:\n  " + "\n  ".join(refused))
    return None
