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
    value multiplies each optimizer's learning rate by ``factor``, floored at ``min_lr``. The
    automatic validations inside a one-pass run (``one_pass_evals``) cut nothing: they choose the
    best weights and may stop early, but a cut is per epoch (per validation where
    ``eval_every_steps`` is set)."""

    factor: float = Field(0.1, gt=0, le=1)
    min_lr: float = Field(1e-6, ge=0)


def _simplex(key: str, values: list[float]) -> list[float]:
    """``values`` as a preference vector: finite, none negative, summing to 1 (within 1e-6)."""
    for v in values:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{key} {values}: {v} is not a non-negative number")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"{key} {values} sums to {sum(values):.6g}, not 1")
    return values


class BilevelConfig(StrictModel):
    """WC-MHGD over the task loss weights (train/bilevel.py, docs/pareto.md): every
    ``every_steps`` steps the weights take one step on the weighted Chebyshev
    ``max_s preference_s (NE_s - ideal_s)`` of the tasks' validation NE."""

    preference: list[float] = Field(min_length=1)  # one per task, non-negative, summing to 1
    ideal: list[float] | None = None  # the ideal point z per task (NE); None = 0
    every_steps: int = Field(20, ge=1)
    start_step: int = Field(0, ge=0)  # no upper step before this trainer step
    lr: float = Field(0.1, gt=0)  # step on the weight logits
    # normalized: every step moves the logits by lr (the direction's length divided out); plain:
    # lr times the direction, the paper's rule, whose length shrinks with the hypergradients.
    step: Literal["normalized", "plain"] = "normalized"
    # sqrt: the k-th upper step (from 0) uses lr / sqrt(k + 1), the subgradient method's
    # diminishing step, so the weights settle instead of swinging around the balance.
    lr_decay: Literal["none", "sqrt"] = "none"
    solver: Literal["cg", "neumann"] = "cg"
    iterations: int = Field(10, ge=1)  # CG products or Neumann terms
    damping: float = Field(0.01, ge=0)  # added to the Hessian's diagonal
    neumann_alpha: float = Field(0.1, gt=0)
    # The upper objectives' rows: the first valid_rows of the validation split; None = all of it
    # (an ideal point measured on the whole split is then on the same rows).
    valid_rows: int | None = Field(None, ge=2)
    parameters: Literal["dense", "all"] = "dense"  # what the implicit differentiation covers

    @field_validator("preference")
    @classmethod
    def _preference(cls, v: list[float]) -> list[float]:
        return _simplex("train.bilevel.preference", v)

    @field_validator("ideal")
    @classmethod
    def _ideal(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(math.isfinite(x) for x in v):
            raise ValueError(f"train.bilevel.ideal {v} has a value that is not a finite number")
        return v


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


class StreamingConfig(StrictModel):
    """Train day by day over data prepared by day (schema ``days``; train/streaming.py).

    Each day, in day order: the model is first evaluated on the day's rows (progressive
    validation: every row is scored before the model has trained on it), then trains one pass
    over them; a checkpoint ends every day, so a killed run resumes inside the day it was in.
    The result is the model after the last day (no early stopping, no best-weights selection:
    in a stream the newest model is the one served)."""

    # A day with no rows between the first and the last: error (named), or skip (listed in the
    # report as skipped_days).
    missing_days: Literal["error", "skip"] = "error"
    first_day: int | None = None  # None: the first prepared day
    last_day: int | None = None  # None: the last prepared day
    # Write the model after each day to day_weights/day-<d>.safetensors (a teacher's snapshots:
    # the model trained up to day d).
    keep_day_weights: bool = False

    @model_validator(mode="after")
    def _range(self) -> "StreamingConfig":
        if self.first_day is not None and self.last_day is not None and self.last_day < self.first_day:
            raise ValueError(f"train.streaming.last_day {self.last_day} is before first_day {self.first_day}")
        return self


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
    # auto kernels (per-token FFN implementation, dense optimizer kernel) timed on this machine
    # once per shape and reused (rankmixer.system.auto); false: the fixed rules.
    measured_auto: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tensorboard: bool = True
    progress: bool = True
    distributed: DistributedConfig = DistributedConfig()
    # Multi-task loss (1/T) sum_t w_t BCE_t; None = every w_t = 1 (the plain mean).
    task_weights: list[float] | None = None
    # Learn task_weights (their start, equal if not given) by WC-MHGD; None = fixed.
    bilevel: BilevelConfig | None = None
    # Day-by-day training with progressive validation; None = passes over the whole train split.
    streaming: StreamingConfig | None = None
    # Train on one day of a training split prepared by day (schema days), every epoch: one
    # day's shard, as DistDNAS searches on (docs/search.md). None: the whole split.
    day: int | None = None

    @field_validator("task_weights")
    @classmethod
    def _task_weights(cls, v: list[float] | None) -> list[float] | None:
        if v is None:
            return v
        bad = [w for w in v if not math.isfinite(w) or w < 0]
        if bad:
            raise ValueError(f"train.task_weights {v}: {bad[0]} is not a non-negative number")
        if not any(v):
            raise ValueError(f"train.task_weights {v}: at least one weight must be positive")
        return v

    @model_validator(mode="after")
    def _table_penalty_is_dense(self) -> "TrainConfig":
        if self.bilevel is not None and self.bilevel.parameters == "all" and self.sparse_gradients:
            raise ValueError("train.bilevel.parameters=all differentiates the embedding tables twice; "
                             "it needs sparse_gradients: false (or parameters: dense)")
        if self.bilevel is not None and self.task_weights is not None and not all(self.task_weights):
            raise ValueError(f"train.bilevel starts from train.task_weights {self.task_weights}: "
                             "a zero weight has no logit (use small positive weights)")
        if self.streaming is not None and self.epochs != 1:
            raise ValueError(f"train.streaming trains one pass a day; train.epochs must be 1, not {self.epochs}")
        if self.streaming is not None and self.day is not None:
            raise ValueError(f"train.day={self.day} trains on one day; train.streaming streams a range of days "
                             "(its first_day/last_day): give one of them")
        reg = self.regularization
        if reg.embedding_l2 and reg.embedding_scope == "table" and self.sparse_gradients:
            raise ValueError("regularization.embedding_scope=table gives every table row a gradient on every step; "
                             "it needs sparse_gradients: false (or use embedding_scope: looked_up)")
        return self
