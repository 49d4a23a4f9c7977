"""Running a GTS model: grids -> decoded extractions, and their scores against gold."""

from __future__ import annotations

from typing import Sequence

import torch

from rankmixer.text.aste import Sentence
from rankmixer.text.batches import iterate_batches
from rankmixer.text.grid import Extraction, Task, decode
from rankmixer.text.model import GTSModel
from rankmixer.text.scoring import gold_extraction, score_split
from rankmixer.text.vocab import Vocabulary

__all__ = ["evaluate", "predict"]


@torch.no_grad()
def predict(model: GTSModel, sentences: Sequence[Sentence], vocab: Vocabulary,
            batch_size: int = 32) -> list[Extraction]:
    """The decoded argmax grid of the last inference round, one extraction per sentence (on
    the device the model's parameters are on)."""
    was_training = model.training
    model.eval()
    task: Task = model.cfg.task
    device = next(model.parameters()).device
    out: list[Extraction | None] = [None] * len(sentences)
    for batch in iterate_batches(sentences, vocab, task, batch_size):
        batch = batch.to(device)
        grids = model(batch.tokens, batch.lengths, batch.mask)[-1].argmax(dim=-1).cpu().numpy()
        for row, k in enumerate(batch.index):
            out[k] = decode(grids[row], int(batch.lengths[row]), task)
    model.train(was_training)
    return out  # type: ignore[return-value]


def evaluate(model: GTSModel, sentences: Sequence[Sentence], vocab: Vocabulary, batch_size: int = 32) -> dict:
    """Scores as the paper computes them (``triplet``/``pair``/``aspect``/``opinion``), plus
    ``annotation``: the same against the annotated triplets (see rankmixer.text.scoring)."""
    task: Task = model.cfg.task
    predicted = predict(model, sentences, vocab, batch_size)
    paper = score_split(predicted, [gold_extraction(s, task, "paper") for s in sentences], task == "triplet")
    annotation = score_split(predicted, [gold_extraction(s, task, "annotation") for s in sentences], task == "triplet")
    return {**paper, "annotation": annotation}
