"""GTS (Wu et al. 2020, "Grid Tagging Scheme for Aspect-oriented Fine-grained Opinion
Extraction", Findings of EMNLP 2020): word embeddings -> encoder (CNN or BiLSTM) -> word-pair
features [h_i; h_j] -> k-round grid classifier -> logits [B, n, n, tags] for every cell.

Embeddings are trained from scratch (id 0, padding, stays zero).
"""

from __future__ import annotations

from torch import Tensor, nn

from rankmixer.text.config import ModelSection
from rankmixer.text.encoders import BiLSTMEncoder, CNNEncoder
from rankmixer.text.grid import num_tags
from rankmixer.text.inference import GridClassifier, pair_features

__all__ = ["GTSModel"]


class GTSModel(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelSection) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=0)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.encoder == "bilstm":
            self.encoder: nn.Module = BiLSTMEncoder(cfg.embedding_dim, cfg.lstm_dim)
        else:
            self.encoder = CNNEncoder(cfg.embedding_dim, cfg.cnn_dim, cfg.dropout)
        self.grid = GridClassifier(2 * self.encoder.out_dim, num_tags(cfg.task), cfg.rounds, cfg.feedback)

    def forward(self, tokens: Tensor, lengths: Tensor, mask: Tensor) -> list[Tensor]:
        """Logits [B, n, n, tags] of every inference round; the last is the prediction."""
        x = self.dropout(self.embedding(tokens)) * mask[..., None]
        h = self.encoder(x, lengths, mask)
        return self.grid(pair_features(h), mask)
