"""FuxiCTR's own layers, composed the way its model zoo composes them, trained by OUR trainer.

Why this shape: a side-by-side row "DCNv2 (FuxiCTR)" must differ from "DCNv2 (ours)" in the
model code only. So each ``fuxictr-*`` model is a registered rankmixer model: it takes our
:class:`~rankmixer.data.batch.Batch` from our loader, on our prepared splits, and is trained by
our trainer with the same optimizers, budget, early stopping and metrics. Inside, it is built
from the classes of the installed ``fuxictr`` wheel (2.3.10): its embeddings and initialisation
(``common.py``), ``CrossNetV2``, ``CrossNetMix``, ``CrossNet``, ``FactorizationMachine``,
``InnerProductInteraction``, ``LogisticRegression``, ``ScaledDotProductAttention``,
``DIN_Attention``, ``Dice``, ``MLP_Block``. The wheel has no GRU layers (no ``AGRUCell``,
``AUGRUCell`` or ``DynamicGRU``: those live only in the zoo's ``model_zoo/DIEN/src/DIEN.py``), so
there is no ``fuxictr-dien``.

Each module follows ``model_zoo/<Model>/src/<Model>.py`` of github.com/reczoo/FuxiCTR (the zoo
is not in the wheel); where the zoo defines a layer in the model file rather than in the wheel
(AutoInt's self-attention, FinalMLP's gates and fusion, WuKong's layer), the module writes it in
a few lines, following the zoo. Differences from FuxiCTR's ``BaseModel`` training, all on
purpose (the trainer is ours): logits out (no sigmoid inside the model), one output per task
(FuxiCTR's rank models have one), our optimizers.

Each composition's network is ``logits(X)`` on FuxiCTR's input dict, so ``zoo.py`` can also run
it inside FuxiCTR's own ``BaseModel`` for the end-to-end runner (``bench/fuxictr_e2e.py``).

Importing this package registers every ``fuxictr-*`` model without importing ``fuxictr``
(listing models works without the extra); building one imports it. ``docs/peers.md`` compares
them with ours.
"""

from rankmixer.models.fuxictr.autoint import FuxiAutoInt, FuxiAutoIntConfig, FuxiMultiHeadSelfAttention
from rankmixer.models.fuxictr.common import (
    INSTALL_HINT,
    FuxiCTRConfig,
    FuxiCTRModel,
    batch_to_inputs,
    fuxictr_feature_map,
    require_fuxictr,
)
from rankmixer.models.fuxictr.dcn import FuxiDCN, FuxiDCNConfig
from rankmixer.models.fuxictr.dcnv2 import FuxiDCNv2, FuxiDCNv2Config
from rankmixer.models.fuxictr.deepfm import FuxiDeepFM, FuxiDeepFMConfig
from rankmixer.models.fuxictr.din import FuxiDIN, FuxiDINConfig
from rankmixer.models.fuxictr.dlrm import FuxiDLRM, FuxiDLRMConfig
from rankmixer.models.fuxictr.finalmlp import (
    FuxiFeatureSelection,
    FuxiFinalMLP,
    FuxiFinalMLPConfig,
    FuxiInteractionAggregation,
)
from rankmixer.models.fuxictr.lr import FuxiLR
from rankmixer.models.fuxictr.wukong import FuxiWuKong, FuxiWuKongConfig, FuxiWuKongLayer

__all__ = [
    "INSTALL_HINT", "FuxiAutoInt", "FuxiAutoIntConfig", "FuxiCTRConfig", "FuxiCTRModel", "FuxiDCN", "FuxiDCNConfig",
    "FuxiDCNv2", "FuxiDCNv2Config", "FuxiDIN", "FuxiDINConfig", "FuxiDLRM", "FuxiDLRMConfig", "FuxiDeepFM",
    "FuxiDeepFMConfig",
    "FuxiFeatureSelection", "FuxiFinalMLP", "FuxiFinalMLPConfig", "FuxiInteractionAggregation", "FuxiLR",
    "FuxiMultiHeadSelfAttention", "FuxiWuKong", "FuxiWuKongConfig", "FuxiWuKongLayer", "batch_to_inputs",
    "fuxictr_feature_map", "require_fuxictr",
]
