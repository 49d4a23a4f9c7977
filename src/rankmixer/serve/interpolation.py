"""An interpolating artifact: two exported conversion models (windows ``T_s < T_l``) and the
advertisers' delay rates, served as one model whose requests name their conversion window
(Personalized Interpolation, :mod:`rankmixer.conversion.interpolate`; docs/production.md).

Layout: ``short/`` and ``long/`` (each a complete artifact, ``rankmixer export``, checked as
such when loaded), ``delay_rates.json`` (``rankmixer conversion fit-delays``) and
``manifest.json`` (``kind: interpolation``, the two windows, the sha256 of the rates file and of
the two artifacts' manifests, which in turn cover their files). :func:`load_artifact` loads
either kind.

Scoring: each row is encoded by both artifacts' preprocessors (their vocabularies differ: each
was fitted on its own window's training rows), both models run, and
``p_s + alpha(beta_a, T_f) (p_l - p_s)`` is the row's score, ``beta_a`` the rate of the row's
``advertiser`` value (the global rate for one the fit never saw). The request's window reaches
the rows as :data:`WINDOW_KEY` (:func:`rankmixer.serve.request.parse_request` puts it there after
checking it lies in ``[T_s, T_l]``); the encoders read only their own inputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from rankmixer.conversion.delays import load_rates, rates_for
from rankmixer.conversion.interpolate import check_windows, interpolate
from rankmixer.core.files import atomic_directory, check_output, sha256_file
from rankmixer.serve.artifact import Artifact, ArtifactError

KIND = "interpolation"
OUTPUT_KIND = "rankmixer-interpolation-artifact"
RATES_FILE = "delay_rates.json"
WINDOW_KEY = "__window_days"  # a row's conversion window (days), set by the request parser
ADVERTISER = "advertiser"
COVERED = (RATES_FILE, "short/manifest.json", "long/manifest.json")  # the files the manifest's sha256 lists


def export_interpolation(short: str | Path, long: str | Path, rates: str | Path, out: str | Path, *,
                         short_days: float, long_days: float, overwrite: bool = False) -> Path:
    """Bundle two exported artifacts and a delay-rate file into an interpolating artifact in
    ``out`` (built beside it and renamed into place; an existing one replaced only with
    ``overwrite``)."""
    short, long, rates, out = Path(short), Path(long), Path(rates), Path(out)
    check_windows(short_days, long_days, [short_days])
    fitted = load_rates(rates)
    check_output(out, [short, long, rates], "--out")
    arts = {name: Artifact(path) for name, path in (("short", short), ("long", long))}  # both verified
    for name, art in arts.items():
        if ADVERTISER not in {i.name for i in art.preprocessor.inputs}:
            raise ArtifactError(f"{art.root}: the {name} model reads no {ADVERTISER!r} input, so no delay rate applies")
    if arts["short"].preprocessor.spec["inputs"] != arts["long"].preprocessor.spec["inputs"]:
        raise ArtifactError(f"{short} and {long} read different request inputs; they must be the same model family")
    if arts["short"].tasks != arts["long"].tasks:
        raise ArtifactError(f"{short} has tasks {arts['short'].tasks}, {long} has {arts['long'].tasks}")
    with atomic_directory(out, OUTPUT_KIND, overwrite=overwrite) as tmp:
        for name, path in (("short", short), ("long", long)):
            shutil.copytree(path, tmp / name)
        (tmp / RATES_FILE).write_text(json.dumps(fitted, indent=2))
        manifest = {
            "kind": KIND,
            "model": f"{arts['short'].name}-interpolated",
            "version": f"{arts['short'].version}+{arts['long'].version}",
            "tasks": arts["short"].tasks,
            "short_days": short_days,
            "long_days": long_days,
            "sha256": {f: sha256_file(tmp / f) for f in COVERED},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


class PairPreprocessor:
    """The short model's request checks; encoding for both models, plus each row's rate and window."""

    def __init__(self, short: Artifact, long: Artifact, rates: dict) -> None:
        self.short, self.long, self.rates = short.preprocessor, long.preprocessor, rates
        self.spec, self.inputs, self.oov_features = self.short.spec, self.short.inputs, self.short.oov_features

    def check_row(self, row: Any, where: str) -> dict[str, Any]:
        return self.short.check_row(row, where)

    def encode(self, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], np.ndarray]:
        missing = next((i for i, r in enumerate(rows) if WINDOW_KEY not in r), None)
        if missing is not None:
            raise ValueError(f"row {missing} carries no conversion window")
        arrays_s, oov = self.short.encode(rows)
        arrays_l, _ = self.long.encode(rows)
        return {"short": arrays_s, "long": arrays_l,
                "rate": rates_for(self.rates, [r[ADVERTISER] for r in rows]),
                "window": np.array([r[WINDOW_KEY] for r in rows], dtype=np.float64)}, oov


class InterpolatingArtifact:
    """What the server needs of an artifact (name, version, tasks, preprocessor, run_model,
    score), for a pair of models interpolated per row."""

    def __init__(self, root: str | Path, threads: int | None = None) -> None:
        root = Path(root)
        self.root = root
        self.manifest = _read_manifest(root)
        self.short = Artifact(root / "short", threads=threads)
        self.long = Artifact(root / "long", threads=threads)
        self.windows = (float(self.manifest["short_days"]), float(self.manifest["long_days"]))
        check_windows(*self.windows, [self.windows[0]])
        self.name, self.version = self.manifest["model"], self.manifest["version"]
        self.tasks, self.format = self.short.tasks, f"interpolation of {self.short.format}"
        self.preprocessor = PairPreprocessor(self.short, self.long, load_rates(root / RATES_FILE))

    def run_model(self, arrays: dict[str, Any]) -> np.ndarray:
        p_s = self.short.run_model(arrays["short"]).astype(np.float64)
        p_l = self.long.run_model(arrays["long"]).astype(np.float64)
        rate, window = arrays["rate"][:, None], arrays["window"][:, None]
        return interpolate(p_s, p_l, rate, *self.windows, window).astype(np.float32)

    def score(self, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        arrays, oov = self.preprocessor.encode(rows)
        return self.run_model(arrays), oov

    def warmup_row(self, row: dict) -> dict:
        """A checked row made scorable (the long window) for the server's warm-up call."""
        return {**row, WINDOW_KEY: self.windows[1]}


def _read_manifest(root: Path) -> dict:
    mpath = root / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{mpath}: not a readable JSON manifest ({e})") from None
    missing = [k for k in ("kind", "model", "version", "short_days", "long_days", "sha256") if k not in manifest]
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND or missing:
        raise ArtifactError(f"{mpath}: not an interpolating artifact manifest (missing {missing})")
    listed = manifest["sha256"]
    if not isinstance(listed, dict) or set(listed) != set(COVERED):
        raise ArtifactError(f"{mpath}: sha256 must list exactly {list(COVERED)}")
    for name, digest in listed.items():
        if not (root / name).is_file():
            raise ArtifactError(f"{root / name}: listed in the manifest but missing")
        if sha256_file(root / name) != digest:
            raise ArtifactError(f"{root / name}: sha256 differs from the manifest's (corrupted or replaced)")
    return manifest


def is_interpolating(root: str | Path) -> bool:
    try:
        return json.loads((Path(root) / "manifest.json").read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def load_artifact(root: str | Path, threads: int | None = None) -> Artifact | InterpolatingArtifact:
    """The artifact in ``root``: an interpolating one (``kind: interpolation``) or a plain one."""
    return InterpolatingArtifact(root, threads) if is_interpolating(root) else Artifact(root, threads)
