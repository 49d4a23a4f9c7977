"""Run under torchrun (2 processes): N ranks on their slices of a global batch == one process on
the whole batch. Launched by tests/test_distributed.py; writes a JSON report (rank 0).

For each mode (ddp, torchrec when importable) and model: every rank builds the same model (same
seed); a plain deep copy is the single-process reference, trained on the concatenated global
batch with the trainer's optimizers (AdamW dense, Adagrad tables). The wrapped model trains on
this rank's rows only. Compared per step: the loss (mean over ranks vs the reference's) and, at
the end, every parameter in the single-process layout (tables gathered from their shards).
"""

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for tests.factories
from tests.factories import make_feature_map, random_batch  # noqa: E402

from rankmixer.train.config import DistributedConfig, TrainConfig  # noqa: E402
from rankmixer.data.batch import Batch  # noqa: E402
from rankmixer.models import registry  # noqa: E402
from rankmixer.nn.embedding import split_parameters  # noqa: E402
from rankmixer.nn.sharded_embedding import torchrec_available  # noqa: E402
from rankmixer.train.distributed import Distributed, init_distributed  # noqa: E402
from rankmixer.train.optim import lr_lambda, make_optimizer  # noqa: E402

STEPS, GLOBAL_B = 6, 64


def slice_batch(b: Batch, sl: slice) -> Batch:
    return Batch(dense=b.dense[sl], sparse=b.sparse[sl], labels=b.labels[sl],
                 bags={k: v[sl] for k, v in b.bags.items()}, sequences={k: v[sl] for k, v in b.sequences.items()},
                 group=None if b.group is None else b.group[sl], timestamp=None)


def optimizers(model, cfg):
    emb, dense = split_parameters(model)
    return {"dense": make_optimizer(cfg.dense_optimizer, dense), "sparse": make_optimizer(cfg.sparse_optimizer, emb)}


def schedulers(opts):
    # linear warm-up over 4 steps, as the trainer builds it (LambdaLR per optimizer): checks that
    # LR changes reach TorchRec's fused optimizer too
    fn = lr_lambda("constant", 4, 100)
    return [torch.optim.lr_scheduler.LambdaLR(o, fn) for o in opts.values()]


def step(model, opts, batch, scheds=()) -> torch.Tensor:
    for o in opts.values():
        o.zero_grad(set_to_none=True)
    loss = F.binary_cross_entropy_with_logits(model(batch).logits.float(), batch.labels)
    loss.backward()
    for o in opts.values():
        o.step()
    for sch in scheds:
        sch.step()
    return loss.detach()


def run(mode: str, sharding: list[str] | None, model_name: str, params: dict, env) -> dict:
    fm = make_feature_map(num_tasks=1)
    # column_wise: 4-column shards, so the 8-wide tables really split across the two ranks
    cw = 4 if sharding == ["column_wise"] else None
    cfg = TrainConfig(distributed=DistributedConfig(embeddings=mode, sharding_types=sharding, column_shard_min_dim=cw))
    torch.manual_seed(3)
    model = registry.build_model(model_name, fm, params)
    reference = copy.deepcopy(model)
    ref_opts = optimizers(reference, cfg)
    ref_sched = schedulers(ref_opts)
    d = Distributed(env, cfg.distributed, log=lambda m: None)
    wrapped, opts = d.wrap(model, optimizers(model, cfg), cfg)
    sched = schedulers(opts)
    per = GLOBAL_B // env.world_size
    mine = slice(env.rank * per, (env.rank + 1) * per)
    g = torch.Generator().manual_seed(11)
    losses, ref_losses = [], []
    for _ in range(STEPS):
        batch = random_batch(fm, GLOBAL_B, g)
        ref_losses.append(float(step(reference, ref_opts, batch, ref_sched)))
        local = float(step(wrapped, opts, slice_batch(batch, mine), sched))
        losses.append(d.mean(local))
    view, _ = d.checkpoint_views(opts)
    got = view.state_dict()
    want = reference.state_dict()
    assert set(got) == set(want), (sorted(set(got) ^ set(want)))
    param_diff = max(float((got[k].float() - want[k].float()).abs().max()) for k in want if want[k].numel())
    # Adagrad state of the tables in the single-process layout, against the reference's.
    _, views = d.checkpoint_views(opts, STEPS)
    sums = [s["sum"] for s in views["sparse"].state_dict()["state"].values()]
    ref_sums = [s["sum"] for s in ref_opts["sparse"].state_dict()["state"].values()]
    state_diff = max(float((a - b).abs().max()) for a, b in zip(sums, ref_sums))
    # Resume path (1 -> N): a fresh single-process model + optimizers perturbed by one step on
    # other data, then overwritten with the reference's state through the views: one more step on
    # both must agree again.
    fresh_batch = random_batch(fm, GLOBAL_B, torch.Generator().manual_seed(99))
    step(wrapped, opts, slice_batch(fresh_batch, mine))  # diverge first
    view, views = d.checkpoint_views(opts, STEPS)
    # deep copies: optimizer.load_state_dict may keep the given tensors, which would then be
    # shared by the two optimizers (a file-based resume has no such aliasing)
    view.load_state_dict(copy.deepcopy(reference.state_dict()))
    views["sparse"].load_state_dict(copy.deepcopy(ref_opts["sparse"].state_dict()))
    views["dense"].load_state_dict(copy.deepcopy(ref_opts["dense"].state_dict()))
    batch = random_batch(fm, GLOBAL_B, g)
    resumed_diff = abs(float(step(reference, ref_opts, batch)) - d.mean(float(step(wrapped, opts, slice_batch(batch, mine)))))
    after, want = view.state_dict(), reference.state_dict()
    resumed_param_diff = max(float((after[k].float() - want[k].float()).abs().max()) for k in want if want[k].numel())
    return {"mode": d.mode, "sharding": sharding, "plan": d.plan_text, "model": model_name,
            "resumed_loss_diff": resumed_diff, "resumed_param_diff": resumed_param_diff, "losses": losses, "ref_losses": ref_losses,
            "max_param_diff": param_diff, "max_adagrad_state_diff": state_diff,
            "placement": d.placement, "n_state_tensors": len(sums)}


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    env = init_distributed(DistributedConfig(timeout_s=60), "cpu")
    assert env is not None, "launch with torchrun --nproc_per_node=2"
    deepfm = ("deepfm", {"embedding_dim": 8, "dnn_hidden": [16]})
    dcnv2 = ("dcnv2", {"embedding_dim": 8, "dnn_hidden": [16], "dropout": 0.0})
    cases = [("ddp", None, deepfm), ("ddp", None, dcnv2)]
    if torchrec_available()[0] and "--no-torchrec" not in sys.argv:
        # planner's choice (table_wise / column_wise on CPU), then each type forced
        cases += [("torchrec", None, deepfm), ("torchrec", None, dcnv2), ("torchrec", ["column_wise"], deepfm),
                  ("torchrec", ["row_wise"], dcnv2)]
    results = [run(mode, sharding, name, params, env) for mode, sharding, (name, params) in cases]
    if env.is_main:
        out.write_text(json.dumps(results, indent=1))
    # Every rank reaches this point before any tears gloo down: a rank that closes its sockets
    # while the other is still in a collective aborts the other process at exit.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
