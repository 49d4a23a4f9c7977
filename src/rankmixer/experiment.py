"""Library functions behind the CLI: prepare data, train, evaluate, predict.

Training writes a run directory (layout: :mod:`rankmixer.core.rundir`); evaluation and
prediction read it back through :mod:`rankmixer.runs`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import torch

from rankmixer.config import ExperimentConfig, dump_config, load_config
from rankmixer.core.rundir import CONFIG_FILE, FEATURE_MAP_FILE, METRICS_FILE, TRAIN_LOG
from rankmixer.data.config import DataConfig
from rankmixer.data.datasets.base import RawFiles, get_preset
from rankmixer.data.feature_map import FeatureMap, SplitInfo
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.data.prepare import encode_raw, prepare
from rankmixer.data.schema import load_schema
from rankmixer.models import registry
from rankmixer.nn.embedding import split_parameters
from rankmixer.models.flops import forward_flops_per_sample
from rankmixer.train.distributed import Distributed, init_distributed
from rankmixer.runs import load_run
from rankmixer.train.trainer import Trainer, seed_everything


def prepare_data(data: DataConfig, log: Callable[[str], None] = print, force: bool = False) -> FeatureMap:
    """Prepare (or reuse) the dataset a config names, returning its feature map."""
    if data.raw and not Path(data.raw).exists():
        # Packaged experiments name the raw data relative to the working directory of a clone.
        raise FileNotFoundError(f"data.raw {data.raw} does not exist (relative paths are read from the working "
                                f"directory, {Path.cwd()}): pass data.raw=PATH with the raw file or folder")
    out = data.prepared_path()
    if data.schema_file:
        schema = load_schema(data.schema_file)
        if data.raw_splits:
            raw = RawFiles(by_split={k: [Path(p) for p in v] for k, v in data.raw_splits.items()})
        elif data.raw:
            raw = RawFiles(all=[Path(data.raw)])
        else:
            raise ValueError("data.schema_file needs data.raw (a file) or data.raw_splits")
        return prepare(schema, raw, out, on_bad_row=data.on_bad_row, force=force, log=log)
    if not data.dataset:
        raise ValueError("set data.dataset (a preset) or data.schema_file")
    preset = get_preset(data.dataset, **data.preset_options)
    raw_path = Path(data.raw) if data.raw else preset.default_raw_path(out)
    return prepare(preset.schema(), preset.raw_files(raw_path), out, preset=preset, raw_path=raw_path,
                   on_bad_row=data.on_bad_row, force=force, log=log)


def _tee(log: Callable[[str], None], path: Path) -> Callable[[str], None]:
    """A logger that also appends each message to ``path`` (the run's text log)."""

    def both(msg: str) -> None:
        log(msg)
        with open(path, "a") as f:
            f.write(f"{msg}\n")

    return both


def train(cfg: ExperimentConfig, resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train one experiment. Under ``torchrun`` with several processes every rank runs this;
    rank 0 alone prepares data first, logs and writes the run directory (docs/distributed.md)."""
    run_dir = cfg.resolved_run_dir()
    if resume and not run_dir.exists():
        raise FileNotFoundError(f"--resume given but run directory {run_dir} does not exist")
    env = init_distributed(cfg.train.distributed, cfg.train.device)
    is_main = env is None or env.is_main
    if not is_main:
        log = lambda msg: None  # noqa: E731  (one voice: rank 0's)
    dist_ = None if env is None else Distributed(env, cfg.train.distributed, log=log)
    try:
        if is_main:
            fm = prepare_data(cfg.data, log=log)
        if dist_ is not None:
            dist_.barrier()  # the others reuse what rank 0 prepared
            if not is_main:
                fm = prepare_data(cfg.data, log=log)
        run_dir.mkdir(parents=True, exist_ok=True)
        if is_main:
            if resume and (run_dir / CONFIG_FILE).exists():
                saved = load_config(run_dir / CONFIG_FILE)
                if saved.model_dump() != cfg.model_dump():
                    raise ValueError(f"--resume with a config that differs from {run_dir / CONFIG_FILE}")
            log = _tee(log, run_dir / TRAIN_LOG)
            if dist_ is not None:
                dist_.log = log
            dump_config(cfg, run_dir / CONFIG_FILE)
            fm.save(run_dir / FEATURE_MAP_FILE)
        seed_everything(cfg.seed)  # model initialisation depends on it (the same on every rank)
        model = registry.build_model(cfg.model_name, fm, cfg.model_params)
        n_params = sum(p.numel() for p in model.parameters())
        log(f"model {cfg.model_name}: {n_params:,} parameters; train rows {fm.splits['train'].rows:,}; run dir {run_dir}")
        trainer = Trainer(model, fm, cfg.train, run_dir, seed=cfg.seed, num_workers=cfg.data.num_workers,
                          shuffle_buffer=cfg.data.shuffle_buffer, log=log, dist=dist_)
        if dist_ is not None and is_main:
            _write_sharding_plan(run_dir, dist_)
        result = trainer.fit(resume=resume)
        result["parameters"] = n_params
        result["dense_parameters"] = sum(p.numel() for p in split_parameters(model)[1])  # all but the tables
        # Counted in one process only: under torchrun every forward of sharded tables is a collective.
        result["flops_per_sample"] = _flops_per_sample(model, fm) if dist_ is None else None
        result["bayes"] = fm.extras.get("bayes")
        if dist_ is not None:
            result["distributed"] = {"world_size": env.world_size, "backend": env.backend, "embeddings": dist_.mode}
        if is_main:
            (run_dir / METRICS_FILE).write_text(json.dumps(result, indent=2))
        return result
    finally:
        if dist_ is not None:
            import torch.distributed

            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


def _write_sharding_plan(run_dir: Path, d: Distributed) -> None:
    """sharding_plan.txt (TorchRec's printed plan) and sharding_plan.json (the shards each rank
    actually holds, gathered after sharding)."""
    info = {"world_size": d.world_size, "embeddings": d.mode, "placement": d.placement}
    (run_dir / "sharding_plan.json").write_text(json.dumps(info, indent=2))
    (run_dir / "sharding_plan.txt").write_text(d.plan_text or f"{d.mode}: every rank holds every table\n")


def _flops_per_sample(model: torch.nn.Module, fm: FeatureMap, rows: int = 256) -> float:
    """Forward matmul FLOPs per sample of the trained model on the first validation rows."""
    batch = next(iter(ParquetBatches(fm, "valid" if "valid" in fm.splits else "train", rows)))
    return forward_flops_per_sample(model, batch)


def evaluate(run_dir: str | Path, splits=("valid", "test"), log: Callable[[str], None] = print) -> dict:
    run = load_run(run_dir)
    cfg = load_config(Path(run_dir) / CONFIG_FILE)
    trainer = Trainer(run.model, run.feature_map, cfg.train.model_copy(update={"tensorboard": False, "progress": False}),
                      run_dir, seed=cfg.seed, log=log)
    return {s: trainer.evaluate(s) for s in splits}


def _is_prepared(path: Path, fm: FeatureMap) -> bool:
    """A Parquet file already in the prepared layout: every feature column, with id columns
    stored as integers (raw files keep strings or the source's own types)."""
    if path.suffix != ".parquet":
        return False
    names = pq.ParquetFile(path).schema_arrow
    cols = {n: names.field(n).type for n in names.names}
    return all(f.name in cols for f in fm.features) and all(
        str(cols[f.name]) == "int32" for f in fm.sparse
    )


def predict(
    run_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int = 8192,
    input_format: str = "auto",
    on_bad_row: str = "fail",
) -> int:
    """Batch scoring. The input is either raw rows in the dataset's source format (CSV/TSV/
    Parquet; encoded with the training vocabularies, unseen values -> OOV) or a file in the
    prepared layout (e.g. a split's part file); ``auto`` tells them apart. Raw rows need the
    same columns as the training data, labels included (fill them with 0 when unknown).
    Writes ``<task>_prob`` per task, plus the labels, as Parquet or CSV (by suffix)."""
    run = load_run(run_dir)
    fm, model, data = run.feature_map, run.model, run.data
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise FileNotFoundError(f"input not found: {input_path}")
    if input_format not in ("auto", "raw", "prepared"):
        raise ValueError(f"input_format must be auto, raw or prepared, not {input_format!r}")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    encoded = input_path
    if input_format == "raw" or (input_format == "auto" and not _is_prepared(input_path, fm)):
        schema = load_schema(fm.root / "schema.yaml")
        preset = get_preset(data.dataset, **data.preset_options) if not data.schema_file else None
        encoded = output_path.parent / f".{output_path.stem}.encoded.parquet"
        encode_raw(fm, schema, [input_path], encoded, preset=preset, raw_path=input_path.parent, on_bad_row=on_bad_row)
    try:
        rows = pq.ParquetFile(encoded).metadata.num_rows
        present = set(pq.ParquetFile(encoded).schema_arrow.names)
        missing = [f.name for f in fm.features if f.name not in present] + [t for t in fm.labels if t not in present]
        if missing:
            raise ValueError(f"{input_path}: missing column(s) {missing}")
        # A copy of the feature map whose only split is the file to score.
        scoring = FeatureMap.from_dict(fm.to_dict(), root=encoded.parent)
        scoring.splits = {"score": SplitInfo(files=[encoded.name], rows=rows, label_means=[])}
        probs, labels = [], []
        with torch.no_grad():
            for batch in make_loader(ParquetBatches(scoring, "score", batch_size, shuffle=False)):
                probs.append(torch.sigmoid(model(batch).logits.float()).numpy())
                labels.append(batch.labels.numpy())
    finally:
        if encoded != input_path:
            encoded.unlink(missing_ok=True)
    p, y = np.concatenate(probs), np.concatenate(labels)
    out = pl.DataFrame({f"{t}_prob": p[:, i] for i, t in enumerate(fm.labels)} | {t: y[:, i] for i, t in enumerate(fm.labels)})
    if output_path.suffix == ".csv":
        out.write_csv(output_path)
    else:
        out.write_parquet(output_path)
    return out.height
