"""GTS (Wu et al. 2020, "Grid Tagging Scheme for Aspect-oriented Fine-grained Opinion
Extraction", Findings of EMNLP 2020): word embeddings -> encoder (CNN or BiLSTM) -> word-pair
features [h_i; h_j] -> k-round grid classifier -> logits [B, n, n, tags] for every cell (the
pair features are never materialised: rankmixer.text.inference computes the same function
factored).

Every tagger here answers the same two calls, so training, evaluation and extraction need not
know which one they hold: ``loss(batch)`` (the training objective on a :class:`GridBatch` with
gold grids) and ``extract(batch)`` (one decoded :class:`Extraction` per sentence).
:func:`build_model` makes the one a config names (``model.tagger``: GTS's grid, or the BIO
baseline of rankmixer.text.bio).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rankmixer.text.batches import GridBatch
from rankmixer.text.bio import BIOTagger
from rankmixer.text.config import ModelSection
from rankmixer.text.encoders import WordModel
from rankmixer.text.grid import IGNORE, Extraction, decode, num_tags
from rankmixer.text.inference import GridClassifier

__all__ = ["GTSModel", "TextTagger", "build_model"]


class GTSModel(WordModel):
    def __init__(self, vocab_size: int, cfg: ModelSection) -> None:
        super().__init__(vocab_size, cfg)
        self.grid = GridClassifier(2 * self.encoder.out_dim, num_tags(cfg.task), cfg.rounds, cfg.feedback)

    def forward(self, tokens: Tensor, lengths: Tensor, mask: Tensor) -> list[Tensor]:
        """Logits [B, n, n, tags] of every inference round; the last is the prediction."""
        return self.grid(self.words(tokens, lengths, mask), mask)

    def loss(self, batch: GridBatch) -> Tensor:
        """Cross-entropy of the last round's logits over the upper-triangle cells (the lower
        triangle and padding are ``IGNORE``), as the reference code trains."""
        logits = self(batch.tokens, batch.lengths, batch.mask)[-1]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.tags.reshape(-1), ignore_index=IGNORE)

    @torch.no_grad()
    def extract(self, batch: GridBatch) -> list[Extraction]:
        """The argmax grid of the last round, decoded (rankmixer.text.grid.decode)."""
        grids = self(batch.tokens, batch.lengths, batch.mask)[-1].argmax(dim=-1).cpu().numpy()
        return [decode(grids[row], int(batch.lengths[row]), self.cfg.task) for row in range(len(grids))]


TextTagger = GTSModel | BIOTagger


def build_model(vocab_size: int, cfg: ModelSection) -> TextTagger:
    """The tagger ``cfg.tagger`` names, freshly initialised."""
    return GTSModel(vocab_size, cfg) if cfg.tagger == "grid" else BIOTagger(vocab_size, cfg)
