"""Typed experiment config: one YAML file (plus ``key=value`` overrides) describes a run.

Every section forbids unknown keys, so a typo (``train.bach_size``) is an error that names the
key instead of a silently ignored setting. The ``model`` section is checked against the config
class of the model it names (see ``models/registry.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rankmixer.data.schema import format_validation_error


class ConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    # A dataset preset (`rankmixer data presets` lists them) or a schema file for your own data.
    dataset: str | None = "synthetic"
    schema_file: str | None = None
    # Raw input: a file or directory for a preset; for a schema file, a file or a list of files.
    raw: str | None = None
    # With a schema whose split is "files": one raw file list per split.
    raw_splits: dict[Literal["train", "valid", "test"], list[str]] | None = None
    # Options passed to the preset (e.g. criteo: {min_count: 10}; synthetic: {rows_train: ...}).
    preset_options: dict[str, Any] = Field(default_factory=dict)
    # Where prepared shards go; default data_cache/<dataset>.
    prepared_dir: str | None = None
    on_bad_row: Literal["fail", "skip"] = "fail"
    num_workers: int = Field(0, ge=0)
    shuffle_buffer: int = Field(65_536, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        if self.schema_file and self.dataset not in (None, "synthetic"):
            raise ValueError("give either data.dataset (a preset) or data.schema_file, not both")
        return self


class OptimizerConfig(_Strict):
    name: Literal["adamw", "adam", "rmsprop", "sgd", "adagrad", "sparse_adam"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    eps: float | None = None
    momentum: float = 0.0  # rmsprop / sgd
    # Update kernel. auto: fused (one kernel over all tensors) for adam/adamw/sgd/adagrad with
    # dense gradients, foreach for rmsprop (torch has no fused RMSprop), the per-tensor loop for
    # sparse gradients. Measured in `rankmixer bench speed` (docs/performance.md).
    impl: Literal["auto", "fused", "foreach", "forloop"] = "auto"


class EarlyStopping(_Strict):
    metric: str = "auc"  # any key of the validation metrics, e.g. auc, logloss, gauc
    patience: int = Field(2, ge=1)  # evaluations without improvement before stopping
    min_delta: float = 0.0


class DistributedConfig(_Strict):
    """Used only under ``torchrun`` with more than one process (see docs/distributed.md)."""

    # auto: TorchRec sharded tables when torchrec imports, else DDP over the plain embedding;
    # torchrec: fail if it does not import; ddp: every rank holds every table (data parallel).
    embeddings: Literal["auto", "torchrec", "ddp"] = "auto"
    # Sharding types the TorchRec planner may choose from; None = table_wise and column_wise,
    # plus row_wise on CUDA/NCCL. (data_parallel is left out: not tested here.)
    sharding_types: list[Literal["table_wise", "column_wise", "row_wise"]] | None = None
    # Narrowest column_wise shard (TorchRec's min_partition); None = TorchRec's default, which
    # keeps small tables whole. A multiple of 4 (fbgemm).
    column_shard_min_dim: int | None = Field(None, ge=4, multiple_of=4)
    # Collective timeout: a rank that stops answering fails the job after this long.
    timeout_s: int = Field(300, ge=1)


class TrainConfig(_Strict):
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)  # stop after this many optimizer steps
    batch_size: int = Field(1024, ge=1)
    eval_batch_size: int = Field(8192, ge=1)
    dense_optimizer: OptimizerConfig = OptimizerConfig()
    # Embedding tables get their own optimizer; None puts them in the dense optimizer.
    sparse_optimizer: OptimizerConfig | None = OptimizerConfig(name="adagrad", lr=0.05)
    # Sparse gradients for embeddings (needs sparse_optimizer adagrad/sparse_adam/sgd).
    sparse_gradients: bool = False
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0)  # max global L2 norm of dense gradients
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast on CPU/GPU
    early_stopping: EarlyStopping | None = EarlyStopping()
    eval_every_steps: int | None = Field(None, ge=1)  # None: once per epoch
    checkpoint_every_steps: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every_steps: int = Field(50, ge=1)
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; None = torch default
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tensorboard: bool = True
    progress: bool = True
    distributed: DistributedConfig = DistributedConfig()


class ExperimentConfig(_Strict):
    seed: int = 42
    run_dir: str | None = None  # default runs/<dataset>-<model>-s<seed>
    data: DataConfig = DataConfig()
    # {name: <registered model>, ...that model's config fields}
    model: dict[str, Any] = Field(default_factory=lambda: {"name": "dcnv2"})
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _model_known(self) -> "ExperimentConfig":
        from rankmixer.models import registry

        params = dict(self.model)
        name = params.pop("name", None)
        if not name:
            raise ValueError("model.name is required")
        try:
            registry.parse_config(name, params)  # raises naming the bad key
        except KeyError as e:  # unknown model name; pydantic only reports ValueErrors
            raise ValueError(e.args[0]) from None
        return self

    @property
    def model_name(self) -> str:
        return self.model["name"]

    @property
    def model_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "name"}

    def resolved_run_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        name = self.data.dataset or Path(self.data.schema_file or "custom").stem
        return Path("runs") / f"{name}-{self.model_name}-s{self.seed}"


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (``1e-3``, ``[1, 2]``, ``null``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.epochs=3)")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    tree: dict = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = f"config {path}"
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{where} is not valid YAML: {e}") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"{where} must hold a mapping")
    apply_overrides(tree, overrides or [])
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where)) from e


def dump_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
