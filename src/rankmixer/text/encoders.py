"""The word encoders of GTS-CNN and GTS-BiLSTM: word vectors [B, n, E] -> contextual word
representations h [B, n, d], each refined by a residual self-attention over the sentence as in
the reference implementation (dot-product attention after the BiLSTM, additive attention after
the CNN). :class:`WordModel` puts trained-from-scratch word embeddings in front: the part every
tagger here (GTS's grid, the BIO baseline) shares.

Padding never leaks into a word's representation: padded keys are masked out of the
attention, and the CNN zeroes padded positions after every layer (so a sentence's output does
not depend on the other sentences in its batch, which the reference code does not ensure).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rankmixer.text.config import ModelSection

__all__ = ["BiLSTMEncoder", "CNNEncoder", "WordModel", "masked_attention"]


def masked_attention(scores: Tensor, values: Tensor, mask: Tensor) -> Tensor:
    """softmax(scores) @ values over the real words only; padded rows come out zero.
    scores [B, n, n], values [B, n, d], mask [B, n]."""
    scores = scores.masked_fill(mask[:, None, :] == 0, float("-inf"))
    return torch.bmm(torch.softmax(scores, dim=-1), values) * mask[:, :, None]


class BiLSTMEncoder(nn.Module):
    """One bidirectional LSTM layer, then h + dot-product self-attention(h)."""

    def __init__(self, embedding_dim: int, lstm_dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(embedding_dim, lstm_dim, batch_first=True, bidirectional=True)
        self.out_dim = 2 * lstm_dim

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])
        return h + masked_attention(torch.bmm(h, h.transpose(1, 2)), h, mask)


class CNNEncoder(nn.Module):
    """Two parallel convolutions (kernels 5 and 3, half the channels each), three more of
    kernel 5, ReLU and dropout between; then h + additive self-attention(h)."""

    def __init__(self, embedding_dim: int, channels: int, dropout: float, attention_dim: int = 50) -> None:
        super().__init__()
        half = channels // 2
        self.first = nn.ModuleList([nn.Conv1d(embedding_dim, half, 5, padding=2),
                                    nn.Conv1d(embedding_dim, channels - half, 3, padding=1)])
        self.rest = nn.ModuleList([nn.Conv1d(channels, channels, 5, padding=2) for _ in range(3)])
        self.dropout = nn.Dropout(dropout)
        self.w_query = nn.Linear(channels, attention_dim)
        self.w_key = nn.Linear(channels, attention_dim)
        self.v = nn.Linear(attention_dim, 1, bias=False)
        self.out_dim = channels

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        keep = mask[:, None, :]  # [B, 1, n]
        h = x.transpose(1, 2)
        h = F.relu(torch.cat([conv(h) for conv in self.first], dim=1)) * keep
        for conv in self.rest:
            h = F.relu(conv(self.dropout(h))) * keep
        h = h.transpose(1, 2)  # [B, n, channels]
        # score(i, j) = v . tanh(Wq h_i + Wk h_j)
        scores = self.v(torch.tanh(self.w_query(h)[:, :, None, :] + self.w_key(h)[:, None, :, :])).squeeze(-1)
        return h + masked_attention(scores, h, mask)


class WordModel(nn.Module):
    """Word ids -> contextual word representations: embeddings trained from scratch (id 0,
    padding, stays zero), dropout, then the configured encoder. Taggers subclass it and add
    their head."""

    def __init__(self, vocab_size: int, cfg: ModelSection) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=0)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.encoder == "bilstm":
            self.encoder: nn.Module = BiLSTMEncoder(cfg.embedding_dim, cfg.lstm_dim)
        else:
            self.encoder = CNNEncoder(cfg.embedding_dim, cfg.cnn_dim, cfg.dropout)

    def words(self, tokens: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        """h [B, n, encoder.out_dim] of every word (padding rows zero-masked on the input)."""
        x = self.dropout(self.embedding(tokens)) * mask[..., None]
        return self.encoder(x, lengths, mask)
