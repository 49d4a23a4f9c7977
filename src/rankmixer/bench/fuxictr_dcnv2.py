"""Our DCNv2 vs FuxiCTR's DCNv2, training and inference samples/s side by side (interleaved).

The peer network is the registered ``fuxictr-dcnv2`` (:mod:`rankmixer.models.fuxictr`: FuxiCTR
2.3.10's own ``FeatureEmbedding``, ``CrossNetV2`` and ``MLP_Block``, composed as its model zoo's
``DCNv2.py`` does), built through the registry: the project's only FuxiCTR DCNv2. It is timed
two ways:

* ``dcnv2-fuxictr``: FuxiCTR's own ``BaseModel.train_step`` around that network (zero_grad,
  forward with its sigmoid, BCE, backward, ``clip_grad_norm_`` at its default 10, its
  ``torch.optim.Adam`` with torch's CPU defaults). Why FuxiCTR's step and not ours: this row
  answers "how fast does a FuxiCTR user train", and its optimizer loop and clipping are part of
  that cost. FuxiCTR has no mixed-precision switch: its bf16 rows wrap its step in autocast,
  which is what a user would have to add. :func:`fuxictr_base_model` is the thinnest
  ``BaseModel`` that runs it (its only override: labels read from our batch).
* ``dcnv2-fuxictr-ourstep``: the same network trained by our trainer's step and optimizers,
  so that against ``dcnv2-ours`` only the model code differs.

Ours: :class:`rankmixer.models.dcnv2.DCNv2` with the trainer's defaults (dense AdamW, embedding
Adagrad, fused kernels, no gradient clipping) and the step of ``Trainer.train_step``
(:func:`rankmixer.bench.steps.make_train_step`). ``dcnv2-ours-sparsegrad`` (training only) adds
``train.sparse_gradients``: embedding gradients for the looked-up rows only, sparse Adagrad.

Config (the issue's FuxiCTR config): 39 categorical fields (Criteo's 13 numerical + 26
categorical, all categorical as in FuxiCTR's Criteo_x1), embedding 16, cross layers 3, DNN
500x3, parallel structure, batch 4096, the same random ids for every model. ``vocab_size`` per
field (default 10,000) sets the cost of the dense embedding update. FLOPs per sample are counted
on each network by :mod:`rankmixer.models.flops` (forward, and forward + backward for a step).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from rankmixer.bench.harness import Variant, format_mfu, run_interleaved, summary_row
from rankmixer.bench.steps import infer_call, make_train_step
from rankmixer.core.hardware import autocast
from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureInfo, FeatureMap
from rankmixer.models import registry
from rankmixer.models.flops import train_flops_per_sample
from rankmixer.nn.embedding import set_sparse_gradients, split_parameters
from rankmixer.train.config import TrainConfig
from rankmixer.train.optim import make_optimizer

__all__ = ["bench_feature_map", "fuxictr_base_model", "format_dcn_table", "fuxictr_available", "run_dcn_comparison"]


def fuxictr_available() -> bool:
    try:
        import fuxictr.pytorch.models  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True


def bench_feature_map(num_fields: int, vocab_size: int) -> FeatureMap:
    """``num_fields`` categorical fields of ``vocab_size`` ids each, one binary label."""
    return FeatureMap(dataset="bench_dcnv2", schema_hash="0" * 16, labels=["label"],
                      features=[FeatureInfo(f"f{i}", "sparse", vocab_size=vocab_size) for i in range(num_fields)])


def fuxictr_base_model(net: nn.Module, device: torch.device) -> nn.Module:
    """FuxiCTR's ``BaseModel`` around a registered ``fuxictr-*`` network ``net``: its
    ``train_step(batch)`` is FuxiCTR's own (optimizer ``adam``, lr 1e-3, BCE, clipping at 10);
    ``forward(batch)`` returns ``{"y_pred": sigmoid(logits)}`` as FuxiCTR models do. (A function:
    the class derives from ``BaseModel``, which exists only where ``fuxictr`` is installed.)"""
    from fuxictr.pytorch.models import BaseModel

    logging.getLogger().setLevel(logging.WARNING)  # FuxiCTR logs every layer it builds

    class _Step(BaseModel):
        def __init__(self) -> None:
            super().__init__(net.fx_map, model_id="DCNv2", gpu=0 if device.type == "cuda" else -1, verbose=0,
                             model_root="/tmp/fuxictr_bench", metrics=["logloss"])
            self.net = net
            self.compile("adam", "binary_crossentropy", 1e-3)
            self.model_to_device()
            self._max_gradient_norm = 10.0  # BaseModel.fit's default; train_step reads it

        def forward(self, batch: Batch) -> dict:
            return {"y_pred": self.output_activation(self.net(batch).logits)}

        def get_labels(self, batch: Batch) -> torch.Tensor:
            return batch.labels[:, :1].float()

    return _Step()


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
    """Interleaved training (and inference) of both DCNv2s; rows with samples/s, MFU against
    ``peaks`` (the speed run's stated peaks) and the ratios to FuxiCTR's rows."""
    dev = torch.device(device)
    setup = {"batch_size": batch_size, "num_fields": num_fields, "vocab_size": vocab_size, "emb_dim": emb_dim,
             "cross_layers": cross_layers, "dnn_hidden": list(hidden), "structure": "parallel", "rounds": rounds}
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch_size, num_fields), generator=g)
    labels = torch.randint(0, 2, (batch_size, 1), generator=g).float()
    batch = Batch(dense=torch.zeros(batch_size, 0), sparse=ids, labels=labels).to(dev)
    fm = bench_feature_map(num_fields, vocab_size)
    arch = {"embedding_dim": emb_dim, "num_cross_layers": cross_layers, "dnn_hidden": list(hidden),
            "structure": "parallel"}
    tcfg = TrainConfig()

    def build(name: str) -> nn.Module:
        torch.manual_seed(seed)
        return registry.build_model(name, fm, arch).to(dev)

    def trainer_optimizers(model: nn.Module, sparse: bool = False) -> list[torch.optim.Optimizer]:
        emb, dense = split_parameters(model)
        return [make_optimizer(tcfg.dense_optimizer, dense), make_optimizer(tcfg.sparse_optimizer, emb, sparse=sparse)]

    def flops_of(model: nn.Module) -> dict[str, float]:
        rows = min(batch_size, 8)  # per-sample counts do not depend on the batch
        small = Batch(dense=batch.dense[:rows], sparse=batch.sparse[:rows], labels=batch.labels[:rows])
        return train_flops_per_sample(model, lambda: model(small).logits.float().sum(), rows)

    ours = build("dcnv2")
    ours_opts = trainer_optimizers(ours)
    setup["ours_optimizers"] = [f"{type(o).__name__}({'fused' if o.defaults.get('fused') else 'loop'})" for o in ours_opts]
    # ours-sparsegrad: the same model with train.sparse_gradients (embedding gradients for the
    # looked-up rows only, sparse Adagrad): the setting for large tables (FuxiCTR has none).
    ours_sp = build("dcnv2")
    set_sparse_gradients(ours_sp, True)
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")  # as the trainer
    sp_opts = trainer_optimizers(ours_sp, sparse=True)
    counted = {"dcnv2-ours": flops_of(ours)}
    counted["dcnv2-ours-sparsegrad"] = counted["dcnv2-ours"]

    # (impl, train step, inference call or None), per precision
    models: list[tuple[str, Callable[[str], Callable], Callable[[str], Callable] | None]] = [
        ("dcnv2-ours", lambda p: _trained(ours, make_train_step(lambda: (ours(batch).logits, None), batch.labels,
                                                                 ours_opts, p, dev)),
         lambda p: lambda: infer_call(lambda: ours(batch).logits, ours, p, dev)),
        ("dcnv2-ours-sparsegrad", lambda p: _trained(ours_sp, make_train_step(
            lambda: (ours_sp(batch).logits, None), batch.labels, sp_opts, p, dev)), None),
    ]
    if fuxictr_available():
        peer_net = build("fuxictr-dcnv2")
        peer = fuxictr_base_model(peer_net, dev)
        # The same weights under our trainer's step: optimizer state apart, the values do not
        # change the speed, and one copy of the tables is enough.
        net_opts = trainer_optimizers(peer_net)
        counted["dcnv2-fuxictr"] = counted["dcnv2-fuxictr-ourstep"] = flops_of(peer_net)
        setup["fuxictr_optimizer"] = f"{type(peer.optimizer).__name__}(torch default, loop on CPU)"

        def peer_step(p: str) -> Callable:
            def step():
                peer.train()
                with autocast(p, dev):
                    return peer.train_step(batch)
            return step

        models += [
            ("dcnv2-fuxictr", peer_step, lambda p: lambda: infer_call(lambda: peer(batch)["y_pred"], peer, p, dev)),
            ("dcnv2-fuxictr-ourstep", lambda p: _trained(peer_net, make_train_step(
                lambda: (peer_net(batch).logits, None), batch.labels, net_opts, p, dev)), None),
        ]
    else:
        setup["note"] = "fuxictr is not installed (pip install -c constraints/cpu.txt '.[fuxictr]'): peer skipped"
        log(setup["note"])
    setup["flops_per_sample"] = counted
    setup["forward_flops_per_sample"] = counted["dcnv2-ours"]["forward_per_sample"]
    variants = []
    for p in precisions:
        for impl, train_fn, infer_fn in models:
            fl = counted[impl]
            variants.append(Variant(f"{impl}/train/{p}/b{batch_size}", "train", train_fn(p), batch=batch_size,
                                    flops=fl["train_per_sample"] * batch_size, precision=p, impl=impl, peak_key=p,
                                    warmup=2))
            if infer_fn is not None:
                variants.append(Variant(f"{impl}/infer/{p}/b{batch_size}", "infer", infer_fn(p), batch=batch_size,
                                        flops=fl["forward_per_sample"] * batch_size, precision=p, impl=impl,
                                        peak_key=p))
    log(f"DCNv2 vs FuxiCTR: {len(variants)} variants x {rounds} rounds")
    run_interleaved(variants, rounds, dev, log=log)
    rows = [summary_row(v, peaks) for v in variants]
    _add_fuxictr_ratios(rows)
    return {"setup": setup, "rows": rows}


def _trained(model: nn.Module, step: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def fn() -> torch.Tensor:
        model.train()
        return step()
    return fn


def _add_fuxictr_ratios(rows: list[dict]) -> None:
    """``vs_fuxictr`` (samples/s over FuxiCTR's own step, same kind and precision) and
    ``vs_fuxictr_fp32`` (over its fp32 row) on every other row."""
    index = {(r["impl"], r["kind"], r["precision"]): r for r in rows}
    for (impl, kind, p), r in index.items():
        peer_row = index.get(("dcnv2-fuxictr", kind, p))
        if impl == "dcnv2-fuxictr" or peer_row is None:
            continue
        r["vs_fuxictr_best"] = round(r["samples_per_s_best"] / peer_row["samples_per_s_best"], 2)
        r["vs_fuxictr_median"] = round(r["samples_per_s_median"] / peer_row["samples_per_s_median"], 2)
        fp32_peer = index.get(("dcnv2-fuxictr", kind, "fp32"))
        if fp32_peer is not None:
            r["vs_fuxictr_fp32_best"] = round(r["samples_per_s_best"] / fp32_peer["samples_per_s_best"], 2)


def format_dcn_table(dcn: dict) -> str:
    """The setup line, then :func:`dcn_table`."""
    s = dcn["setup"]
    return (f"DCNv2 ({s['num_fields']} fields, emb {s['emb_dim']}, cross {s['cross_layers']}, DNN "
            f"{'x'.join(map(str, s['dnn_hidden']))}, batch {s['batch_size']}, vocab {s['vocab_size']}/field), "
            f"{s['rounds']} interleaved rounds" + (f"; {s['note']}" if "note" in s else "") + "\n" + dcn_table(dcn))


def dcn_table(dcn: dict) -> str:
    """Our DCNv2 and FuxiCTR's side by side, as a Markdown table."""
    lines = ["| variant | samples/s best / median | ms best | MFU best / median | vs FuxiCTR same precision "
             "| vs FuxiCTR fp32 |",
             "|---|---|---|---|---|---|"]
    for r in dcn["rows"]:
        mfu = format_mfu(r)
        vs = f"{r['vs_fuxictr_best']:.2f}x / {r['vs_fuxictr_median']:.2f}x" if "vs_fuxictr_best" in r else "-"
        vs32 = f"{r['vs_fuxictr_fp32_best']:.2f}x" if "vs_fuxictr_fp32_best" in r else "-"
        lines.append(f"| {r['name']} | {r['samples_per_s_best']:,.0f} / {r['samples_per_s_median']:,.0f} | "
                     f"{r['ms_best']:.1f} | {mfu} | {vs} | {vs32} |")
    return "\n".join(lines)
