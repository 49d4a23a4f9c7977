"""A trained GTS model's directory: ``weights.safetensors`` (via rankmixer.core.weights, never
pickled), ``vocab.json``, ``config.json`` (the full :class:`GTSConfig`) and ``metrics.json``.

It is written whole into a temporary sibling and renamed into place, with rankmixer's ownership
marker (kind :data:`KIND`); an existing non-empty directory is replaced only when it is a GTS
model directory and ``overwrite`` is given (rankmixer.core.files.check_replaceable).
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from rankmixer.core.files import atomic_directory
from rankmixer.core.weights import load_weights, save_weights
from rankmixer.text.config import GTSConfig
from rankmixer.text.model import TextTagger, build_model
from rankmixer.text.vocab import Vocabulary

__all__ = ["FILES", "KIND", "load_model_dir", "save_model_dir"]

KIND = "gts-model"
FILES = {"weights": "weights.safetensors", "vocab": "vocab.json", "config": "config.json", "metrics": "metrics.json"}


def save_model_dir(out: Path | str, model: nn.Module, vocab: Vocabulary, cfg: GTSConfig, metrics: dict,
                   overwrite: bool = False) -> Path:
    with atomic_directory(out, KIND, overwrite=overwrite) as tmp:
        save_weights(tmp / FILES["weights"], model)
        vocab.save(tmp / FILES["vocab"])
        (tmp / FILES["config"]).write_text(json.dumps(cfg.model_dump(), indent=2))
        (tmp / FILES["metrics"]).write_text(json.dumps(metrics, indent=2))
    return Path(out)


def load_model_dir(path: Path | str) -> tuple[TextTagger, Vocabulary, GTSConfig]:
    """The model (in eval mode), its vocabulary and config; a missing or damaged file is an
    error naming it."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"GTS model directory not found: {path}")
    for name in ("weights", "vocab", "config"):
        if not (path / FILES[name]).is_file():
            raise FileNotFoundError(f"{path} is not a GTS model directory: {FILES[name]} is missing")
    try:
        cfg = GTSConfig.model_validate_json((path / FILES["config"]).read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise ValueError(f"{path / FILES['config']}: not a GTS config ({e})") from e
    vocab = Vocabulary.load(path / FILES["vocab"])
    model = build_model(len(vocab), cfg.model)
    load_weights(path / FILES["weights"], model)
    return model.eval(), vocab, cfg
