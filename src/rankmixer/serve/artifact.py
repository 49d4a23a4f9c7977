"""Load an exported artifact (see ``export.py``) and score with it.

:class:`Artifact` = manifest + feature map + :class:`~rankmixer.serve.preprocess.Preprocessor` +
a backend. Backends run the graph on encoded arrays:

* ``onnx``: ONNX Runtime (CPU provider). Imports no torch.
* ``torchscript``: ``torch.jit.load`` (the TorchScript deserializer: graph code and tensors,
  no Python objects are unpickled).
* ``pt2``: ``torch.export.load`` (a serialized ExportedProgram; no Python objects unpickled).
* ``eager``: the model rebuilt from the manifest's config by the registry, weights read from
  safetensors. The path for MoE models: their eval forward computes only the active experts.

The manifest must list every file of the artifact with its sha256, by relative paths inside it;
every file is checked before it is read, so a truncated, swapped, added or escaping (``..``,
absolute, symlinked) file is refused with its name. Nothing here calls ``pickle`` or ``torch.load``
without ``weights_only``.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np

from rankmixer.core.files import MARKER_FILE, sha256_file
from rankmixer.data.feature_map import FeatureMap
from rankmixer.serve.preprocess import Preprocessor
from rankmixer.serve.signature import arrays_to_inputs

SUPPORTED_ARTIFACT_VERSION = 1


class ArtifactError(ValueError):
    """An artifact directory is incomplete, corrupted or of an unknown version."""



class OnnxBackend:
    def __init__(self, path: Path, threads: int | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ArtifactError("an onnx artifact needs onnxruntime: pip install -c constraints/cpu.txt -e '.[onnx]'") from e
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {n: inputs[n] for n in self.input_names})[0]


class TorchBackend:
    """torchscript, pt2 and eager all end as a torch module with the graph signature."""

    def __init__(self, fmt: str, path: Path, manifest: dict, fm: FeatureMap, threads: int | None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        if fmt == "torchscript":
            import warnings

            with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; it still loads
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(path), map_location="cpu")
        elif fmt == "pt2":
            self.module = torch.export.load(str(path)).module()
        else:
            from rankmixer.models import registry
            from rankmixer.serve.export import ScoringModule
            from rankmixer.core.weights import load_weights

            cfg = manifest.get("config") or {}
            if "model_name" not in cfg:
                raise ArtifactError(f"{path.parent}/manifest.json: format eager needs config.model_name")
            model = registry.build_model(cfg["model_name"], fm, cfg.get("model_params") or {})
            load_weights(path, model)
            self.module = ScoringModule(model.eval(), fm).eval()
        self.input_names = [i["name"] for i in manifest["inputs"]]

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.module(*(self.torch.from_numpy(inputs[n]) for n in self.input_names))
        return out.numpy()


_REQUIRED = ("artifact_version", "model", "version", "format", "model_file", "schema_hash", "tasks", "inputs", "sha256")


def read_manifest(root: Path) -> dict:
    """The manifest of the artifact in ``root``, after checking that it lists every file of
    the artifact with its sha256, by relative paths that stay inside ``root``, and that each
    file matches; anything else is an :class:`ArtifactError` naming the file."""
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise ArtifactError(f"{root} is not an artifact directory (no manifest.json; run `rankmixer export`)")
    try:
        manifest = json.loads(mpath.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        raise ArtifactError(f"{mpath}: not a readable JSON manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{mpath}: must hold a JSON object")
    if manifest.get("artifact_version") != SUPPORTED_ARTIFACT_VERSION:
        raise ArtifactError(f"{mpath}: artifact_version {manifest.get('artifact_version')!r}, "
                            f"this rankmixer reads {SUPPORTED_ARTIFACT_VERSION}")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ArtifactError(f"{mpath}: lacks {missing}")
    if not isinstance(manifest["model_file"], str) or not isinstance(manifest["format"], str):
        raise ArtifactError(f"{mpath}: model_file and format must be strings")
    hashes = manifest["sha256"]
    if not isinstance(hashes, dict) or not all(isinstance(v, str) for v in hashes.values()):
        raise ArtifactError(f"{mpath}: sha256 must map file paths to hex digests")
    real_root = root.resolve()
    for name in hashes:
        rel = PurePosixPath(name)
        if not name or rel.is_absolute() or ".." in rel.parts or "\\" in name or name != rel.as_posix():
            raise ArtifactError(f"{mpath}: {name!r} is not a plain relative path inside the artifact")
        p = root / rel
        if p.is_symlink() or not p.resolve().is_relative_to(real_root):
            raise ArtifactError(f"{p}: a link or a path leading outside the artifact; refused")
        if not p.is_file():
            raise ArtifactError(f"{p}: listed in the manifest but missing")
        if sha256_file(p) != hashes[name]:
            raise ArtifactError(f"{p}: sha256 differs from the manifest's (corrupted or replaced)")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir() or p.is_symlink()}
    unlisted = sorted(present - set(hashes) - {"manifest.json", MARKER_FILE})
    if unlisted:
        raise ArtifactError(f"{root}: file(s) {unlisted[:5]} are not in the manifest (added after export?); refused")
    for f in ("feature_map.json", "preprocess.json", manifest["model_file"]):
        if f not in hashes:
            raise ArtifactError(f"{mpath}: {f} is not listed with its sha256")
    return manifest


class Artifact:
    """A loaded artifact: ``score(rows)`` turns checked canonical rows into scores per task."""

    def __init__(self, root: str | Path, threads: int | None = None) -> None:
        root = Path(root)
        manifest = read_manifest(root)
        mpath = root / "manifest.json"
        self.root = root
        self.manifest = manifest
        self.name: str = manifest["model"]
        self.version: str = manifest["version"]
        self.tasks: list[str] = manifest["tasks"]
        self.fm = FeatureMap.load(root / "feature_map.json")
        if self.fm.schema_hash != manifest["schema_hash"]:
            raise ArtifactError(f"{root}: feature_map.json schema hash differs from the manifest's")
        self.preprocessor = Preprocessor.load(root / "preprocess.json", self.fm)
        fmt, path = manifest["format"], root / manifest["model_file"]
        self.format = fmt
        if fmt == "onnx":
            self.backend = OnnxBackend(path, threads)
        elif fmt in ("torchscript", "pt2", "eager"):
            self.backend = TorchBackend(fmt, path, manifest, self.fm, threads)
        else:
            raise ArtifactError(f"{mpath}: unknown format {fmt!r}")

    def run_model(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Encoded arrays (loader layout) -> probabilities [B, n_tasks]. The one place the model
        is called: an early-exit or cascade path replaces this."""
        return np.asarray(self.backend(arrays_to_inputs(arrays, self.fm)), dtype=np.float32)

    def score(self, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Checked rows -> (probabilities [B, n_tasks], OOV counts [B, n_features]; see
        :meth:`Preprocessor.encode`)."""
        arrays, oov = self.preprocessor.encode(rows)
        return self.run_model(arrays), oov
