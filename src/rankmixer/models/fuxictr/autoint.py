"""AutoInt / AutoInt+ (Song et al. 2019) composed from FuxiCTR's layers as ``model_zoo/AutoInt``
does, with the zoo's multi-head self-attention (not in the wheel) written here."""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.fuxictr.common import FuxiCTRConfig, FuxiCTRModel
from rankmixer.models.registry import register


class FuxiMultiHeadSelfAttention(nn.Module):
    """The zoo's AutoInt ``MultiHeadSelfAttention`` (``model_zoo/AutoInt/src/AutoInt.py``; not in
    the wheel) around the wheel's ``ScaledDotProductAttention``: bias-free Q/K/V projections,
    heads, optional ``sqrt(head_dim)`` scaling, residual (projected when widths differ), optional
    LayerNorm, ReLU."""

    def __init__(self, fx: SimpleNamespace, input_dim: int, attention_dim: int, num_heads: int,
                 dropout_rate: float, use_residual: bool, use_scale: bool, layer_norm: bool) -> None:
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError(f"attention_dim={attention_dim} is not divisible by num_heads={num_heads}")
        self.head_dim = attention_dim // num_heads
        self.num_heads = num_heads
        self.use_residual = use_residual
        self.scale = self.head_dim**0.5 if use_scale else None
        self.W_q = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_k = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_v = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_res = nn.Linear(input_dim, attention_dim, bias=False) if use_residual and input_dim != attention_dim else None
        self.dot_attention = fx.layers.ScaledDotProductAttention(dropout_rate)
        self.layer_norm = nn.LayerNorm(attention_dim) if layer_norm else None

    def forward(self, X: Tensor) -> Tensor:
        B = X.size(0)

        def heads(t: Tensor) -> Tensor:
            return t.view(B, -1, self.num_heads, self.head_dim).transpose(1, 2)

        out, _ = self.dot_attention(heads(self.W_q(X)), heads(self.W_k(X)), heads(self.W_v(X)), scale=self.scale)
        out = out.transpose(1, 2).contiguous().view(B, -1, self.num_heads * self.head_dim)
        if self.use_residual:
            out = out + (self.W_res(X) if self.W_res is not None else X)
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return out.relu()


class FuxiAutoIntConfig(FuxiCTRConfig):
    attention_layers: int = Field(default=2, ge=1, description="number of interacting layers")
    num_heads: int = Field(default=1, ge=1, description="attention heads")
    attention_dim: int = Field(default=8, ge=1, description="width of the attention output per field")
    use_residual: bool = Field(default=True, description="residual connection in each layer")
    use_scale: bool = Field(default=False, description="divide scores by sqrt(head_dim)")
    layer_norm: bool = Field(default=False, description="LayerNorm after each layer")
    dnn_hidden: list[int] = Field(default=[], description="AutoInt+: parallel DNN widths ([] = no DNN)")
    use_wide: bool = Field(default=False, description="add FuxiCTR's LogisticRegression term")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="FuxiCTR's net_dropout (attention and DNN)")
    batch_norm: bool = Field(default=False, description="BatchNorm in the DNN")


@register("fuxictr-autoint", FuxiAutoIntConfig)
class FuxiAutoInt(FuxiCTRModel):
    """AutoInt / AutoInt+ from FuxiCTR's layers (ScaledDotProductAttention, MLP_Block, LogisticRegression), as its model zoo composes them (Song et al. 2019; FuxiCTR).

    Follows ``model_zoo/AutoInt/src/AutoInt.py``: stacked self-attention over the field
    embeddings, flattened into a linear output, plus (AutoInt+) a DNN on the flat embeddings and
    optionally a wide (LR) term.
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiAutoIntConfig) -> None:
        super().__init__(feature_map, cfg)
        L = self.fx.layers
        T = self.num_tasks
        self.lr_layer = L.LogisticRegression(self.fx_map, use_bias=False) if cfg.use_wide else None
        self.dnn = (
            L.MLP_Block(input_dim=self.fx_map.sum_emb_out_dim(), output_dim=T, hidden_units=list(cfg.dnn_hidden),
                        hidden_activations="ReLU", output_activation=None, dropout_rates=cfg.dropout,
                        batch_norm=cfg.batch_norm)
            if cfg.dnn_hidden else None
        )
        self.self_attention = nn.Sequential(*[
            FuxiMultiHeadSelfAttention(self.fx, cfg.embedding_dim if i == 0 else cfg.attention_dim, cfg.attention_dim,
                                       cfg.num_heads, cfg.dropout, cfg.use_residual, cfg.use_scale, cfg.layer_norm)
            for i in range(cfg.attention_layers)
        ])
        self.fc = nn.Linear(self.num_fields * cfg.attention_dim, T)
        self.reset_parameters()

    def logits(self, X: dict[str, Tensor]) -> Tensor:
        feature_emb = self.embedding_layer(X)
        y = self.fc(self.self_attention(feature_emb).flatten(start_dim=1))
        if self.dnn is not None:
            y = y + self.dnn(feature_emb.flatten(start_dim=1))
        if self.lr_layer is not None:
            y = y + self.lr_layer(X)
        return y
