"""Training GTS (or the BIO baseline) on one ASTE-Data-V2 dataset: ``rankmixer text train-gts``.

Adam on the model's loss (GTS: the cross-entropy of the last inference round's logits over the
upper-triangle cells of every sentence, lower triangle and padding ignored, as the reference
code trains; the baseline: the cross-entropy of every word's BIO tag). After
each epoch the model is scored on dev; the weights with the best dev triplet F1 (pair F1 for
the pair task) are kept, and training stops after ``patience`` epochs without improvement. The
kept model is then scored on dev and test and written, with its vocabulary, config and metrics,
to the output directory (rankmixer.text.artifact).

Seeded: the same config, data and seed give the same model on the same machine's CPU
(shuffling, initialisation and dropout draw from the seed; CPU kernels are deterministic; GPU
LSTM and convolution kernels need not be).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable

import torch

from rankmixer.core.files import check_output, check_replaceable
from rankmixer.text.artifact import KIND, save_model_dir
from rankmixer.text.aste import read_aste_dir
from rankmixer.text.batches import iterate_batches
from rankmixer.text.config import GTSConfig
from rankmixer.text.model import build_model
from rankmixer.text.predict import evaluate
from rankmixer.text.vocab import Vocabulary

__all__ = ["model_name", "train_gts"]


def model_name(cfg: GTSConfig) -> str:
    """``gts-bilstm``, ``gts-cnn``, ``bio-bilstm``, ``bio-cnn``."""
    return f"{'gts' if cfg.model.tagger == 'grid' else 'bio'}-{cfg.model.encoder}"


def train_gts(
    cfg: GTSConfig,
    data_dir: Path | str,
    out: Path | str,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Train, early-stop on dev, score dev and test, write the model directory ``out``; returns
    the metrics written to ``out/metrics.json``."""
    data_dir, out = Path(data_dir), Path(out)
    check_output(out, [data_dir], "model directory")
    check_replaceable(out, KIND, overwrite)  # fail before training, not after
    t = cfg.train
    splits = read_aste_dir(data_dir, t.max_len)
    train = splits["train"].sentences[: t.limit_train]
    dev, test = splits["dev"].sentences, splits["test"].sentences
    for name, sentences in (("train", train), ("dev", dev), ("test", test)):
        if not sentences:
            raise ValueError(f"{data_dir}/{name}.json holds no sentences")

    torch.manual_seed(t.seed)
    shuffle = torch.Generator().manual_seed(t.seed)
    vocab = Vocabulary.build((s.tokens for s in train), t.lowercase, t.min_freq)
    device = torch.device(t.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device is {t.device}, but this torch sees no CUDA device")
    model = build_model(len(vocab), cfg.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr)
    key = "triplet" if cfg.model.task == "triplet" else "pair"
    rounds = f", k={cfg.model.rounds}" if cfg.model.tagger == "grid" else ""
    log(f"{model_name(cfg)} ({cfg.model.task}{rounds}) on {data_dir}: "
        f"{len(train)} train / {len(dev)} dev / {len(test)} test sentences, vocabulary {len(vocab)}")

    best_f1, best_epoch, best_state, history = -1.0, -1, None, []
    started = time.perf_counter()
    for epoch in range(t.epochs):
        model.train()
        total, batches = 0.0, 0
        for batch in iterate_batches(train, vocab, cfg.model.task, t.batch_size, shuffle, t.pool):
            loss = model.loss(batch.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        mean_loss = total / batches
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"epoch {epoch}: training loss is {mean_loss}; lower train.lr")
        dev_f1 = evaluate(model, dev, vocab, t.batch_size)[key]["f1"]
        history.append({"epoch": epoch, "loss": mean_loss, f"dev_{key}_f1": dev_f1})
        log(f"epoch {epoch}: loss {mean_loss:.4f}, dev {key} F1 {dev_f1:.4f}")
        if dev_f1 > best_f1:
            best_f1, best_epoch, best_state = dev_f1, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= t.patience:
            log(f"no better dev {key} F1 for {t.patience} epochs: stopping")
            break

    model.load_state_dict(best_state)
    metrics = {
        "model": model_name(cfg),
        "task": cfg.model.task,
        "rounds": cfg.model.rounds if cfg.model.tagger == "grid" else None,
        "data": str(data_dir),
        "seed": t.seed,
        "device": t.device,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "train_seconds": time.perf_counter() - started,
        "dev": evaluate(model, dev, vocab, t.batch_size),
        "test": evaluate(model, test, vocab, t.batch_size),
        "reading": {name: split.report() for name, split in splits.items()},
        "history": history,
    }
    save_model_dir(out, model, vocab, cfg, metrics, overwrite)
    return metrics
