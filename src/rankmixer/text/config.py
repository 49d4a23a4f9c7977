"""The typed configuration of a GTS model and its training (packaged default:
``configs/text/gts.yaml``).

Defaults follow the reference implementation (NJUNLP/GTS, ``code/NNModel``) where it states
them (BiLSTM 50 units per direction, CNN 256 channels, dropout 0.5, Adam lr 1e-3, batch 32,
sentences of at most 100 words) and differ where this project differs on purpose: word
embeddings are trained from scratch (the reference freezes pre-trained double embeddings), and
training stops early on the dev triplet F1 instead of running 600 epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator

from rankmixer.core.strict import StrictModel
from rankmixer.core.yamlio import read_yaml_mapping

__all__ = ["GTSConfig", "ModelSection", "TrainSection", "default_config", "load_gts_config"]

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "text" / "gts.yaml"


class ModelSection(StrictModel):
    """The network: tagger, encoder, sizes and the number of feedback inference rounds."""

    task: Literal["triplet", "pair"] = Field(
        default="triplet", description="triplet: tags N, A, O, NEG, NEU, POS; pair: N, A, O, PAIR")
    tagger: Literal["grid", "bio"] = Field(
        default="grid", description="grid: GTS (word-pair grid, k feedback rounds); bio: the baseline, one BIO "
                                    "tag per word (aspects carry their sentiment) and each span paired with the "
                                    "nearest span of the other kind (rankmixer.text.bio; rounds and feedback "
                                    "unused)")
    encoder: Literal["bilstm", "cnn"] = Field(default="bilstm", description="word encoder")
    embedding_dim: int = Field(default=100, ge=1, description="word embedding width (trained from scratch)")
    lstm_dim: int = Field(default=50, ge=1, description="BiLSTM units per direction")
    cnn_dim: int = Field(default=256, ge=2, description="CNN channels (the first layer has half with kernel 5, "
                                                        "half with kernel 3)")
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0, description="dropout on embeddings (and between CNN layers)")
    rounds: int = Field(default=1, ge=0, description="k: feedback inference rounds; 0 = the plain pair classifier")
    feedback: Literal["probs", "logits"] = Field(
        default="probs", description="what is max-pooled and fed back: softmax probabilities (the paper's "
                                     "equations) or raw logits (the reference code)")


class TrainSection(StrictModel):
    """The training loop: data limits, optimiser, stopping and seed."""

    max_len: int = Field(default=100, ge=1, description="longer sentences are truncated to this many words "
                                                        "(triplets reaching past it dropped; both counted)")
    lowercase: bool = Field(default=True, description="lower-case words before the vocabulary lookup")
    min_freq: int = Field(default=1, ge=1, description="train-split count a word needs to get its own id")
    batch_size: int = Field(default=32, ge=1)
    pool: int = Field(default=10, ge=0, description="draw training batches from length-sorted pools of this many "
                                                    "batches (grids cost n^2, so far less padding; larger pools "
                                                    "cut more but vary batches less); 0 = plain shuffled "
                                                    "batches, as the reference code")
    lr: float = Field(default=1e-3, gt=0.0, description="Adam learning rate")
    epochs: int = Field(default=100, ge=1, description="most epochs")
    patience: int = Field(default=20, ge=1, description="stop after this many epochs without a better dev triplet F1")
    seed: int = Field(default=0, description="seeds shuffling, initialisation and dropout")
    device: str = Field(default="cpu", description="torch device to train on (cpu, cuda, cuda:1); the saved "
                                                   "weights are device-free. Bit-for-bit reruns are promised "
                                                   "on the CPU only")
    limit_train: int | None = Field(default=None, ge=1, description="use only the first N train sentences (smoke runs)")

    @field_validator("device")
    @classmethod
    def _a_torch_device(cls, value: str) -> str:
        try:
            torch.device(value)
        except RuntimeError as e:
            raise ValueError(f"not a torch device: {value!r} ({e})") from e
        return value


class GTSConfig(StrictModel):
    model: ModelSection = ModelSection()
    train: TrainSection = TrainSection()


def load_gts_config(path: Path | str) -> GTSConfig:
    """A config from YAML (sections ``model`` and ``train``; unknown keys are errors)."""
    return GTSConfig.model_validate(read_yaml_mapping(path, "GTS config", keys=("model", "train"), allow_empty=True))


def default_config() -> GTSConfig:
    """The packaged default, ``configs/text/gts.yaml``."""
    return load_gts_config(DEFAULT_CONFIG)
