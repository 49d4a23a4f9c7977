"""The ``train`` section of an experiment: optimizers, schedule, precision, evaluation,
checkpoints and the distributed options. Unknown keys are errors, so a typo names itself."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
    metric: str = "auc"  # any key of the validation metrics, e.g. auc, logloss, gauc
    patience: int = Field(2, ge=1)  # evaluations without improvement before stopping
    min_delta: float = 0.0


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
    eval_every_steps: int | None = Field(None, ge=1)  # None: once per epoch
    checkpoint_every_steps: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every_steps: int = Field(50, ge=1)
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; None = torch default
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tensorboard: bool = True
    progress: bool = True
    distributed: DistributedConfig = DistributedConfig()
