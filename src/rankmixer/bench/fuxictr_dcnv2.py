"""Our DCNv2 vs FuxiCTR's DCNv2, training and inference samples/s side by side (interleaved).

The peer is FuxiCTR 2.3.10's own code: its ``BaseModel`` (``train_step``: zero_grad, forward,
loss, backward, ``clip_grad_norm_`` at its default 10, ``optimizer.step``; optimizer from its
``get_optimizer``, i.e. ``torch.optim.Adam`` with torch's CPU defaults) and its installed layers
(``FeatureEmbedding``, ``CrossNetV2``, ``MLP_Block``), composed into the parallel DCNv2 exactly
as its model zoo's ``model_zoo/DCNv2/src/DCNv2.py`` does (the model zoo is not in the wheel).
FuxiCTR has no mixed-precision switch: its bf16 rows wrap its ``train_step`` in autocast, which
is what a user would have to add.

Ours: :class:`rankmixer.models.dcnv2.DCNv2` with the trainer's defaults (dense AdamW, embedding
Adagrad, fused kernels, no gradient clipping) and the same step as
``Trainer.train_step`` (:func:`rankmixer.bench.speed.make_train_step`). ``ours-sparsegrad``
(training only) adds ``train.sparse_gradients``: embedding gradients for the looked-up rows
only, sparse Adagrad.

Config (the issue's FuxiCTR config): 39 categorical fields (Criteo's 13 numerical + 26
categorical, all categorical as in FuxiCTR's Criteo_x1), embedding 16, cross layers 3, DNN
500x3, parallel structure, batch 4096, same random ids for both. Vocabulary per field:
``vocab_size`` (default 10,000; dense embedding gradients in both, so it sets the cost of the
embedding update).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureInfo, FeatureMap


def fuxictr_available() -> bool:
    try:
        import fuxictr.pytorch.models  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True


def dcnv2_flops_per_sample(in_dim: int, cross_layers: int, hidden: Sequence[int]) -> int:
    """Forward matmul FLOPs per sample of a parallel DCNv2 (full-rank cross, DNN, 1 logit)."""
    widths = [in_dim, *hidden]
    dnn = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    return cross_layers * 2 * in_dim * in_dim + dnn + 2 * (in_dim + widths[-1])


def build_fuxictr_dcnv2(num_fields: int, vocab_size: int, emb_dim: int, cross_layers: int, hidden: Sequence[int],
                        device: torch.device) -> nn.Module:
    """FuxiCTR's DCNv2 (parallel) on FuxiCTR's own FeatureMap, BaseModel and layers."""
    from fuxictr.features import FeatureMap as FxFeatureMap
    from fuxictr.pytorch.layers import CrossNetV2, FeatureEmbedding, MLP_Block
    from fuxictr.pytorch.models import BaseModel

    logging.getLogger().setLevel(logging.WARNING)  # FuxiCTR logs every layer it builds
    fmap = FxFeatureMap("bench_dcnv2", "")
    fmap.features = {f"f{i}": {"type": "categorical", "vocab_size": vocab_size, "padding_idx": 0, "source": ""}
                     for i in range(num_fields)}
    fmap.labels = ["label"]
    fmap.default_emb_dim = emb_dim
    fmap.num_fields = fmap.get_num_fields()
    fmap.set_column_index()

    class FuxiDCNv2(BaseModel):
        def __init__(self) -> None:
            super().__init__(fmap, model_id="DCNv2", gpu=0 if device.type == "cuda" else -1, verbose=0,
                             model_root="/tmp/fuxictr_bench", metrics=["logloss"])
            self.embedding_layer = FeatureEmbedding(fmap, emb_dim)
            input_dim = fmap.sum_emb_out_dim()
            self.crossnet = CrossNetV2(input_dim, cross_layers)
            self.parallel_dnn = MLP_Block(input_dim=input_dim, output_dim=None, hidden_units=list(hidden),
                                          hidden_activations="ReLU", output_activation=None, dropout_rates=0,
                                          batch_norm=False)
            self.fc = nn.Linear(input_dim + hidden[-1], 1)
            self.compile("adam", "binary_crossentropy", 1e-3)
            self.reset_parameters()
            self.model_to_device()
            self._max_gradient_norm = 10.0  # BaseModel.fit's default; train_step reads it

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            feature_emb = self.embedding_layer(X, flatten_emb=True)
            out = torch.cat([self.crossnet(feature_emb), self.parallel_dnn(feature_emb)], dim=-1)
            return {"y_pred": self.output_activation(self.fc(out))}

    return FuxiDCNv2()


def run_dcn_comparison(
    precisions: Sequence[str] = ("fp32", "bf16"),
    device: torch.device | str = "cpu",
    rounds: int = 3,
    batch_size: int = 4096,
    num_fields: int = 39,
    vocab_size: int = 10_000,
    emb_dim: int = 16,
    cross_layers: int = 3,
    hidden: Sequence[int] = (500, 500, 500),
    peaks: dict[str, float] | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Interleaved training (and inference) of both DCNv2s; rows with samples/s and the ratio."""
    from rankmixer.bench.speed import Variant, _summary, make_train_step, run_interleaved
    from rankmixer.core.hardware import autocast
    from rankmixer.models import registry
    from rankmixer.nn.embedding import set_sparse_gradients, split_parameters
    from rankmixer.train.optim import make_optimizer
    from rankmixer.train.config import TrainConfig

    dev = torch.device(device)
    setup = {"batch_size": batch_size, "num_fields": num_fields, "vocab_size": vocab_size, "emb_dim": emb_dim,
             "cross_layers": cross_layers, "dnn_hidden": list(hidden), "structure": "parallel", "rounds": rounds}
    in_dim = num_fields * emb_dim
    fwd = dcnv2_flops_per_sample(in_dim, cross_layers, hidden)
    setup["forward_flops_per_sample"] = fwd
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch_size, num_fields), generator=g)
    labels = torch.randint(0, 2, (batch_size, 1), generator=g).float()

    fm = FeatureMap(dataset="bench_dcnv2", schema_hash="0" * 16, labels=["label"],
                    features=[FeatureInfo(f"f{i}", "sparse", vocab_size=vocab_size) for i in range(num_fields)])
    torch.manual_seed(seed)
    ours = registry.build_model("dcnv2", fm, {"embedding_dim": emb_dim, "num_cross_layers": cross_layers,
                                              "dnn_hidden": list(hidden), "structure": "parallel"}).to(dev)
    batch = Batch(dense=torch.zeros(batch_size, 0), sparse=ids, labels=labels).to(dev)
    tcfg = TrainConfig()
    emb, dense = split_parameters(ours)
    ours_opts = [make_optimizer(tcfg.dense_optimizer, dense), make_optimizer(tcfg.sparse_optimizer, emb)]
    setup["ours_optimizers"] = [f"{type(o).__name__}({'fused' if o.defaults.get('fused') else 'loop'})" for o in ours_opts]

    # ours-sparsegrad: the same model with train.sparse_gradients (embedding gradients for the
    # looked-up rows only, sparse Adagrad): the setting for large tables (FuxiCTR has none).
    torch.manual_seed(seed)
    ours_sp = registry.build_model("dcnv2", fm, {"embedding_dim": emb_dim, "num_cross_layers": cross_layers,
                                                 "dnn_hidden": list(hidden), "structure": "parallel"}).to(dev)
    set_sparse_gradients(ours_sp, True)
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")  # as the trainer
    emb_sp, dense_sp = split_parameters(ours_sp)
    sp_opts = [make_optimizer(tcfg.dense_optimizer, dense_sp), make_optimizer(tcfg.sparse_optimizer, emb_sp, sparse=True)]

    models: list[tuple[str, Callable, Callable | None]] = []
    for p in precisions:
        step = make_train_step(lambda: (ours(batch).logits, None), batch.labels, ours_opts, p, dev)
        models.append((f"ours/train/{p}", lambda step=step: (ours.train(), step()),
                       lambda p=p: _infer(lambda: ours(batch).logits, ours, p, dev)))
        sp_step = make_train_step(lambda: (ours_sp(batch).logits, None), batch.labels, sp_opts, p, dev)
        models.append((f"ours-sparsegrad/train/{p}", lambda step=sp_step: (ours_sp.train(), step()), None))
    if fuxictr_available():
        torch.manual_seed(seed)
        peer = build_fuxictr_dcnv2(num_fields, vocab_size, emb_dim, cross_layers, hidden, dev)
        inputs = {f"f{i}": ids[:, i].to(dev) for i in range(num_fields)}
        inputs["label"] = labels[:, 0].to(dev)
        setup["fuxictr_optimizer"] = f"{type(peer.optimizer).__name__}(torch default, loop on CPU)"
        for p in precisions:
            def peer_step(p=p):
                peer.train()
                with autocast(p, dev):
                    return peer.train_step(inputs)

            models.append((f"fuxictr/train/{p}", peer_step,
                           lambda p=p: _infer(lambda: peer(inputs)["y_pred"], peer, p, dev)))
    else:
        setup["note"] = "fuxictr is not installed (pip install -c constraints/cpu.txt '.[fuxictr]'): peer skipped"
        log(setup["note"])
    variants = []
    for name, train_fn, infer_fn in models:
        impl, _, p = name.split("/")
        variants.append(Variant(f"dcnv2-{impl}/train/{p}/b{batch_size}", "train", train_fn, batch=batch_size,
                                flops=3 * fwd * batch_size, precision=p, impl=f"dcnv2-{impl}", peak_key=p, warmup=2))
        if infer_fn is not None:
                variants.append(Variant(f"dcnv2-{impl}/infer/{p}/b{batch_size}", "infer", infer_fn, batch=batch_size,
                                    flops=fwd * batch_size, precision=p, impl=f"dcnv2-{impl}", peak_key=p))
    log(f"DCNv2 vs FuxiCTR: {len(variants)} variants x {rounds} rounds")
    run_interleaved(variants, rounds, dev, log=log)
    peaks = peaks or {}
    rows = [_summary(v, {k: [x] * rounds for k, x in peaks.items()}, peaks) for v in variants]
    index = {(r["impl"], r["kind"], r["precision"]): r for r in rows}
    for (impl, kind, p), r in index.items():
        peer_row = index.get(("dcnv2-fuxictr", kind, p))
        if impl in ("dcnv2-ours", "dcnv2-ours-sparsegrad") and peer_row is not None:
            r["vs_fuxictr_best"] = round(r["samples_per_s_best"] / peer_row["samples_per_s_best"], 2)
            r["vs_fuxictr_median"] = round(r["samples_per_s_median"] / peer_row["samples_per_s_median"], 2)
            fp32_peer = index.get(("dcnv2-fuxictr", kind, "fp32"))
            if fp32_peer is not None:
                r["vs_fuxictr_fp32_best"] = round(r["samples_per_s_best"] / fp32_peer["samples_per_s_best"], 2)
    return {"setup": setup, "rows": rows}


def _infer(fn: Callable[[], torch.Tensor], model: nn.Module, precision: str, dev: torch.device) -> torch.Tensor:
    from rankmixer.core.hardware import autocast

    model.eval()
    with torch.inference_mode(), autocast(precision, dev):
        return fn()


def format_dcn_table(dcn: dict) -> str:
    s = dcn["setup"]
    lines = [f"DCNv2 ({s['num_fields']} fields, emb {s['emb_dim']}, cross {s['cross_layers']}, DNN "
             f"{'x'.join(map(str, s['dnn_hidden']))}, batch {s['batch_size']}, vocab {s['vocab_size']}/field), "
             f"{s['rounds']} interleaved rounds" + (f"; {s['note']}" if "note" in s else ""),
             "| variant | samples/s best / median | ms best | MFU best | vs FuxiCTR same precision | vs FuxiCTR fp32 |",
             "|---|---|---|---|---|---|"]
    for r in dcn["rows"]:
        mfu = f"{r['mfu_best']:.1%}" if "mfu_best" in r else "-"
        vs = f"{r['vs_fuxictr_best']:.2f}x / {r['vs_fuxictr_median']:.2f}x" if "vs_fuxictr_best" in r else "-"
        vs32 = f"{r['vs_fuxictr_fp32_best']:.2f}x" if "vs_fuxictr_fp32_best" in r else "-"
        lines.append(f"| {r['name']} | {r['samples_per_s_best']:,.0f} / {r['samples_per_s_median']:,.0f} | "
                     f"{r['ms_best']:.1f} | {mfu} | {vs} | {vs32} |")
    return "\n".join(lines)


__all__ = ["build_fuxictr_dcnv2", "dcnv2_flops_per_sample", "format_dcn_table", "fuxictr_available",
           "run_dcn_comparison"]
