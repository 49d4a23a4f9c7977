"""RankMixer (Zhu et al. 2025, arXiv 2507.15551), one job per module:

* ``model.py``: the config, the block, the backbone and the registered ``rankmixer`` model;
* ``sublayers.py``: the FFN sublayer and the norms both blocks build from the config;
* ``mix_revert.py``: TokenMixer-Large's mixing-and-reverting block (``block: mix_revert``);
* ``early_exit.py``: exit heads' config and inference that stops early;
* ``counting.py``: analytic parameter and FLOP counts (checked against ``models/flops.py``);
* ``variants.py``: the named sizes ``rankmixer-{tiny,100m,1b}[-moe]`` and ``tokenmixer-large[-moe]``.

Importing the package registers the model and its variants (the registry imports it by name).
The paper's facts and the choices it leaves open are in ``docs/rankmixer.md``.
"""

from rankmixer.models.rankmixer.counting import (
    describe,
    rankmixer_exit_flops,
    rankmixer_flops_per_sample,
    rankmixer_param_count,
)
from rankmixer.models.rankmixer.early_exit import EarlyExitConfig, EarlyExitOutput, forward_early_exit
from rankmixer.models.rankmixer.model import (
    RankMixer,
    RankMixerBackbone,
    RankMixerBlock,
    RankMixerConfig,
    SelfAttentionMixing,
)
from rankmixer.models.rankmixer.variants import register_variants

__all__ = [
    "EarlyExitConfig", "EarlyExitOutput", "RankMixer", "RankMixerBackbone", "RankMixerBlock", "RankMixerConfig",
    "SelfAttentionMixing", "describe", "forward_early_exit", "rankmixer_exit_flops", "rankmixer_flops_per_sample",
    "rankmixer_param_count", "register_variants",
]
