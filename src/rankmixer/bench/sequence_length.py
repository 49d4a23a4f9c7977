"""``rankmixer bench sequence-length``: what a longer history costs each sequence model.

For every history length ``L`` of the spec (``configs/bench/sequence_length.yaml``: 50, 200,
1000) and every model, one full training step (the trainer's: Adam, BCE plus the model's
auxiliary loss) on a batch whose every row has ``L`` real behaviours, timed in interleaved
rounds (:mod:`rankmixer.bench.harness`), with

* training samples/s (best call and median round);
* peak memory: the increase of the process's peak RSS over its RSS before the variant's
  warm-up (CPU) or the allocator's peak (CUDA);
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
from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models import registry
from rankmixer.models.flops import count_flops, forward_flops_per_sample

__all__ = ["full_history_batch", "run_sequence_length_bench", "with_length"]


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


def _small_behaviour_data(root: Path, max_length: int, rows: int, log: Callable[[str], None]) -> tuple[FeatureMap, Batch]:
    from rankmixer import experiment
    from rankmixer.config import load_config
    from rankmixer.data.loader import ParquetBatches, make_loader
    import json

    opts = {"rows_train": rows, "rows_valid": 64, "rows_test": 64, "n_users": 500, "n_items": 5000,
            "n_categories": 50, "seq_len_max": max_length, "hist_max_len": max_length}
    cfg = load_config(None, ["data.dataset=behaviour", f"data.preset_options={json.dumps(opts)}",
                             f"data.prepared_dir={root / 'prepared'}", f"run_dir={root / 'run'}"])
    fm = experiment.prepare_data(cfg.data, log=log)
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
    fwd = forward_flops_per_sample(model, batch)
    model.train()
    train_flops = count_flops(step)
    dense = sum(p.numel() for n, p in model.named_parameters() if "embedding" not in n)
    return Variant(f"{label}/L{length}", "train", step, batch=len(batch), flops=train_flops, precision=precision,
                   info={"model": label, "length": length, "forward_flops_per_sample": fwd,
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
        mem = v.memory
        base = mem.get("rss_before_mb", mem.get("allocated_before_mb"))
        r["peak_memory_mb"] = (round(mem["peak_mb"] - base, 1) if dev.type == "cpu" and mem.get("peak_mb") is not None
                               else mem.get("peak_mb"))
        rows.append(r)
    for key in ("samples_per_s_median", "forward_flops_per_sample", "peak_memory_mb"):
        growth(rows, key)
    report = {"machine": machine_info(), "device": device_name(dev), "precision": precision, "batch_size": batch_size,
              "rounds": rounds, "lengths": lengths, "spec": str(spec_path), "models": sections, "rows": rows}
    out = Path(out)
    write_json(out, report)
    plot(rows, out.with_suffix(".png"), f"training cost vs history length ({device_name(dev)}, batch {batch_size})")
    log(markdown(rows))
    return report


def markdown(rows: list[dict]) -> str:
    lines = ["| model | L | samples/s (median) | x prev | forward FLOPs/sample | x prev | peak memory MB | x prev |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def g(r: dict, key: str) -> str:
        return "-" if r.get(f"{key}_growth") is None else f"{r[f'{key}_growth']:.2f}"

    for r in rows:
        lines.append(f"| {r['model']} | {r['length']} | {r['samples_per_s_median']:.0f} | {g(r, 'samples_per_s_median')} | "
                     f"{r['forward_flops_per_sample'] / 1e6:.2f}M | {g(r, 'forward_flops_per_sample')} | "
                     f"{r['peak_memory_mb']} | {g(r, 'peak_memory_mb')} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for model in dict.fromkeys(r["model"] for r in rows):
        group = sorted((r for r in rows if r["model"] == model), key=lambda r: r["length"])
        x = [r["length"] for r in group]
        axes[0].plot(x, [r["samples_per_s_median"] for r in group], marker="o", label=model)
        axes[1].plot(x, [r["forward_flops_per_sample"] for r in group], marker="o", label=model)
    for ax, ylabel in ((axes[0], "training samples/s (median round)"), (axes[1], "forward FLOPs per sample")):
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
