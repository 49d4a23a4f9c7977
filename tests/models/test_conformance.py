"""What every registered model and variant must do, run over ``registry.available()``.

Sizes: ``tests.factories.SMALL`` holds the test-size overrides of each *base* model (one
place). A variant is tested as ``build_model(variant, fm, SMALL[base])``, its presets merged
under its base's test sizes, so it keeps every preset that ``SMALL`` does not shrink: a
rankmixer variant keeps its L, k and MoE experts and routing (T, D and the embedding shrink);
``autoint-plus`` keeps its DNN; ``concat-mlp-100m``'s only preset is its widths, so at test size
it is ``concat-mlp``. Every check below runs on every name, variants included; names whose
test-size configs coincide (rankmixer-100m and -1b, rankmixer and -tiny, concat-mlp and -100m)
run as one case whose id names them all, not twice.

Default configs: each name's is built too. Those above ``tests.factories.LARGE`` parameters
(counted on the meta device, so the rule picks them, not a list: today rankmixer-100m/1b, their
MoE versions and concat-mlp-100m) are built whole on the meta device only (no memory, no
forward; RankMixer's analytic count is checked against that module in
``test_rankmixer_counting.py``); every other default config runs a real forward.

Skips: only the fuxictr-* models, and only when the optional ``fuxictr`` extra is not
installed, with that reason. Model-specific behaviour (one model's switches, equivalences with
references) lives in the per-model test files.
"""

from __future__ import annotations

import re

import pytest
import torch
from tests.factories import (
    LARGE,
    SMALL,
    base_model,
    check_output_and_gradients,
    check_sparse_embedding_step,
    fit_auc,
    make_feature_map,
    planted_problem,
    model_param,
    random_batch,
    registered_models,
    small_model,
)

from rankmixer.models import registry
from rankmixer.models.base import ModelConfig

pytestmark = pytest.mark.usefixtures("single_thread")

# Embedding modules that switch to sparse gradients, on make_feature_map()'s 7 id features
# (5 tables: s0, s1, s2, tags, clicks; s0_bag and hist share s0's and s1's). Ours: one
# FeatureEmbedding owns them all (DeepFM has a second one, its first-order weights). FuxiCTR: one
# nn.Embedding per table (5), plus, in each LogisticRegression layer (fuxictr-lr: one per task,
# 2 here; DeepFM's first order; AutoInt's wide term), a 1-dim table per feature (7: it does not
# share tables). CETNet at test size: one FeatureEmbedding per member (3).
TABLES = {"deepfm": 2, "cetnet": 3, "fuxictr-lr": 2 * 7, "fuxictr-deepfm": 5 + 7, "fuxictr-autoint": 5 + 7}
FUXICTR_TABLES = 5

# Parameters whose gradient is zero at initialisation by design: a FinalMLP gate without context
# fields reads a learned context vector that starts at zero, so the gate's first layer gets no
# gradient until that vector moves (ours). FuxiCTR's also zero-initialises the gate's hidden
# biases, so its hidden ReLU outputs 0: the context vector, the hidden layer and the output
# layer's weight get none, only the output bias learns (test_fuxictr.py shows it).
ZERO_GRAD_AT_INIT = {
    "finalmlp": ("gates.0.mlp.layers.0.weight", "gates.1.mlp.layers.0.weight"),
    "cetnet": ("members.1.gates.0.mlp.layers.0.weight", "members.1.gates.1.mlp.layers.0.weight"),  # its FinalMLP
    "fuxictr-finalmlp": tuple(f"fs_module.{p}" for s in "01" for p in (
        f"ctx_bias.{s}", f"gates.{s}.mlp.0.weight", f"gates.{s}.mlp.0.bias", f"gates.{s}.mlp.2.weight")),
}

# Models that can represent only additive effects (no interaction term) fit an additive problem.
ADDITIVE = {"lr", "fuxictr-lr"}


MODELS = registry.available(general=True)  # models bound to one kind of data have their own tests


def _test_size_cases() -> list:
    """One case per distinct model at test size: names whose test-size configs coincide (same
    class, same validated config) share one, with an id naming them all (rankmixer-100m and -1b
    differ only in T and D, which SMALL sets; rankmixer-tiny presets what SMALL sets)."""
    groups: dict[str, list[str]] = {}
    for name, entry in MODELS.items():
        cfg = registry.parse_config(name, SMALL.get(base_model(name), {}))
        groups.setdefault(f"{entry.model_cls.__qualname__} {cfg.model_dump_json()}", []).append(name)
    return [model_param(names[0], id="=".join(names)) for names in groups.values()]


CASES = _test_size_cases()


def test_every_base_model_has_test_sizes():
    bases = {e.base or n for n, e in MODELS.items()}
    assert bases == set(SMALL), f"add to SMALL: {bases - set(SMALL)}; remove: {set(SMALL) - bases}"


@pytest.mark.parametrize("name", list(MODELS))
def test_registered_with_a_one_line_summary_citing_its_paper(name):
    entry = MODELS[name]
    assert issubclass(entry.config_cls, ModelConfig)
    assert entry.summary and "\n" not in entry.summary
    base = MODELS[base_model(name)]
    assert re.search(r"et al\. (19|20)\d\d", base.summary), f"{base.name}: {base.summary}"
    if entry.base is not None:  # a variant names what it presets over its base
        assert entry.defaults and entry.base in MODELS


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("num_tasks", [1, 3])
def test_output_shape_dtype_and_gradients(name, num_tasks, generator):
    fm = make_feature_map(num_tasks=num_tasks)
    model = small_model(name, fm).train()
    check_output_and_gradients(name, model, random_batch(fm, 16, generator), num_tasks,
                               ZERO_GRAD_AT_INIT.get(base_model(name), ()))


MISSING_KINDS = {
    "no_dense": dict(n_dense=0),
    "no_bags_no_sequences": dict(bags=False, sequences=False),
    "sparse_only": dict(n_dense=0, bags=False, sequences=False),
    "no_sparse": dict(n_sparse=0),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("kind", list(MISSING_KINDS))
def test_feature_maps_missing_kinds(name, kind, generator):
    fm = make_feature_map(num_tasks=2, **MISSING_KINDS[kind])
    out = small_model(name, fm).train()(random_batch(fm, 8, generator))
    assert out.logits.shape == (8, 2) and torch.isfinite(out.logits).all()
    out.logits.sum().backward()


@pytest.mark.parametrize("name", registered_models())
def test_default_config_builds_and_runs(name, tiny_feature_map, generator):
    with torch.device("meta"):
        meta = registry.build_model(name, tiny_feature_map)
    n = sum(p.numel() for p in meta.parameters())
    assert n > 0 and all(p.device.type == "meta" for p in meta.parameters())
    if n > LARGE:
        return  # built whole on the meta device; runs at its own structure with SMALL widths above
    torch.manual_seed(0)
    model = registry.build_model(name, tiny_feature_map).eval()
    assert sum(p.numel() for p in model.parameters()) == n
    with torch.no_grad():
        out = model(random_batch(tiny_feature_map, 4, generator))
    assert out.logits.shape == (4, 2) and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_config_typo_raises_naming_the_key(name):
    with pytest.raises(ValueError, match="embeding_dim"):
        registry.parse_config(name, {"embeding_dim": 8})
    assert registry.parse_config(name, {"embedding_dim": 8}).embedding_dim == 8


@pytest.mark.parametrize("name", CASES)
def test_sparse_embedding_step(name, tiny_feature_map, generator):
    base = base_model(name)
    tables = TABLES.get(base, FUXICTR_TABLES if base.startswith("fuxictr-") else 1)
    check_sparse_embedding_step(small_model(name, tiny_feature_map), tiny_feature_map, generator, tables=tables)


# Fitting these takes 4-20 s each on 2 cores: run with -m slow (their other checks stay in the
# default suite, and the dense RankMixer and the small MoE cases fit by default).
SLOW_TO_FIT = {"tokenmixer-large", "tokenmixer-large-moe", "rankmixer-100m-moe", "dhen", "wukong"}
FIT_CASES = [pytest.param(*c.values, id=c.id, marks=[*c.marks, pytest.mark.slow]) if c.values[0] in SLOW_TO_FIT else c
             for c in CASES]


@pytest.mark.parametrize("name", FIT_CASES)
def test_fits_a_planted_problem(name):
    """The label is a random table of two ids (an interaction) or, for the linear models, an
    additive function of them: every model must fit it (train AUC, scikit-learn)."""
    fm, batch = planted_problem(additive=base_model(name) in ADDITIVE)
    auc = fit_auc(small_model(name, fm), batch)
    assert auc > 0.9, f"{name}: train AUC {auc:.3f}"
