"""A trained run, read back: its data config, feature maps and best model.

Evaluation, prediction, early-exit calibration, export and serving all start from a finished run
directory; they read it here, so none of them needs the trainer (and the server never imports
it). The layout is :mod:`rankmixer.core.rundir`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

from rankmixer.core.rundir import (
    BEST_WEIGHTS,
    CONFIG_FILE,
    FEATURE_MAP_FILE,
    METRICS_FILE,
    RunDirError,
    lock_holder,
    read_run_config,
)
from rankmixer.core.weights import WeightsError, load_weights
from rankmixer.core.yamlio import format_validation_error
from rankmixer.data.config import DataConfig
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models import registry

__all__ = ["TrainedRun", "incomplete_reason", "load_run"]


@dataclass
class TrainedRun:
    """``feature_map``: the prepared data's map (its root points at the shards and vocabularies,
    when they are still there); ``saved_map``: the map the run was trained with (a copy in the
    run directory); ``model``: the best weights, in eval mode."""

    run_dir: Path
    config: dict[str, Any]
    data: DataConfig
    model_name: str
    model_params: dict[str, Any]
    feature_map: FeatureMap
    saved_map: FeatureMap
    model: nn.Module


def load_run(run_dir: str | Path, weights: str | Path | None = None) -> TrainedRun:
    """Read a run directory and build its best model (or the model in ``weights``, e.g. one of a
    streamed run's day snapshots); errors name the file that is missing or does not match."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    try:
        data = DataConfig.model_validate(config.get("data") or {})
    except ValidationError as e:
        raise RunDirError(format_validation_error(e, f"data section of {run_dir / CONFIG_FILE}")) from None
    model_section = dict(config.get("model") or {})
    name = model_section.pop("name", None)
    if not name:
        raise RunDirError(f"{run_dir / CONFIG_FILE} names no model (model.name)")
    if not (run_dir / FEATURE_MAP_FILE).is_file():
        raise RunDirError(f"{run_dir} has no {FEATURE_MAP_FILE}: the run stopped before its data was prepared")
    weights = run_dir / BEST_WEIGHTS if weights is None else Path(weights)
    if weights != run_dir / BEST_WEIGHTS and not weights.is_file():
        raise RunDirError(f"weights file {weights} does not exist")
    if not weights.is_file():
        raise RunDirError(f"{run_dir} has no {BEST_WEIGHTS}: the run stopped before its first evaluation "
                          "(continue it with `rankmixer train --resume`)")
    try:
        saved = FeatureMap.load(run_dir / FEATURE_MAP_FILE)
    except (ValueError, TypeError, KeyError) as e:
        raise RunDirError(f"{run_dir / FEATURE_MAP_FILE} cannot be read: {e}") from None
    prepared = data.prepared_path()
    fm = FeatureMap.load(prepared) if (prepared / FEATURE_MAP_FILE).exists() else saved
    if fm.schema_hash != saved.schema_hash:
        raise RunDirError(f"prepared data in {prepared} no longer matches the run's feature map")
    model = registry.build_model(name, saved, model_section)
    try:
        load_weights(weights, model)
    except WeightsError as e:
        raise RunDirError(str(e)) from None
    model.eval()
    return TrainedRun(run_dir, config, data, name, model_section, fm, saved, model)


def incomplete_reason(run_dir: str | Path) -> str | None:
    """Why a run is not finished (being trained now, or stopped before the end), or None."""
    run_dir = Path(run_dir)
    holder = lock_holder(run_dir)
    if holder:
        return f"{run_dir} is being trained right now ({holder})"
    if not (run_dir / METRICS_FILE).is_file():
        return (f"{run_dir} is incomplete: its training did not finish (no {METRICS_FILE}; "
                "continue it with `rankmixer train --resume`)")
    return None
