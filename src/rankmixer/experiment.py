"""Library functions behind the CLI: prepare data, train, evaluate, predict.

Training writes a run directory (layout and lock: :mod:`rankmixer.core.rundir`); evaluation and
prediction read it back through :mod:`rankmixer.runs`. Every output goes through
:mod:`rankmixer.core.files`: it may not overlap an input, replaces only what rankmixer wrote and
only when asked (``overwrite``), and is written atomically (docs/reliability.md).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import torch

from rankmixer.config import ExperimentConfig, dump_config, load_config, validate
from rankmixer.core.files import (
    OutputError,
    atomic_file,
    check_output,
    marker_kind,
    output_format,
    parquet_key_values,
    unique_suffix,
    write_marker,
    write_text_atomic,
)
from rankmixer.core.rundir import (
    CONFIG_FILE,
    FEATURE_MAP_FILE,
    MEASURED_AUTO_FILE,
    METRICS_FILE,
    RUN_KIND,
    TEST_PREDICTIONS,
    TRAIN_LOG,
    RunDirError,
    RunLock,
    clear_run,
    foreign_entries,
    run_entries,
)
from rankmixer.core.hardware import autocast, machine_info, pick_device
from rankmixer.core.metrics import compute_metrics
from rankmixer.core.predictions import count_positives, few_positives, save_predictions
from rankmixer.data.config import DataConfig
from rankmixer.data.datasets.base import DatasetPreset, RawFiles, get_preset
from rankmixer.data.feature_map import FeatureMap, SplitInfo
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.data.prepare import encode_raw, prepare
from rankmixer.data.schema import Schema, load_schema
from rankmixer.models import registry
from rankmixer.nn.embedding import split_parameters
from rankmixer.models.flops import forward_flops_per_sample
from rankmixer.train.distributed import Distributed, init_distributed
from rankmixer.runs import incomplete_reason, load_run
from rankmixer.system.auto import apply_ffn_choices, measured_ffn_impls, measured_optimizer_impl
from rankmixer.train.trainer import Trainer, seed_everything, task_loss, train_rows


def _data_inputs(data: DataConfig) -> list[Path]:
    """The files and folders a data config reads (none of them may be an output)."""
    paths = [Path(data.raw)] if data.raw else []
    paths += [Path(p) for files in (data.raw_splits or {}).values() for p in files]
    if data.schema_file:
        paths.append(Path(data.schema_file))
    return paths


@dataclass(frozen=True)
class DataSource:
    """What a data config reads: the schema, the raw files, and (for a preset) the preset and its
    raw path; ``inputs`` are further files read (the schema file)."""

    schema: Schema
    raw: RawFiles
    preset: DatasetPreset | None = None
    raw_path: Path | None = None
    inputs: tuple[Path, ...] = ()


def data_source(data: DataConfig) -> DataSource:
    """The schema and raw files a data config names (a preset generating its raw files, the
    synthetic one, writes them here on first use)."""
    if data.raw and not Path(data.raw).exists():
        # Packaged experiments name the raw data relative to the working directory of a clone.
        raise FileNotFoundError(f"data.raw {data.raw} does not exist (relative paths are read from the working "
                                f"directory, {Path.cwd()}): pass data.raw=PATH with the raw file or folder")
    if data.schema_file:
        schema = load_schema(data.schema_file)
        if data.raw_splits:
            raw = RawFiles(by_split={k: [Path(p) for p in v] for k, v in data.raw_splits.items()})
        elif data.raw:
            raw = RawFiles(all=[Path(data.raw)])
        else:
            raise ValueError("data.schema_file needs data.raw (a file) or data.raw_splits")
        return DataSource(schema, raw, inputs=(Path(data.schema_file),))
    if not data.dataset:
        raise ValueError("set data.dataset (a preset) or data.schema_file")
    preset = get_preset(data.dataset, **data.preset_options)
    raw_path = Path(data.raw) if data.raw else preset.default_raw_path(data.prepared_path())
    # Before raw_files: a preset that generates its files (synthetic) must not write into the
    # prepared data directory.
    check_output(data.prepared_path(), [raw_path], "prepared data directory")
    return DataSource(preset.schema(), preset.raw_files(raw_path), preset, raw_path)


def prepare_data(data: DataConfig, log: Callable[[str], None] = print, force: bool = False) -> FeatureMap:
    """Prepare (or reuse) the dataset a config names, returning its feature map. ``force``
    (``data prepare --force``) prepares again, and may replace prepared data of another dataset
    (see :func:`rankmixer.data.prepare.prepare`)."""
    src = data_source(data)
    return prepare(src.schema, src.raw, data.prepared_path(), preset=src.preset, raw_path=src.raw_path,
                   on_bad_row=data.on_bad_row, force=force, log=log, inputs=list(src.inputs))


def _tee(log: Callable[[str], None], path: Path) -> Callable[[str], None]:
    """A logger that also appends each message to ``path`` (the run's text log)."""

    def both(msg: str) -> None:
        log(msg)
        with open(path, "a") as f:
            f.write(f"{msg}\n")

    return both


def train(cfg: ExperimentConfig, resume: bool = False, log: Callable[[str], None] = print, *,
          overwrite: bool = False) -> dict:
    """Train one experiment. Under ``torchrun`` with several processes every rank runs this;
    rank 0 alone prepares data first, logs and writes the run directory (docs/distributed.md).

    The run directory has one owner: rank 0 holds its lock until training ends, and a second
    writer fails at once naming the holder. A directory that already holds files continues with
    ``resume`` (the saved config must match; the keys that differ are named), starts over with
    ``overwrite`` (what training wrote is removed first, other files are kept), and is an error
    otherwise.

    Besides ``metrics.json`` (with ``positives`` and ``pooled``, see :func:`_prediction_report`)
    a single-process run writes ``test_predictions.npz`` (:mod:`rankmixer.core.predictions`)."""
    run_dir = cfg.resolved_run_dir()
    pick_device(cfg.train.device)  # device cuda without CUDA: say so before preparing anything
    if resume and overwrite:
        raise ValueError("--resume continues the run in the run directory, --overwrite starts it over: give one")
    check_output(run_dir, [cfg.data.prepared_path(), *_data_inputs(cfg.data)], "run directory")
    if resume and not (run_dir / CONFIG_FILE).is_file():
        what = "does not exist" if not run_dir.exists() else f"holds no run to resume (no {CONFIG_FILE})"
        raise RunDirError(f"--resume given but run directory {run_dir} {what}")
    env = init_distributed(cfg.train.distributed, cfg.train.device)
    is_main = env is None or env.is_main
    if not is_main:
        log = lambda msg: None  # noqa: E731  (one voice: rank 0's)
    dist_ = None if env is None else Distributed(env, cfg.train.distributed, log=log)
    lock = None
    try:
        if is_main:
            lock = RunLock.acquire(run_dir, "train")
            lock.report_stale(log)
            if resume:
                _check_resume_config(cfg, run_dir)
            else:
                _start_fresh(run_dir, overwrite, log)
            write_marker(run_dir, RUN_KIND)
            fm = prepare_data(cfg.data, log=log)
        if dist_ is not None:
            dist_.barrier()  # the others reuse what rank 0 prepared
            if not is_main:
                fm = prepare_data(cfg.data, log=log)
        run_dir.mkdir(parents=True, exist_ok=True)
        if is_main:
            log = _tee(log, run_dir / TRAIN_LOG)
            if dist_ is not None:
                dist_.log = log
            with atomic_file(run_dir / CONFIG_FILE) as tmp:
                dump_config(cfg, tmp)
            with atomic_file(run_dir / FEATURE_MAP_FILE) as tmp:
                fm.save(tmp)
        seed_everything(cfg.seed)  # model initialisation depends on it (the same on every rank)
        model = registry.build_model(cfg.model_name, fm, cfg.model_params)
        n_params = sum(p.numel() for p in model.parameters())
        day = "" if cfg.train.day is None else f" (day {cfg.train.day})"
        log(f"model {cfg.model_name}: {n_params:,} parameters; train rows {train_rows(fm, cfg.train.day):,}{day}; "
            f"run dir {run_dir}")
        train_cfg, measured = cfg.train, []
        if cfg.train.measured_auto and dist_ is None:
            saved = run_dir / MEASURED_AUTO_FILE
            if resume:  # the kernels the checkpoints were written under (none: a run from before)
                measured = json.loads(saved.read_text()) if saved.is_file() else []
                train_cfg = apply_auto(model, cfg.train, measured)
            else:
                train_cfg, measured = measure_auto(model, fm, cfg.train, log)
                write_text_atomic(saved, json.dumps(measured, indent=1))
        trainer = Trainer(model, fm, train_cfg, run_dir, seed=cfg.seed, num_workers=cfg.data.num_workers,
                          shuffle_buffer=cfg.data.shuffle_buffer, log=log, dist=dist_)
        if dist_ is not None and is_main:
            _write_sharding_plan(run_dir, dist_)
        result = trainer.fit(resume=resume)
        result["parameters"] = n_params
        result["dense_parameters"] = sum(p.numel() for p in split_parameters(model)[1])  # all but the tables
        # Counted in one process only: under torchrun every forward of sharded tables is a collective.
        result["flops_per_sample"] = _flops_per_sample(model, fm) if dist_ is None else None
        result["bayes"] = fm.extras.get("bayes")
        result["measured_auto"] = measured
        # Where it trained: a benchmark report may be made on another machine.
        result["machine"] = machine_info(next(model.parameters()).device)
        if dist_ is not None:
            result["distributed"] = {"world_size": env.world_size, "backend": env.backend, "embeddings": dist_.mode}
        result.update(_prediction_report(trainer.final_predictions, fm, log))
        if is_main:
            if dist_ is None:  # gathered rows come in rank order; tables need the split's order
                save_predictions(run_dir / TEST_PREDICTIONS, *trainer.final_predictions["test"])
            write_text_atomic(run_dir / METRICS_FILE, json.dumps(result, indent=2))
        return result
    finally:
        if dist_ is not None:
            import torch.distributed

            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        if lock is not None:
            lock.release()


def train_to_end(cfg: ExperimentConfig, log: Callable[[str], None] = lambda *_: None) -> None:
    """Finish the run in ``cfg``'s run directory, as the searches do with their own runs: nothing
    if its final metrics are there, continued if it got as far as its config, started (over)
    otherwise."""
    run_dir = cfg.resolved_run_dir()
    if (run_dir / METRICS_FILE).is_file():
        return
    resume = (run_dir / CONFIG_FILE).is_file()
    train(cfg, resume=resume, overwrite=not resume, log=log)


def _prediction_report(predictions: dict, fm: FeatureMap, log: Callable[[str], None]) -> dict:
    """``positives`` per split and task, with a warning for each under ``MIN_POSITIVES``, and
    ``pooled``: the metrics of valid and test together. Pooled is for reporting on tiny real
    splits only: early stopping chose the weights on valid, so it is optimistic by valid's part."""
    positives = {s: count_positives(y, fm.labels) for s, (y, _, _) in predictions.items()}
    for warning in few_positives(positives):
        log(f"warning: {warning}")
    (yv, pv, gv), (yt, pt, gt) = predictions["valid"], predictions["test"]
    groups = None if gv is None else np.concatenate([gv, gt])
    pooled = compute_metrics(np.concatenate([yv, yt]), np.concatenate([pv, pt]), groups, fm.labels)
    return {"positives": positives, "pooled": pooled}


def _start_fresh(run_dir: Path, overwrite: bool, log: Callable[[str], None]) -> None:
    """A fresh run needs an empty run directory; ``overwrite`` empties it of what training
    wrote (an older run's checkpoints would otherwise be resumed later), keeping other files."""
    kind = marker_kind(run_dir)
    if kind not in (None, RUN_KIND):
        raise OutputError(f"{run_dir} holds rankmixer output of another kind ({kind}), not a run; "
                          "choose another run_dir")
    entries = run_entries(run_dir)
    if not entries:
        return
    if not overwrite:
        shown = ", ".join(entries[:6]) + (f" (+{len(entries) - 6} more)" if len(entries) > 6 else "")
        raise RunDirError(f"run directory {run_dir} is not empty ({shown}): pass --resume to continue the run "
                          "in it, --overwrite to start over (removes what training wrote, keeps other files), "
                          "or choose another run_dir")
    removed = clear_run(run_dir)
    kept = foreign_entries(run_dir)
    log(f"--overwrite: removed {', '.join(removed) or 'nothing'} from {run_dir}"
        + (f"; kept files rankmixer did not write: {', '.join(kept)}" if kept else ""))


_ABSENT = object()


def _config_diff(saved: Any, now: Any, key: str = "") -> list[str]:
    """``key: saved -> now`` for every leaf that differs between two config trees."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(saved) | set(now), key=str):
            out += _config_diff(saved.get(k, _ABSENT), now.get(k, _ABSENT), f"{key}.{k}" if key else str(k))
        return out
    if saved == now:
        return []
    show = lambda v: "(absent)" if v is _ABSENT else json.dumps(v, default=str)  # noqa: E731
    return [f"{key}: {show(saved)} in the run, {show(now)} now"]


def config_differences(cfg: ExperimentConfig, run_dir: str | Path) -> list[str]:
    """``key: <in the run> in the run, <in cfg> now`` for every config key where ``cfg`` differs
    from the config a run in ``run_dir`` was trained with (both read through today's schema)."""
    saved = load_config(Path(run_dir) / CONFIG_FILE)
    return _config_diff(saved.model_dump(mode="json"), cfg.model_dump(mode="json"))


def _check_resume_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    diff = config_differences(cfg, run_dir)
    if diff:
        raise ValueError(f"--resume with a config that differs from {run_dir / CONFIG_FILE} in "
                         f"{len(diff)} key(s):\n  " + "\n  ".join(diff)
                         + "\n(resume with the run's own config, or start a new run)")


def _write_sharding_plan(run_dir: Path, d: Distributed) -> None:
    """sharding_plan.txt (TorchRec's printed plan) and sharding_plan.json (the shards each rank
    actually holds, gathered after sharding)."""
    info = {"world_size": d.world_size, "embeddings": d.mode, "placement": d.placement}
    write_text_atomic(run_dir / "sharding_plan.json", json.dumps(info, indent=2))
    write_text_atomic(run_dir / "sharding_plan.txt", d.plan_text or f"{d.mode}: every rank holds every table\n")


def measure_auto(model: torch.nn.Module, fm: FeatureMap, train_cfg, log: Callable[[str], None]) -> tuple[Any, list[dict]]:
    """The ``auto`` kernels of this run timed on this machine (:mod:`rankmixer.system.auto`):
    per-token FFN implementations set on the model (timed on the run's training step over its
    first training batch), the dense optimizer's kernel set in the returned train config.
    Returns (train config, the choices)."""
    device = pick_device(train_cfg.device)
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)  # time with the threads the run will use
    batch = next(iter(ParquetBatches(fm, "train", train_cfg.batch_size, shuffle=False))).to(device)

    def train_step(m: torch.nn.Module) -> None:
        with autocast(train_cfg.precision, device):
            out = m(batch)
        loss = task_loss(out, batch.labels)
        (loss if out.aux_loss is None else loss + out.aux_loss.float()).backward()

    choices = measured_ffn_impls(model, train_cfg.batch_size, train_cfg.precision, device, train_step, log=log)
    opt = train_cfg.dense_optimizer
    if opt.impl == "auto":
        dense = split_parameters(model)[1] if train_cfg.sparse_optimizer is not None else list(model.parameters())
        kernel = measured_optimizer_impl(opt, [p.to(device) for p in dense], device, log=log)
        if kernel is not None:
            choices.append({"component": "optimizer", "name": opt.name, "choice": kernel})
    return _with_optimizer_kernel(train_cfg, choices), choices


def apply_auto(model: torch.nn.Module, train_cfg, choices: list[dict]):
    """Apply recorded ``auto`` choices (of :func:`measure_auto`) to the model; return the train
    config with the optimizer kernel chosen."""
    apply_ffn_choices(model, choices, train_cfg.precision)
    return _with_optimizer_kernel(train_cfg, choices)


def _with_optimizer_kernel(train_cfg, choices: list[dict]):
    opt = train_cfg.dense_optimizer
    kernel = next((c["choice"] for c in choices if c.get("component") == "optimizer"), None)
    if opt.impl != "auto" or kernel is None:
        return train_cfg
    return train_cfg.model_copy(update={"dense_optimizer": opt.model_copy(update={"impl": kernel})})


def _flops_per_sample(model: torch.nn.Module, fm: FeatureMap, rows: int = 256) -> float:
    """Forward matmul FLOPs per sample of the trained model on the first validation rows
    (moved to the model's device: a model trained on CUDA is counted there)."""
    batch = next(iter(ParquetBatches(fm, "valid" if "valid" in fm.splits else "train", rows)))
    device = next(model.parameters()).device
    return forward_flops_per_sample(model, batch.to(device))


def evaluate(run_dir: str | Path, splits=("valid", "test"), log: Callable[[str], None] = print) -> dict:
    """Metrics of a run's best model on ``splits``. A run still training, or one that stopped
    before the end, is evaluated too (its best weights so far), with a warning that says so."""
    run = load_run(run_dir)
    reason = incomplete_reason(run_dir)
    if reason:
        log(f"warning: {reason}; evaluating its best weights so far")
    cfg = validate(run.config, f"config {Path(run_dir) / CONFIG_FILE}")  # the mapping load_run read
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
    return all(c in cols for f in fm.features for c in f.columns) and all(
        str(cols[f.name]) == "int32" for f in fm.sparse
    )


# Prediction files: the format follows the suffix. Parquet ones carry this metadata key, so an
# existing file can be recognised as ours before it is replaced.
PREDICTION_FORMATS = {".parquet": "parquet", ".csv": "csv"}
PREDICTIONS_META = ("rankmixer", "predictions")


def _prediction_columns(fm: FeatureMap) -> list[str]:
    return [f"{t}_prob" for t in fm.labels] + list(fm.labels)


def _is_our_predictions(path: Path, fmt: str, fm: FeatureMap) -> bool:
    """An existing output we may replace: a Parquet file with our metadata key, or a CSV file
    whose header is exactly the prediction columns of this run's tasks."""
    try:
        if fmt == "parquet":
            key, value = (x.encode() for x in PREDICTIONS_META)
            return parquet_key_values(path).get(key) == value
        with open(path, "rb") as f:
            header = f.readline(4096).rstrip(b"\r\n")
        return header == ",".join(_prediction_columns(fm)).encode()
    except (OSError, ValueError):
        return False


def _check_prediction_output(path: Path, fmt: str, fm: FeatureMap, overwrite: bool) -> None:
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() or not path.is_file():
        raise OutputError(f"--output {path} exists and is not a file; refusing to replace it")
    if not _is_our_predictions(path, fmt, fm):
        raise OutputError(f"--output {path} exists and is not a prediction file rankmixer wrote; refusing to "
                          "replace it: choose another output path")
    if not overwrite:
        raise OutputError(f"--output {path} already holds predictions; pass --overwrite to replace them")


def predict(
    run_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int = 8192,
    input_format: str = "auto",
    on_bad_row: str = "fail",
    *,
    overwrite: bool = False,
    weights: str | Path | None = None,
) -> int:
    """Batch scoring. The input is either raw rows in the dataset's source format (CSV/TSV/
    Parquet; encoded with the training vocabularies, unseen values -> OOV) or a file in the
    prepared layout (e.g. a split's part file); ``auto`` tells them apart. Raw rows need the
    same columns as the training data, labels included (fill them with 0 when unknown).
    Writes ``<task>_prob`` per task, plus the labels, as Parquet or CSV (by suffix; any other
    suffix is an error). The output may not be the input nor lie in the run or prepared-data
    directory; an existing prediction file is replaced only with ``overwrite``, and the new one
    appears whole (written beside it, then renamed). ``weights``: score with these weights of the
    run's model (e.g. a day snapshot of a streamed run) instead of its best ones."""
    input_path, output_path = Path(input_path), Path(output_path)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size!r}")
    fmt = output_format(output_path, PREDICTION_FORMATS, "--output")
    if input_format not in ("auto", "raw", "prepared"):
        raise ValueError(f"input_format must be auto, raw or prepared, not {input_format!r}")
    if not input_path.exists():
        raise FileNotFoundError(f"input not found: {input_path}")
    run = load_run(run_dir, weights)
    fm, model, data = run.feature_map, run.model, run.data
    check_output(output_path, [input_path, Path(run_dir), fm.root], "--output")
    _check_prediction_output(output_path, fmt, fm, overwrite)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    work = output_path.parent / f".tmp-{output_path.name}-{unique_suffix()}.work"
    encoded = input_path
    try:
        if input_format == "raw" or (input_format == "auto" and not _is_prepared(input_path, fm)):
            schema = load_schema(fm.root / "schema.yaml")
            preset = get_preset(data.dataset, **data.preset_options) if not data.schema_file else None
            work.mkdir()
            encoded = work / "encoded.parquet"
            encode_raw(fm, schema, [input_path], encoded, preset=preset, raw_path=input_path.parent,
                       on_bad_row=on_bad_row)
        rows = pq.ParquetFile(encoded).metadata.num_rows
        present = set(pq.ParquetFile(encoded).schema_arrow.names)
        missing = [c for f in fm.features for c in f.columns if c not in present] + [
            t for t in fm.labels if t not in present]
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
        shutil.rmtree(work, ignore_errors=True)
    if not probs:
        raise ValueError(f"{input_path}: no rows to score")
    p, y = np.concatenate(probs), np.concatenate(labels)
    out = pl.DataFrame({f"{t}_prob": p[:, i] for i, t in enumerate(fm.labels)} | {t: y[:, i] for i, t in enumerate(fm.labels)})
    with atomic_file(output_path) as tmp:
        if fmt == "csv":
            out.write_csv(tmp)
        else:
            out.write_parquet(tmp, metadata=dict([PREDICTIONS_META]))
    return out.height
