"""``rankmixer bench sequence-length``: what a longer history costs each sequence model.

For every history length ``L`` of the spec (``configs/bench/sequence_length.yaml``: 50, 200,
1000) and every model, one full training step (the trainer's: Adam, BCE plus the model's
auxiliary loss) on a batch whose every row has ``L`` real behaviours, timed in interleaved
rounds (:mod:`rankmixer.bench.harness`), with

* training samples/s (best call and median round);
* activation memory: the bytes of the tensors one training forward saves for its backward
  (:func:`saved_activation_bytes`, counted through autograd's saved-tensor hooks, each storage
  once): what grows with L and bounds the batch; exact and the same on every machine, where a
  process's peak RSS on CPU mostly shows the allocator's reuse of earlier variants' memory. On
  CUDA the allocator's peak of the variant is reported too;
* matmul FLOPs per sample of the forward (:func:`rankmixer.models.flops.forward_flops_per_sample`,
  the one counter) and of the training step;
* the growth of each from one length to the next (``x L`` is linear).

Data: a small behaviour set (the synthetic behaviour generator, histories up to the largest L)
gives the vocabularies; each length gets its own feature map (the behaviour's ``max_len`` set to
L) and a batch of random in-vocabulary ids with full histories, so every model sees exactly L
behaviours per row. Identical ids for every model of one length.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rankmixer.bench.accuracy import model_section, read_yaml_keys
from rankmixer.bench.harness import Variant, run_interleaved, summary_row
from rankmixer.bench.steps import make_optimizer, make_train_step
from rankmixer.config import config_path
from rankmixer.core.files import write_json
from rankmixer.core.hardware import device_name, machine_info, pick_device
from rankmixer import experiment
from rankmixer.data.batch import Batch
from rankmixer.data.config import DataConfig
from rankmixer.data.feature_map import FeatureMap
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.models import registry
from rankmixer.models.flops import count_flops, forward_flops_per_sample
from rankmixer.nn.embedding import split_parameters

__all__ = ["full_history_batch", "run_sequence_length_bench", "saved_activation_bytes", "step_memory_mb", "with_length"]


def with_length(fm: FeatureMap, length: int) -> FeatureMap:
    """A copy of ``fm`` whose behaviours hold ``length`` positions."""
    features = [dataclasses.replace(f, max_len=length) if f.kind == "behaviour" else f for f in fm.features]
    return dataclasses.replace(fm, features=features)


def full_history_batch(fm: FeatureMap, like: Batch, length: int, seed: int = 0) -> Batch:
    """``like`` with every behaviour replaced by ``length`` real positions of random
    in-vocabulary ids (2 .. rows - 1: no pad, no OOV)."""
    g = torch.Generator().manual_seed(seed)
    B = len(like)
    behaviours = {}
    for f in fm.behaviours:
        cols = [torch.randint(2, max(3, b.vocab_size), (B, length, 1), generator=g) for b in f.fields]
        behaviours[f.name] = torch.cat(cols, dim=-1)
    return dataclasses.replace(like, behaviours=behaviours)


def saved_activation_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves for the backward while ``fn()`` runs a forward, each
    storage counted once (views of one tensor share it)."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen.setdefault((st.data_ptr(), t.device), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _small_behaviour_data(root: Path, max_length: int, rows: int, log: Callable[[str], None]) -> tuple[FeatureMap, Batch]:
    """A small behaviour set with histories up to ``max_length`` (its vocabularies) and its first
    ``rows`` training rows."""
    opts = {"rows_train": rows, "rows_valid": 64, "rows_test": 64, "n_users": 500, "n_items": 5000,
            "n_categories": 50, "seq_len_max": max_length, "hist_max_len": max_length}
    data = DataConfig(dataset="behaviour", preset_options=opts, prepared_dir=str(root / "prepared"))
    fm = experiment.prepare_data(data, log=log)
    batch = next(iter(make_loader(ParquetBatches(fm, "train", rows, shuffle=False))))
    return fm, batch


def _train_variant(label: str, section: dict, fm: FeatureMap, batch: Batch, length: int, precision: str,
                   device: torch.device) -> Variant:
    section = dict(section)
    model = registry.build_model(section.pop("name"), fm, section).to(device)
    batch = batch.to(device)
    labels = batch.labels.float()
    optimizer = make_optimizer("adam", list(model.parameters()))

    def forward():
        out = model(batch)
        return out.logits, out.aux_loss

    step = make_train_step(forward, labels, [optimizer], precision, device)
    model.train()
    activations = saved_activation_bytes(forward)
    fwd = forward_flops_per_sample(model, batch)
    model.train()
    train_flops = count_flops(step)
    dense = sum(p.numel() for p in split_parameters(model)[1])  # all but the tables
    return Variant(f"{label}/L{length}", "train", step, batch=len(batch), flops=train_flops, precision=precision,
                   info={"model": label, "length": length, "forward_flops_per_sample": fwd,
                         "activation_mb": round(activations / 2**20, 2),
                         "train_flops_per_sample": train_flops / len(batch), "dense_parameters": dense})


def growth(rows: list[dict], key: str) -> None:
    """Adds ``<key>_growth`` to each row: its value over the same model's at the previous length."""
    prev: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: (r["model"], r["length"])):
        p = prev.get(r["model"])
        r[f"{key}_growth"] = round(r[key] / p[key], 3) if p and p.get(key) else None
        prev[r["model"]] = r


def run_sequence_length_bench(
    spec_path: Path | str, out: Path | str, lengths: list[int] | None = None, models: list[str] | None = None,
    batch_size: int | None = None, rounds: int = 3, precision: str = "fp32", device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time every model of the spec at every length; write the report to ``out`` (JSON) and a
    plot beside it (``.png``). Returns the report."""
    spec_path = config_path(spec_path, kind="bench", what="sequence-length spec")
    spec = read_yaml_keys(spec_path, "sequence-length spec", ("lengths", "batch_size", "models"))
    lengths = sorted(lengths or spec["lengths"])
    batch_size = batch_size or int(spec["batch_size"])
    search = [Path(spec_path).parent]
    sections = {label: model_section(e, search, f"{spec_path}: models.{label}") for label, e in spec["models"].items()}
    if models:
        unknown = sorted(set(models) - set(sections))
        if unknown:
            raise ValueError(f"models {unknown} are not in {spec_path} ({sorted(sections)})")
        sections = {k: v for k, v in sections.items() if k in models}
    dev = pick_device(device)
    with tempfile.TemporaryDirectory(prefix="rankmixer-seqlen-") as tmp:
        fm, batch = _small_behaviour_data(Path(tmp), max(lengths), batch_size, log)
    variants = []
    for L in lengths:
        fm_l = with_length(fm, L)
        b = full_history_batch(fm_l, batch, L)
        for label, section in sections.items():
            log(f"building {label} at L={L}")
            variants.append(_train_variant(label, section, fm_l, b, L, precision, dev))
    run_interleaved(variants, rounds, dev, log=log)
    rows = []
    for v in variants:
        r = summary_row(v)
        if dev.type == "cuda":
            r["cuda_peak_mb"] = v.memory.get("peak_mb")
            r["cuda_step_mb"] = step_memory_mb(r)
        rows.append(r)
    for key in ("samples_per_s_median", "forward_flops_per_sample", "activation_mb"):
        growth(rows, key)
    report = {"machine": machine_info(), "device": device_name(dev), "precision": precision, "batch_size": batch_size,
              "rounds": rounds, "lengths": lengths, "spec": str(spec_path), "models": sections, "rows": rows}
    out = Path(out)
    write_json(out, report)
    plot(rows, out.with_suffix(".png"), f"training cost vs history length ({device_name(dev)}, batch {batch_size})")
    log(markdown(rows))
    return report


def step_memory_mb(row: dict) -> float | None:
    """CUDA: the allocator's peak during the variant's steps above what was allocated before
    them (every variant's model, optimizer state and batch stay resident through the run), so
    what one training step of this model at this length adds: activations, gradients, workspace."""
    m = row.get("memory") or {}
    if m.get("peak_mb") is None or m.get("allocated_before_mb") is None:
        return None
    return round(m["peak_mb"] - m["allocated_before_mb"], 1)


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table; on CUDA, with each step's allocator peak (:func:`step_memory_mb`)."""
    cuda = any(step_memory_mb(r) is not None and r.get("cuda_peak_mb") is not None for r in rows)
    lines = ["| model | L | train samples/s (median) | x prev | forward FLOPs/sample | x prev | activations MB/batch | x prev |"
             + (" CUDA step peak MB |" if cuda else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if cuda else "")]

    def g(r: dict, key: str) -> str:
        return "-" if r.get(f"{key}_growth") is None else f"{r[f'{key}_growth']:.2f}"

    for r in rows:
        lines.append(f"| {r['model']} | {r['length']} | {r['samples_per_s_median']:.0f} | {g(r, 'samples_per_s_median')} | "
                     f"{r['forward_flops_per_sample'] / 1e6:.2f}M | {g(r, 'forward_flops_per_sample')} | "
                     f"{r['activation_mb']:.1f} | {g(r, 'activation_mb')} |"
                     + (f" {step_memory_mb(r):,.0f} |" if cuda else ""))
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("samples_per_s_median", "training samples/s (median round)"),
              ("forward_flops_per_sample", "forward FLOPs per sample"),
              ("activation_mb", "saved activations per batch (MB)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 4.2))
    for model in dict.fromkeys(r["model"] for r in rows):
        group = sorted((r for r in rows if r["model"] == model), key=lambda r: r["length"])
        for ax, (key, _) in zip(axes, panels):
            ax.plot([r["length"] for r in group], [r[key] for r in group], marker="o", label=model)
    for ax, (_, ylabel) in zip(axes, panels):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("history length L")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
