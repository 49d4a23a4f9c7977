"""Several processes under ``torchrun``: process group, model wrapping, collectives, checkpoints.

The trainer stays a single-process loop; this module supplies what changes with N processes:

* :func:`init_distributed` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) and starts the process group: gloo on CPU, nccl on
  CUDA. One process (plain ``python`` or ``torchrun --nproc_per_node=1``) is the ordinary
  single-process path, bit for bit.
* :meth:`Distributed.wrap` makes the model data parallel. With TorchRec (``embeddings: auto``
  when it imports, or ``torchrec``) every ``FeatureEmbedding`` is swapped for its TorchRec twin
  (``nn/sharded_embedding.py``, the one switch) and ``DistributedModelParallel`` shards the
  tables with its planner and wraps the dense rest in DDP; the tables are trained by TorchRec's
  fused optimizer (applied in backward) with the trainer's sparse-optimizer settings. Without
  TorchRec, plain DDP over the unchanged model (every rank holds every table).
* Collectives the loop needs: a mean of the logged loss, exact metrics over every rank's
  predictions (:meth:`Distributed.gather_eval`), lock-step evaluation when tables are sharded
  (every forward is a collective then, so a rank that ran out of batches runs a throw-away
  forward until all are done).
* Checkpoints in the single-process layout (:meth:`Distributed.checkpoint_views`): the full
  model and optimizer state, gathered, written by rank 0 into the ordinary safetensors
  checkpoint, and scattered back on load. So a checkpoint resumes with any number of processes
  (2 -> 1, 1 -> 2 ...). The cost: every rank briefly holds each full table while gathering;
  tables larger than one host's memory need DCP's resharding instead (not done here).

One file, though over 400 lines: the wrapping, the collectives and the checkpoint views all
work on the same sharded-table bookkeeping of :class:`Distributed`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from rankmixer.train.config import DistributedConfig, TrainConfig
from rankmixer.nn.embedding import PAD_ROW

CPU_SHARDING = ["table_wise", "column_wise"]
GPU_SHARDING = ["table_wise", "column_wise", "row_wise"]


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by torchrun)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE={raw!r} is not an integer") from None


def init_distributed(cfg: DistributedConfig, device: str = "auto") -> DistEnv | None:
    """Start the process group from torchrun's environment; None for a single process."""
    world = launched_world_size()
    if world <= 1:
        return None
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but {missing} unset: launch with torchrun")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if device == "cuda" and not use_cuda:
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev, backend = torch.device("cuda", local_rank), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=cfg.timeout_s))
    return DistEnv(rank, world, local_rank, dev, backend)


class _Frozen:
    """A state dict computed once, behind the ``state_dict()`` that checkpoint.py calls."""

    def __init__(self, sd: Mapping[str, Any]) -> None:
        self._sd = sd

    def state_dict(self) -> Mapping[str, Any]:
        return self._sd


def _shard_slices(shard) -> tuple[slice, ...]:
    md = shard.metadata
    return tuple(slice(o, o + n) for o, n in zip(md.shard_offsets, md.shard_sizes))


class Distributed:
    """One training job's view of its process group (see the module docstring)."""

    def __init__(self, env: DistEnv, cfg: DistributedConfig, log: Callable[[str], None] = print) -> None:
        self.env = env
        self.cfg = cfg
        self.log = log
        self.mode = "ddp"  # or "torchrec", fixed by wrap()
        self.plan_text = ""
        self.placement: list[dict] = []  # observed shards: table, rank, offsets, sizes
        self._model: nn.Module | None = None
        self._swapped: dict = {}
        self._shadow_sparse: torch.optim.Optimizer | None = None

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    # ---- model -----------------------------------------------------------------------------
    def _want_torchrec(self, train: TrainConfig, model: nn.Module) -> tuple[bool, str]:
        from rankmixer.nn.embedding import FeatureEmbedding
        from rankmixer.nn.sharded_embedding import torchrec_available

        choice = self.cfg.embeddings
        if choice == "ddp":
            return False, "train.distributed.embeddings=ddp"
        ok, why = torchrec_available()
        if not ok:
            if choice == "torchrec":
                raise RuntimeError(f"train.distributed.embeddings=torchrec but torchrec does not import ({why}); "
                                   "see docs/install.md")
            return False, f"torchrec is not importable ({why})"
        # train.sparse_gradients needs nothing here: the fused kernels touch only looked-up rows.
        opt = train.sparse_optimizer
        if opt is None or opt.name not in ("adagrad", "sgd"):
            reason = ("TorchRec tables need train.sparse_optimizer adagrad or sgd (fused in backward); "
                      f"have {None if opt is None else opt.name}")
            if choice == "torchrec":
                raise ValueError(reason)
            return False, reason
        if any(isinstance(m, FeatureEmbedding) and m.behaviour_names for m in model.modules()):
            reason = "TorchRec tables do not hold behaviour sequences yet"
            if choice == "torchrec":
                raise ValueError(f"train.distributed.embeddings=torchrec: {reason}")
            return False, reason
        return True, ""

    def wrap(
        self, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer], train: TrainConfig
    ) -> tuple[nn.Module, dict[str, torch.optim.Optimizer]]:
        """The model to train (DDP or DMP) and the optimizers to step. ``optimizers`` are the
        trainer's single-process ones; under TorchRec the sparse one is replaced by the fused
        optimizer (and kept as the template of the checkpoint layout)."""
        use_torchrec, why = self._want_torchrec(train, model)
        if not use_torchrec:
            self.mode = "ddp"
            if train.sparse_gradients:
                # DDP cannot bucket sparse gradients ("Cannot access storage of SparseTensorImpl").
                # Adagrad and SGD take the same steps from dense gradients (zero rows stay put),
                # so switch; SparseAdam has no dense form.
                if train.sparse_optimizer is None or train.sparse_optimizer.name == "sparse_adam":
                    raise ValueError("DDP cannot all-reduce sparse gradients and sparse_adam needs them: "
                                     "use train.distributed.embeddings=torchrec or another sparse_optimizer")
                from rankmixer.nn.embedding import set_sparse_gradients

                set_sparse_gradients(model, False)
                self.log("distributed: train.sparse_gradients ignored under DDP (dense gradients, same steps)")
            self.log(f"distributed: {self.world_size} ranks ({self.env.backend}), DDP over the plain "
                     f"embedding, every rank holds every table ({why})")
            ids = [self.env.local_rank] if self.env.device.type == "cuda" else None
            self._model = DistributedDataParallel(model, device_ids=ids)
            return self._model, optimizers
        self.mode = "torchrec"
        self._model = self._wrap_torchrec(model, optimizers, train)
        opts = dict(optimizers)
        if "sparse" in opts:
            self._shadow_sparse = opts["sparse"]
            opts["sparse"] = self._model.fused_optimizer
        return self._model, opts

    def _wrap_torchrec(self, model: nn.Module, optimizers: dict, train: TrainConfig) -> nn.Module:
        from torch.distributed.optim import _apply_optimizer_in_backward
        from torchrec.distributed import DistributedModelParallel
        from torchrec.distributed.model_parallel import DefaultDataParallelWrapper
        from torchrec.distributed.embedding import EmbeddingCollectionSharder
        from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology

        from rankmixer.nn.sharded_embedding import swap_embeddings

        dense_before = {id(p) for g in optimizers["dense"].param_groups for p in g["params"]} if "dense" in optimizers else set()
        self._swapped = swap_embeddings(model)
        opt = train.sparse_optimizer
        assert opt is not None
        if opt.name == "adagrad":
            kind, kwargs = torch.optim.Adagrad, {"lr": opt.lr, "eps": 1e-10 if opt.eps is None else opt.eps,
                                                 "weight_decay": opt.weight_decay}
        else:
            kind, kwargs = torch.optim.SGD, {"lr": opt.lr, "weight_decay": opt.weight_decay}
        # No gradient rescaling: TorchRec's sharded backward already averages over ranks, like
        # DDP does for the dense part (tests/distributed/equivalence.py checks it against one
        # process on the global batch).
        for m in self._swapped.values():
            _apply_optimizer_in_backward(kind, m.ec.parameters(), kwargs)

        allowed = self.cfg.sharding_types or (GPU_SHARDING if self.env.device.type == "cuda" else CPU_SHARDING)
        tables = sorted({t for m in self._swapped.values() for t in m.table_names})
        constraints = {t: ParameterConstraints(sharding_types=list(allowed), min_partition=self.cfg.column_shard_min_dim)
                       for t in tables}
        topology = Topology(world_size=self.world_size, compute_device=self.env.device.type)
        planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
        sharders = [EmbeddingCollectionSharder()]
        plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
        # static_graph off: TorchRec's default (static_graph=True) left the dense gradients of
        # the first steps un-averaged here (measured with tests/distributed/equivalence.py).
        wrapper = DefaultDataParallelWrapper(static_graph=False)
        dmp = DistributedModelParallel(model, device=self.env.device, plan=plan, sharders=sharders,
                                       data_parallel_wrapper=wrapper)
        # The trainer's dense optimizer holds the dense parameters by identity: DMP must keep them.
        kept = {id(p) for n, p in dmp.named_parameters() if not hasattr(p, "_in_backward_optimizers")}
        if dense_before and not dense_before <= kept:
            raise RuntimeError("DistributedModelParallel replaced dense parameters; the dense optimizer would not train them")
        self.plan_text = str(plan)
        self.placement = self._observed_placement(dmp)
        self.log(f"distributed: {self.world_size} ranks ({self.env.backend}), TorchRec sharded tables "
                 f"(allowed: {', '.join(allowed)}), DDP for the dense part; plan:\n{self.plan_text}")
        return dmp

    def _observed_placement(self, dmp: nn.Module) -> list[dict]:
        """Every rank's local shards as they are after sharding (not as planned), gathered."""
        mine = []
        for key, v in dmp.state_dict().items():
            if hasattr(v, "local_shards"):
                for sh in v.local_shards():
                    mine.append({"key": key, "table": key.split(".")[-2], "rank": self.rank,
                                 "offsets": list(sh.metadata.shard_offsets), "sizes": list(sh.metadata.shard_sizes)})
        everyone: list[list[dict]] = [[] for _ in range(self.world_size)]
        dist.all_gather_object(everyone, mine)  # small metadata between our own processes
        return [d for part in everyone for d in part]

    def eval_model(self) -> nn.Module:
        """What evaluation calls: the bare module under DDP (no collectives, so ranks may run
        different batch counts); the sharded model under TorchRec (see :meth:`lockstep`)."""
        assert self._model is not None
        return self._model.module if self.mode == "ddp" else self._model

    # ---- collectives -------------------------------------------------------------------------
    def mean(self, x: float) -> float:
        t = torch.tensor([x], dtype=torch.float64, device=self._coll_device())
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def barrier(self) -> None:
        dist.barrier()

    def _coll_device(self) -> torch.device:
        return self.env.device if self.env.backend == "nccl" else torch.device("cpu")

    def lockstep(self, batches: Iterable) -> Iterator[tuple[Any, bool]]:
        """(batch, real) until every rank is out of batches. Under TorchRec a forward is a
        collective, so a rank that is done repeats its last batch (real=False, to be discarded)
        while the others finish; under DDP evaluation has no collectives and this is a plain
        pass-through."""
        if self.mode == "ddp":
            for b in batches:
                yield b, True
            return
        it = iter(batches)
        last = None
        while True:
            b = next(it, None)
            flag = torch.tensor([0 if b is None else 1], device=self._coll_device())
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if int(flag.item()) == 0:
                return
            if b is None:
                if last is None:
                    raise RuntimeError(f"rank {self.rank} got no evaluation rows: the split has fewer rows than ranks")
                yield last, False
            else:
                last = b
                yield b, True

    def gather_eval(self, labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None):
        """Every rank's (labels, probs, groups) concatenated in rank order, on every rank, so
        each computes the same exact metrics over all predictions."""
        return (self._all_gather_rows(labels), self._all_gather_rows(probs),
                None if groups is None else self._all_gather_rows(groups))

    def _all_gather_rows(self, a: np.ndarray) -> np.ndarray:
        dev = self._coll_device()
        t = torch.from_numpy(np.ascontiguousarray(a)).to(dev)
        n = torch.tensor([t.shape[0]], device=dev)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n)
        most = max(int(s.item()) for s in sizes)
        padded = t.new_zeros((most, *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.zeros_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return np.concatenate([p[: int(s.item())].cpu().numpy() for p, s in zip(parts, sizes)])

    # ---- checkpoints in the single-process layout ------------------------------------------
    def checkpoint_views(self, optimizers: Mapping[str, Any], step: int = 0) -> tuple[Any, dict[str, Any]]:
        """(model, optimizers) objects with ``state_dict``/``load_state_dict`` in the
        single-process layout, for ``checkpoint.load_checkpoint`` / ``load_weights``. Under
        TorchRec ``state_dict()`` is a collective (every rank must call it)."""
        if self.mode == "ddp":
            return self._model.module, dict(optimizers)
        views = {k: v for k, v in optimizers.items() if k != "sparse"}
        if "sparse" in optimizers:
            views["sparse"] = _SparseView(self, step)
        return _ModelView(self), views

    def snapshot(self, optimizers: Mapping[str, Any], step: int) -> tuple[_Frozen, dict[str, _Frozen]]:
        """The state to save at optimizer step ``step``, computed on every rank (collective),
        written by rank 0."""
        model, opts = self.checkpoint_views(optimizers, step)
        return _Frozen(model.state_dict()), {k: _Frozen(v.state_dict()) for k, v in opts.items()}

    def _gather(self, local: list[tuple[tuple[slice, ...], Tensor]], size: torch.Size, dtype) -> Tensor:
        # Shards are disjoint: summing zero-filled copies assembles the full tensor exactly.
        full = torch.zeros(size, dtype=dtype, device=self._coll_device())
        for sl, t in local:
            full[sl] = t.to(full.device)
        dist.all_reduce(full)
        return full.cpu()

    def _tables(self, sd: Mapping[str, Any], path: str, table: str):
        return sd[f"{path + '.' if path else ''}ec.embeddings.{table}.weight"]

    def fused_from_shards(self, get_local) -> dict[str, Tensor]:
        """{module path: fused [rows, dim] tensor} assembled from every rank's table shards.
        ``get_local(path, table)`` -> (list of (slices, tensor)) local to this rank."""
        out = {}
        for path, m in self._swapped.items():
            fused = torch.zeros(m.num_rows, m.dim)
            for s in m.segments():
                full = self._gather(get_local(path, s.table), torch.Size([s.rows, m.store_dim]), torch.float32)
                fused[s.offset + 1 : s.offset + s.rows] = full[1:, : m.dim]
            fused[PAD_ROW] = 0
            out[path] = fused
        return out

    def shards_from_fused(self, fused: Mapping[str, Tensor], get_local) -> None:
        with torch.no_grad():
            for path, m in self._swapped.items():
                src = fused[path]
                for s in m.segments():
                    table = torch.zeros(s.rows, m.store_dim)
                    table[1:, : m.dim] = src[s.offset + 1 : s.offset + s.rows]
                    for sl, t in get_local(path, s.table):
                        t.copy_(table[sl].to(t.device))

    def _weight_shards(self, sd):
        def get(path, table):
            st = self._tables(sd, path, table)
            return [(_shard_slices(sh), sh.tensor) for sh in st.local_shards()]
        return get

    def _state_shards(self, osd):
        def get(path, table):
            key = f"{path + '.' if path else ''}ec.embeddings.{table}.weight"
            st = osd["state"].get(key, {}).get(f"{table}.momentum1")
            return [] if st is None else [(_shard_slices(sh), sh.tensor) for sh in st.local_shards()]
        return get


class _ModelView:
    """The sharded model's state in the single-process layout (``<path>.weight`` fused)."""

    def __init__(self, d: Distributed) -> None:
        self.d = d

    def state_dict(self) -> dict[str, Tensor]:
        sd = self.d._model.state_dict()
        fused = self.d.fused_from_shards(self.d._weight_shards(sd))
        prefixes = tuple(f"{p + '.' if p else ''}ec." for p in self.d._swapped)
        out = {k: v.detach().cpu() for k, v in sd.items() if not k.startswith(prefixes)}
        for path, w in fused.items():
            out[f"{path + '.' if path else ''}weight"] = w
        return dict(sorted(out.items()))

    def load_state_dict(self, sd: Mapping[str, Tensor], strict: bool = True) -> None:
        live = self.d._model.state_dict()
        fused_keys = {f"{p + '.' if p else ''}weight": p for p in self.d._swapped}
        with torch.no_grad():
            for k, v in sd.items():
                if k not in fused_keys:
                    live[k].copy_(v.to(live[k].device))
        self.d.shards_from_fused({p: sd[k] for k, p in fused_keys.items()}, self.d._weight_shards(live))


class _SparseView:
    """The fused TorchRec optimizer's state as the trainer's torch sparse optimizer (Adagrad or
    SGD over the fused weights) has it. The trainer's original optimizer is the template."""

    def __init__(self, d: Distributed, step: int) -> None:
        self.d = d
        self.step = step  # torch Adagrad counts steps (used only with lr_decay, kept for fidelity)
        self.shadow = d._shadow_sparse
        self.fused = d._model.fused_optimizer

    @property
    def param_groups(self):
        return self.shadow.param_groups

    def _sync_groups(self) -> None:
        for g in self.shadow.param_groups:
            for k in ("lr", "initial_lr"):
                if k in self.fused.param_groups[0]:
                    g[k] = self.fused.param_groups[0][k]

    def state_dict(self) -> dict:
        self._sync_groups()
        params = [p for g in self.shadow.param_groups for p in g["params"]]
        if isinstance(self.shadow, torch.optim.Adagrad):
            sums = self.d.fused_from_shards(self.d._state_shards(self.fused.state_dict()))
            for p, path in zip(params, self.d._swapped):
                st = self.shadow.state[p]
                st["sum"] = sums[path]
                st["step"] = torch.tensor(float(self.step))
        return self.shadow.state_dict()

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.shadow.load_state_dict(sd)
        for k in ("lr", "initial_lr"):
            if k in self.shadow.param_groups[0]:
                for g in self.fused.param_groups:
                    g[k] = self.shadow.param_groups[0][k]
        if isinstance(self.shadow, torch.optim.Adagrad):
            params = [p for g in self.shadow.param_groups for p in g["params"]]
            sums = {path: self.shadow.state[p]["sum"] for p, path in zip(params, self.d._swapped)}
            osd = self.fused.state_dict()
            self.d.shards_from_fused(sums, self.d._state_shards(osd))
            self.fused.load_state_dict(osd)


__all__ = ["DistEnv", "Distributed", "init_distributed", "launched_world_size"]
