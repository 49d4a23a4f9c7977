"""Running a tagger (GTS or the BIO baseline): decoded extractions, and their scores against gold."""

from __future__ import annotations

from typing import Sequence

import torch

from rankmixer.text.aste import Sentence
from rankmixer.text.batches import iterate_batches
from rankmixer.text.grid import Extraction, Task
from rankmixer.text.model import TextTagger
from rankmixer.text.scoring import gold_extraction, score_split
from rankmixer.text.vocab import Vocabulary

__all__ = ["evaluate", "predict"]


@torch.no_grad()
def predict(model: TextTagger, sentences: Sequence[Sentence], vocab: Vocabulary,
            batch_size: int = 32) -> list[Extraction]:
    """The model's decoded prediction (``model.extract``), one extraction per sentence (on the
    device the model's parameters are on)."""
    was_training = model.training
    model.eval()
    task: Task = model.cfg.task
    device = next(model.parameters()).device
    out: list[Extraction | None] = [None] * len(sentences)
    for batch in iterate_batches(sentences, vocab, task, batch_size):
        for k, extraction in zip(batch.index, model.extract(batch.to(device))):
            out[k] = extraction
    model.train(was_training)
    return out  # type: ignore[return-value]


def evaluate(model: TextTagger, sentences: Sequence[Sentence], vocab: Vocabulary, batch_size: int = 32) -> dict:
    """Scores as the paper computes them (``triplet``/``pair``/``aspect``/``opinion``), plus
    ``annotation``: the same against the annotated triplets (see rankmixer.text.scoring)."""
    task: Task = model.cfg.task
    predicted = predict(model, sentences, vocab, batch_size)
    paper = score_split(predicted, [gold_extraction(s, task, "paper") for s in sentences], task == "triplet")
    annotation = score_split(predicted, [gold_extraction(s, task, "annotation") for s in sentences], task == "triplet")
    return {**paper, "annotation": annotation}
