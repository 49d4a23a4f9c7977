"""The training loop. It knows a model only as ``forward(batch) -> ModelOutput``.

What it owns: two optimizers (dense parameters; embedding tables, which see few rows per step
and do better with Adagrad-style per-row steps), the LR schedule and reduce-on-plateau, L2
penalties (train/regularization.py), bf16 autocast, gradient clipping, periodic evaluation with
early stopping, checkpoints, and the logs (console with samples/s, ``metrics.jsonl``,
TensorBoard). Multi-task losses are weighted per task, by fixed ``task_weights`` or by weights
that ``train.bilevel`` learns every few steps (train/bilevel.py).

Streaming (``train.streaming``, train/streaming.py): the passes are the days of data prepared by
day, each evaluated on its own rows before training on them (progressive validation, kept in
the trainer's state, so a resumed run reports the same days); the result is the last model.

Exact resume: a checkpoint holds the model, both optimizers, the scheduler, every RNG, the
trainer's state (best value, evaluations without improvement, learning-rate reductions, learned
task weights) and the
data position (epoch, batches consumed in it); a corrupted newest checkpoint is reported and the
newest intact one is used (train/checkpoint.py). The loader's order is a pure function of
(seed, epoch), so a resumed run re-reads the epoch, drops the consumed batches and continues
with bit-identical state: its final metrics equal an uninterrupted run's.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rankmixer.core.hardware import autocast, pick_device, precision_warning
from rankmixer.core.rundir import DAY_WEIGHTS_DIR
from rankmixer.core.metrics import StreamingMetrics, compute_metrics
from rankmixer.core.weights import load_weights, save_weights
from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.models.base import ModelOutput
from rankmixer.nn.embedding import set_sparse_gradients, split_parameters
from rankmixer.train import checkpoint as ckpt
from rankmixer.train.bilevel import TaskWeightLearner, weights_of
from rankmixer.train.config import EarlyStopping, TrainConfig
from rankmixer.train.optim import apply_scheduled_lr, lr_lambda, make_optimizer, make_schedulers
from rankmixer.train.regularization import Regularizer
from rankmixer.train.streaming import progressive_report, stream_days

if TYPE_CHECKING:
    from rankmixer.train.distributed import Distributed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_rows(feature_map: FeatureMap, day: int | None) -> int:
    """Rows a training pass reads: the whole training split, or with ``train.day`` that day's
    partition (a ValueError naming the prepared days when it is not one of them)."""
    if day is None:
        return feature_map.splits["train"].rows
    try:
        return feature_map.day(day).rows
    except KeyError as e:
        raise ValueError(f"train.day: {e.args[0]}") from None


def _bce(logits: torch.Tensor, labels: torch.Tensor, task_weights: torch.Tensor | None) -> torch.Tensor:
    if task_weights is None:
        return F.binary_cross_entropy_with_logits(logits.float(), labels)
    per_task = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none").mean(0)
    return (task_weights * per_task).mean()


def task_loss(out: ModelOutput, labels: torch.Tensor, task_weights: torch.Tensor | None = None) -> torch.Tensor:
    """BCE of the logits; for a multi-exit model the weighted sum of every exit's BCE (the last
    exit is ``logits``; no weights given = equal weights summing to 1). ``task_weights`` ``[T]``:
    the loss is ``(1/T) sum_t w_t BCE_t`` (None: every ``w_t`` = 1, the plain mean)."""
    if out.exit_logits is None:
        return _bce(out.logits, labels, task_weights)
    weights = out.exit_loss_weights or [1.0 / len(out.exit_logits)] * len(out.exit_logits)
    return sum(w * _bce(z, labels, task_weights) for w, z in zip(weights, out.exit_logits, strict=True))


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        feature_map: FeatureMap,
        cfg: TrainConfig,
        run_dir: str | Path,
        *,
        seed: int = 42,
        num_workers: int = 0,
        shuffle_buffer: int = 65_536,
        log: Callable[[str], None] = print,
        dist: "Distributed | None" = None,
    ):
        # dist: the process group when launched by torchrun with several processes (see
        # train/distributed.py); None is the single-process path, unchanged.
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        self.world_size = 1 if dist is None else dist.world_size
        self.cfg = cfg
        self.fm = feature_map
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.log = log
        self.num_workers = num_workers
        self.device = pick_device(cfg.device)
        slow = precision_warning(cfg.precision, self.device)
        if slow:
            log(f"warning: train.{slow}")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.model = model.to(self.device)

        emb, dense = split_parameters(model)
        if cfg.sparse_gradients and cfg.sparse_optimizer is None:
            raise ValueError("train.sparse_gradients needs train.sparse_optimizer (adagrad, sparse_adam or sgd)")
        if cfg.sparse_optimizer is None:
            dense, emb = dense + emb, []
        if cfg.sparse_gradients:
            if cfg.sparse_optimizer.name not in ("adagrad", "sparse_adam", "sgd"):
                raise ValueError(f"train.sparse_gradients needs adagrad, sparse_adam or sgd, not {cfg.sparse_optimizer.name!r}")
            # Only the looked-up rows get a gradient: the optimizer touches a few rows per step
            # instead of every table row.
            set_sparse_gradients(model, True)
            # torch's sparse Adagrad warns on every step that it skips invariant checks.
            warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        if dense:
            self.optimizers["dense"] = make_optimizer(cfg.dense_optimizer, dense)
        if emb:
            assert cfg.sparse_optimizer is not None
            self.optimizers["sparse"] = make_optimizer(cfg.sparse_optimizer, emb, sparse=cfg.sparse_gradients)
        self.dense_params = dense
        # Built on the unwrapped model: its hooks sit on the embedding modules themselves.
        self.regularizer = Regularizer(model, cfg.regularization)
        if dist is not None:
            self.model, self.optimizers = dist.wrap(self.model, self.optimizers, cfg)
            if dist.mode == "torchrec" and cfg.regularization.embedding_l2:
                raise ValueError("train.regularization.embedding_l2 does not reach TorchRec's sharded tables; "
                                 "use train.distributed.embeddings=ddp")

        # train.batch_size is the global batch: each of N ranks takes batch_size / N rows.
        if cfg.batch_size % self.world_size:
            raise ValueError(f"train.batch_size={cfg.batch_size} is not divisible by the {self.world_size} processes")
        self.local_batch_size = cfg.batch_size // self.world_size
        train_rows(feature_map, cfg.day)  # train.day: an error naming the prepared days if not one
        self.train_data = ParquetBatches(
            feature_map, "train", self.local_batch_size, shuffle=True, seed=seed, shuffle_buffer=shuffle_buffer,
            rank=0 if dist is None else dist.rank, world_size=self.world_size, day=cfg.day,
        )
        steps_per_epoch = self.train_data.batches_per_epoch() if dist is None else self._epoch_steps()
        self.total_steps = steps_per_epoch * cfg.epochs
        # Streaming: one pass per day; the day data of pass i is self.days[i].
        self.days, self.skipped_days = [], []
        if cfg.streaming is not None:
            if dist is not None:
                raise ValueError("train.streaming runs in one process; it is not supported under torchrun")
            self.days, self.skipped_days = stream_days(feature_map, cfg.streaming)
            self.total_steps = sum(-(-d.rows // self.local_batch_size) for d in self.days)
            steps_per_epoch = 0  # no validations inside a pass: one ends each day
            if cfg.early_stopping is not None:
                log("train.streaming: no early stopping or best-weights selection; the model after the last day "
                    "is the result")
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        # When to validate (TrainConfig.eval_every_steps): every eval_every_steps steps; else at
        # each epoch's end, except in a one-pass run: one_pass_evals steps spread evenly over
        # the pass, the last one ending it.
        self.eval_points: set[int] = set()
        if cfg.eval_every_steps is None and self.total_steps <= steps_per_epoch:
            n = min(cfg.one_pass_evals, self.total_steps)
            self.eval_points = {math.ceil(self.total_steps * i / n) for i in range(1, n + 1)}
        fn = lr_lambda(cfg.lr_schedule, cfg.warmup_steps, self.total_steps)
        self.state = {
            "epoch": 0, "batch_in_epoch": 0, "step": 0, "samples": 0,
            "best": None, "best_step": None, "bad_evals": 0, "stopped_early": False, "lr_reductions": 0,
        }
        if self.days:
            self.state["progressive"] = []  # one record per streamed day, in order
        # The plateau count is read from self.state at every step, so a resumed state counts.
        self.schedulers = make_schedulers(self.optimizers, fn, cfg.lr_plateau,
                                          lambda: self.state.get("lr_reductions", 0))
        # Task loss weights: fixed (train.task_weights) or learned (train.bilevel, whose logits
        # live in self.state so that a checkpoint resumes them).
        if cfg.task_weights is not None and len(cfg.task_weights) != feature_map.num_tasks:
            raise ValueError(f"train.task_weights has {len(cfg.task_weights)} values for the "
                             f"{feature_map.num_tasks} tasks {list(feature_map.labels)}")
        self.weight_learner: TaskWeightLearner | None = None
        if cfg.bilevel is not None:
            if dist is not None:
                raise ValueError("train.bilevel runs in one process; it is not supported under torchrun")
            self.weight_learner = TaskWeightLearner(self.model, feature_map, cfg.bilevel, self.device,
                                                    dense_l2=cfg.regularization.dense_l2)
            start = cfg.task_weights or [1.0] * feature_map.num_tasks
            self.state["task_logits"] = [math.log(w) for w in start]
        self._tb = None
        # split -> (labels, probs, group) of the best model, set by finish() for the caller to save.
        self.final_predictions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}

    # ---- pieces --------------------------------------------------------------------------
    def _epoch_steps(self) -> int:
        """Distributed: every rank runs the same number of full batches in an epoch, the
        smallest rank's, so no collective waits for a rank that has run out; the rest of the
        epoch's rows (each rank's tail) is skipped for this epoch and counted in the log."""
        rows = self.train_data.rows_per_rank(self.num_workers)
        steps = min(rows) // self.local_batch_size
        if steps == 0:
            raise ValueError(f"rank rows {rows} give no full batch of {self.local_batch_size} rows per rank")
        return steps

    def _autocast(self):
        return autocast(self.cfg.precision, self.device)

    def _loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        with self._autocast():
            out = self.model(batch)
        loss = task_loss(out, batch.labels, self.task_weights())
        loss = loss if out.aux_loss is None else loss + out.aux_loss.float()
        return loss, out.metrics

    def task_weights(self) -> torch.Tensor | None:
        """The current task loss weights ``[T]`` (None: plain mean)."""
        if self.weight_learner is not None:
            return weights_of(torch.tensor(self.state["task_logits"], dtype=torch.float64)).float().to(self.device)
        if self.cfg.task_weights is not None:
            return torch.tensor(self.cfg.task_weights, dtype=torch.float32, device=self.device)
        return None

    def _upper_step(self, batch: Batch) -> None:
        """One WC-MHGD step on the task weights (train/bilevel.py), logged as a ``bilevel`` record."""
        assert self.weight_learner is not None
        t0 = time.time()
        up = self.cfg.bilevel
        first = max(1, -(-up.start_step // up.every_steps)) * up.every_steps  # the first upper step's trainer step
        k = (self.state["step"] - first) // up.every_steps  # upper steps before this one
        self.state["task_logits"], rec = self.weight_learner.step(self.model, batch, self.state["task_logits"], k)
        self._write({"split": "bilevel", "step": self.state["step"], "epoch": self.state["epoch"], **rec,
                     "seconds": round(time.time() - t0, 3)})

    def train_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        self.model.train()
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        with self.regularizer.recording():
            loss, extra = self._loss(batch)
        penalty = self.regularizer.penalty(len(batch))
        if penalty is not None:
            loss = loss + penalty  # the logged loss is what is minimised, penalty included
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.dense_params, self.cfg.grad_clip)
        for opt in self.optimizers.values():
            opt.step()
        for sch in self.schedulers.values():
            sch.step()
        return loss.detach(), extra

    @torch.no_grad()
    def evaluate(self, split: str = "valid", max_batches: int | None = None) -> dict[str, float]:
        if self.dist is not None:
            return compute_metrics(*self.predictions(split, max_batches), self.fm.labels)
        metrics = StreamingMetrics(self.fm.labels)
        for labels, probs, group in self._scored(split, max_batches, self.num_workers):
            metrics.update(labels, probs, group)
        return metrics.compute()

    @torch.no_grad()
    def predictions(self, split: str, max_batches: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The current model's (labels [N, T], probs [N, T], group [N] or None) on ``split``.

        One process: in the split's own order (read in this process: DataLoader workers would
        interleave their row groups). Distributed, a collective every rank calls: each rank scores
        its share and every rank gets all rows, in rank order (the split's rows, not its order).
        """
        if self.dist is not None:
            return self._predictions_distributed(split, max_batches)
        return self._concat(list(self._scored(split, max_batches, num_workers=0)))

    def _scored(self, split: str, max_batches: int | None, num_workers: int, day: int | None = None):
        """(labels, probs, group) of each batch of ``split`` (or of one ``day`` of the train
        split), scored in eval mode, one process."""
        self.model.eval()
        data = ParquetBatches(self.fm, split, self.cfg.eval_batch_size, shuffle=False, day=day)
        for batch in itertools.islice(make_loader(data, num_workers=num_workers), max_batches):
            yield self._score(self.model, batch)

    def _score(self, model: nn.Module, batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        batch = batch.to(self.device)
        with self._autocast():
            logits = model(batch).logits
        return (batch.labels.cpu().numpy(), torch.sigmoid(logits.float()).cpu().numpy(),
                None if batch.group is None else batch.group.cpu().numpy())

    def _concat(self, scored: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]):
        T = len(self.fm.labels)
        y = np.concatenate([s[0] for s in scored]) if scored else np.zeros((0, T), np.float32)
        p = np.concatenate([s[1] for s in scored]) if scored else np.zeros((0, T), np.float32)
        g = (np.concatenate([s[2] for s in scored]) if scored else np.zeros(0, np.int64)) if self.fm.has_group else None
        return y, p, g

    def _predictions_distributed(self, split: str, max_batches: int | None):
        """Each rank scores its share of the split; every rank gets all ranks' predictions, so
        the metrics are exact over the whole split (not a mean of per-rank AUCs)."""
        assert self.dist is not None
        model = self.dist.eval_model()
        model.eval()
        data = ParquetBatches(self.fm, split, self.cfg.eval_batch_size, shuffle=False,
                              rank=self.dist.rank, world_size=self.world_size)
        loader = itertools.islice(make_loader(data, num_workers=self.num_workers), max_batches)
        scored = []
        for batch, real in self.dist.lockstep(loader):
            out = self._score(model, batch)  # every batch: with sharded tables a forward is a collective
            if real:
                scored.append(out)
        return self.dist.gather_eval(*self._concat(scored))

    def _write(self, record: dict) -> None:
        if not self.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            prefix = record.get("split", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch") and math.isfinite(v):
                    self._tb.add_scalar(f"{prefix}/{k}", v, record["step"])

    def _checkpoint(self) -> None:
        self.state["world_size"] = self.world_size  # a resume with another count says so
        if self.dist is not None:
            model, optimizers = self.dist.snapshot(self.optimizers, self.state["step"])
            if self.is_main:
                ckpt.save_checkpoint(
                    self.run_dir, self.state["step"], model=model, optimizers=optimizers,
                    schedulers=self.schedulers, trainer_state=self.state, keep_last=self.cfg.keep_checkpoints,
                )
            self.dist.barrier()
            return
        ckpt.save_checkpoint(
            self.run_dir, self.state["step"], model=self.model, optimizers=self.optimizers,
            schedulers=self.schedulers, trainer_state=self.state, keep_last=self.cfg.keep_checkpoints,
        )

    def _validate(self) -> bool:
        """Evaluate on valid, keep the best weights, reduce the learning rate on a plateau (if
        asked); True when early stopping says stop."""
        t0 = time.time()
        m = self.evaluate("valid")
        rec = {"split": "valid", "step": self.state["step"], "epoch": self.state["epoch"], **m,
               "eval_seconds": round(time.time() - t0, 2)}
        self._write(rec)
        es = self.cfg.early_stopping
        monitor = es or EarlyStopping()  # without early stopping the best weights are still kept, on AUC
        value, higher = monitor.monitored(m)
        best = self.state["best"]
        # Streaming keeps the newest model: every evaluation counts as the best so far.
        improved = bool(self.days) or best is None or (1 if higher else -1) * (value - best) > monitor.min_delta
        if improved:
            self.state.update(best=value, best_step=self.state["step"], bad_evals=0)
            self._save_best()
        else:
            self.state["bad_evals"] += 1
        self.log(
            f"valid step {self.state['step']}: " + " ".join(f"{k}={m[k]:.5f}" for k in ("auc", "logloss", "gauc") if k in m)
            + ("  (best)" if improved else f"  (no improvement {self.state['bad_evals']}/{es.patience if es else '-'})")
        )
        # The automatic validations inside a one-pass run (eval_points) pick the best weights and
        # may stop early, but cut no learning rate: a plateau cut is per epoch, as FuxiCTR's with
        # its per-epoch validation, and ten in-pass validations would cut it up to ten times.
        if not improved and self.cfg.lr_plateau is not None and not self.eval_points:
            self.state["lr_reductions"] = self.state.get("lr_reductions", 0) + 1
            for sch in self.schedulers.values():
                apply_scheduled_lr(sch)
            self.log(f"learning rate reduced on plateau ({self.state['lr_reductions']}x): "
                     + ", ".join(f"{k} {o.param_groups[0]['lr']:.3g}" for k, o in self.optimizers.items()))
        return bool(es and not self.days and self.state["bad_evals"] >= es.patience)

    def _save_best(self) -> None:
        if self.dist is None:
            save_weights(self.run_dir / "best.safetensors", self.model)
            return
        model, _ = self.dist.snapshot({}, self.state["step"])
        if self.is_main:
            save_weights(self.run_dir / "best.safetensors", model)
        self.dist.barrier()

    def _views(self):
        """(model, optimizers) as checkpoint.py reads and writes them: single-process layout."""
        if self.dist is None:
            return self.model, self.optimizers
        return self.dist.checkpoint_views(self.optimizers, self.state["step"])

    # ---- the loop ------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(self.seed)
        if resume:
            model, optimizers = self._views()
            # The newest intact checkpoint: corrupted newer ones are reported and skipped.
            found = ckpt.load_latest(self.run_dir, model=model, optimizers=optimizers, schedulers=self.schedulers,
                                     warn=self.log)
            if found is None:
                self.log("no checkpoint to resume from; starting fresh")
            else:
                last, self.state = found
                self.log(f"resumed from {last} (epoch {self.state['epoch']}, step {self.state['step']})")
                saved_world = self.state.get("world_size", 1)
                if saved_world != self.world_size:
                    # The partial epoch's remaining rows are re-dealt to the new ranks: same
                    # step and epoch, not the same rows as an uninterrupted run.
                    self.log(f"checkpoint written by {saved_world} process(es), resuming with {self.world_size}")
        elif self.is_main and (self.run_dir / "metrics.jsonl").exists():
            (self.run_dir / "metrics.jsonl").unlink()  # a fresh run starts a fresh log
        if self.cfg.tensorboard and self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

        cfg, st = self.cfg, self.state
        stop = st["stopped_early"] or (cfg.max_steps is not None and st["step"] >= cfg.max_steps)
        progress = None
        if cfg.progress and self.is_main:
            from tqdm import tqdm

            progress = tqdm(total=self.total_steps, initial=st["step"], unit="step", dynamic_ncols=True,
                            disable=None, leave=False)
        # The loss is summed on the device: reading it every step would be a host sync.
        window_t, window_n, loss_sum, loss_n = time.time(), 0, torch.zeros((), device=self.device), 0
        passes = len(self.days) if self.days else cfg.epochs
        while not stop and st["epoch"] < passes:
            data = self._pass_data(st["epoch"])
            if self.days and len(st["progressive"]) <= st["epoch"]:
                self._progressive(st["epoch"])
            batches = iter(make_loader(data, num_workers=self.num_workers))
            if self.dist is not None:
                steps = self._epoch_steps()
                batches = itertools.islice(batches, steps)
                if st["batch_in_epoch"] == 0:
                    rows = self.train_data.rows_per_rank(self.num_workers)
                    self.log(f"epoch {st['epoch']}: {steps} steps of {self.local_batch_size} rows on each of "
                             f"{self.world_size} ranks; {sum(rows) - steps * self.local_batch_size * self.world_size} "
                             f"of {sum(rows)} rows left out this epoch (equal steps per rank)")
            # Drop what this epoch already fed before the checkpoint we resumed from.
            for _ in itertools.islice(batches, st["batch_in_epoch"]):
                pass
            for batch in batches:
                batch = batch.to(self.device)
                loss, extra = self.train_step(batch)
                st["step"] += 1
                st["batch_in_epoch"] += 1
                st["samples"] += len(batch) * self.world_size
                window_n += len(batch) * self.world_size
                loss_sum += loss  # .item() only when logging
                loss_n += 1
                if progress is not None:
                    progress.update(1)
                if st["step"] % cfg.log_every_steps == 0:
                    dt = time.time() - window_t
                    rec = {"split": "train", "step": st["step"], "epoch": st["epoch"],
                           "loss": self._mean(float(loss_sum / loss_n)), "samples_per_s": round(window_n / dt, 1),
                           "lr": self.schedulers["dense"].get_last_lr()[0] if "dense" in self.schedulers else 0.0,
                           **extra}
                    self._write(rec)
                    if progress is not None:
                        progress.set_postfix(loss=f"{rec['loss']:.4f}", sps=f"{rec['samples_per_s']:.0f}")
                    window_t, window_n, loss_sum, loss_n = time.time(), 0, torch.zeros((), device=self.device), 0
                up = cfg.bilevel
                if up is not None and st["step"] >= up.start_step and st["step"] % up.every_steps == 0:
                    self._upper_step(batch)
                every = cfg.eval_every_steps
                if (every and st["step"] % every == 0) or st["step"] in self.eval_points:
                    if self._validate():
                        st["stopped_early"] = stop = True
                if cfg.max_steps and st["step"] >= cfg.max_steps:
                    stop = True
                if st["step"] % cfg.checkpoint_every_steps == 0 or stop:
                    self._checkpoint()
                if stop:
                    break
            else:
                st["epoch"] += 1
                st["batch_in_epoch"] = 0
                if not (cfg.eval_every_steps or self.eval_points) and self._validate():
                    st["stopped_early"] = stop = True
                if self.days:
                    self._end_of_day(self.days[st["epoch"] - 1].day)
                self._checkpoint()
        if progress is not None:
            progress.close()
        if st["best"] is None:  # ran out of steps before any evaluation
            self._validate()
            self._checkpoint()
        return self.finish()

    def _pass_data(self, epoch: int) -> ParquetBatches:
        """The rows of pass ``epoch`` in that pass's shuffled order: the whole train split, or
        (streaming) the day of that pass."""
        if not self.days:
            self.train_data.set_epoch(epoch)
            return self.train_data
        data = ParquetBatches(self.fm, "train", self.local_batch_size, shuffle=True, seed=self.seed,
                              shuffle_buffer=self.train_data.shuffle_buffer, day=self.days[epoch].day)
        data.set_epoch(epoch)
        return data

    @torch.no_grad()
    def _progressive(self, index: int) -> None:
        """Progressive validation of streamed day ``index``: its rows scored by the model
        trained on the days before it, recorded (state and log) before it trains on them."""
        day = self.days[index]
        t0 = time.time()
        metrics = StreamingMetrics(self.fm.labels)
        for labels, probs, group in self._scored("train", None, num_workers=0, day=day.day):
            metrics.update(labels, probs, group)
        m = metrics.compute()
        rec = {"day": day.day, "rows": day.rows, "step": self.state["step"], **m}
        self.state["progressive"].append(rec)
        self._write({"split": "progressive", "epoch": self.state["epoch"], **rec,
                     "eval_seconds": round(time.time() - t0, 2)})
        self.log(f"day {day.day} ({day.rows:,} rows) before training on it: "
                 + " ".join(f"{k}={m[k]:.5f}" for k in ("auc", "logloss", "ne") if k in m))

    def _end_of_day(self, day: int) -> None:
        """After a streamed day: the day's model kept as day_weights/day-<d> when asked."""
        if self.cfg.streaming.keep_day_weights:
            folder = self.run_dir / DAY_WEIGHTS_DIR
            folder.mkdir(exist_ok=True)
            save_weights(folder / f"day-{day}.safetensors", self.model)

    def _mean(self, x: float) -> float:
        return x if self.dist is None else self.dist.mean(x)

    def finish(self) -> dict:
        """Reload the best weights and evaluate valid and test (the caller writes ``metrics.json``).
        Each split is scored once, by :meth:`predictions`; they stay in ``final_predictions``."""
        load_weights(self.run_dir / "best.safetensors", self._views()[0])
        self.final_predictions = {s: self.predictions(s) for s in ("valid", "test")}
        result = {
            "best_step": self.state["best_step"],
            "steps": self.state["step"],
            "samples": self.state["samples"],
            "stopped_early": self.state["stopped_early"],
            **{s: compute_metrics(*p, self.fm.labels) for s, p in self.final_predictions.items()},
        }
        if self.days:
            result["streaming"] = progressive_report(self.state["progressive"], self.skipped_days)
        if self._tb is not None:
            self._tb.close()
        return result
