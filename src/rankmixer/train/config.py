"""The ``train`` section of an experiment: optimizers, schedule, regularisation, precision,
evaluation, checkpoints and the distributed options. Unknown keys are errors, so a typo names
itself."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from rankmixer.core.metrics import higher_is_better
from rankmixer.core.strict import StrictModel


class OptimizerConfig(StrictModel):
    name: Literal["adamw", "adam", "rmsprop", "sgd", "adagrad", "sparse_adam"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    eps: float | None = None
    momentum: float = 0.0  # rmsprop / sgd
    # Update kernel. auto: fused (one kernel over all tensors) for adam/adamw/sgd/adagrad with
    # dense gradients, foreach for rmsprop (torch has no fused RMSprop), the per-tensor loop for
    # sparse gradients. Measured in `rankmixer bench speed` (docs/performance.md).
    impl: Literal["auto", "fused", "foreach", "forloop"] = "auto"


class EarlyStopping(StrictModel):
    """Best-weights selection and early stopping on a monitored validation value.

    ``metric`` is one validation metric (its direction known: auc up, logloss down) or, as in
    FuxiCTR's ``monitor``, a weighted sum ``{auc: 1, logloss: -1}`` = auc - logloss, where
    higher is always better. An evaluation improves when the value beats the best so far by
    more than ``min_delta``."""

    metric: str | dict[str, float] = "auc"  # a validation metric key (auc, logloss, gauc...) or {key: weight}
    patience: int = Field(2, ge=1)  # evaluations without improvement before stopping
    min_delta: float = 0.0

    @field_validator("metric")
    @classmethod
    def _weights(cls, v: str | dict[str, float]) -> str | dict[str, float]:
        if isinstance(v, dict):
            if not v:
                raise ValueError("a weighted metric needs at least one {metric: weight}")
            bad = [k for k, w in v.items() if not math.isfinite(w)]
            if bad:
                raise ValueError(f"weight of {bad[0]!r} is not a finite number")
        return v

    def monitored(self, metrics: dict[str, float]) -> tuple[float, bool]:
        """(the monitored value, whether higher is better) from validation ``metrics``; a key
        that is not among them is an error (FuxiCTR would count it as 0)."""
        weights = {self.metric: 1.0} if isinstance(self.metric, str) else self.metric
        missing = [k for k in weights if k not in metrics]
        if missing:
            raise KeyError(f"early_stopping.metric {missing[0]!r} is not a validation metric; have {sorted(metrics)}")
        if isinstance(self.metric, str):
            return metrics[self.metric], higher_is_better(self.metric)
        return sum(w * metrics[k] for k, w in weights.items()), True


class RegularizationConfig(StrictModel):
    """L2 penalties added to the training loss (FuxiCTR's ``embedding_regularizer`` and
    ``net_regularizer``; see train/regularization.py and docs/training.md). 0 = off."""

    # (embedding_l2 / 2) * squared L2 norm of the embeddings; which rows, per embedding_scope:
    # looked_up = the rows this batch read, once per occurrence, divided by the batch size;
    # table = every row of every table on every step (FuxiCTR's; needs sparse_gradients false).
    embedding_l2: float = Field(0.0, ge=0)
    embedding_scope: Literal["looked_up", "table"] = "looked_up"
    # (dense_l2 / 2) * squared L2 norm of every other trainable parameter (biases and
    # normalisation weights included, as FuxiCTR's net_regularizer). Added to the loss, so with
    # adam it is L2 regularisation, not decoupled weight decay.
    dense_l2: float = Field(0.0, ge=0)


class LRPlateau(StrictModel):
    """Reduce-LR-on-plateau as FuxiCTR's: every validation that does not improve the monitored
    value multiplies each optimizer's learning rate by ``factor``, floored at ``min_lr``."""

    factor: float = Field(0.1, gt=0, le=1)
    min_lr: float = Field(1e-6, ge=0)


class DistributedConfig(StrictModel):
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


class TrainConfig(StrictModel):
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
    # None: the learning rate follows lr_schedule only.
    lr_plateau: LRPlateau | None = None
    regularization: RegularizationConfig = RegularizationConfig()
    # Validate every N steps. None: once per epoch, except in a one-pass run (the whole budget
    # within one epoch: epochs 1, or max_steps at most one epoch), which validates
    # one_pass_evals times evenly inside the pass (early stopping and the best checkpoint need
    # more than the one validation at its end).
    eval_every_steps: int | None = Field(None, ge=1)
    one_pass_evals: int = Field(10, ge=1)
    checkpoint_every_steps: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every_steps: int = Field(50, ge=1)
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; None = torch default
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tensorboard: bool = True
    progress: bool = True
    distributed: DistributedConfig = DistributedConfig()

    @model_validator(mode="after")
    def _table_penalty_is_dense(self) -> "TrainConfig":
        reg = self.regularization
        if reg.embedding_l2 and reg.embedding_scope == "table" and self.sparse_gradients:
            raise ValueError("regularization.embedding_scope=table gives every table row a gradient on every step; "
                             "it needs sparse_gradients: false (or use embedding_scope: looked_up)")
        return self
