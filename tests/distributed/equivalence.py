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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest helpers
from conftest import make_feature_map, random_batch  # noqa: E402

from rankmixer.config import DistributedConfig, TrainConfig  # noqa: E402
from rankmixer.data.batch import Batch  # noqa: E402
from rankmixer.models import registry  # noqa: E402
from rankmixer.nn.embedding import split_parameters  # noqa: E402
from rankmixer.nn.sharded_embedding import torchrec_available  # noqa: E402
from rankmixer.train.distributed import Distributed, init_distributed  # noqa: E402
from rankmixer.train.trainer import _make_optimizer  # noqa: E402

STEPS, GLOBAL_B = 6, 64


def slice_batch(b: Batch, sl: slice) -> Batch:
    return Batch(dense=b.dense[sl], sparse=b.sparse[sl], labels=b.labels[sl],
                 bags={k: v[sl] for k, v in b.bags.items()}, sequences={k: v[sl] for k, v in b.sequences.items()},
                 group=None if b.group is None else b.group[sl], timestamp=None)


def optimizers(model, cfg):
    emb, dense = split_parameters(model)
    return {"dense": _make_optimizer(cfg.dense_optimizer, dense), "sparse": _make_optimizer(cfg.sparse_optimizer, emb)}


def step(model, opts, batch) -> torch.Tensor:
    for o in opts.values():
        o.zero_grad(set_to_none=True)
    loss = F.binary_cross_entropy_with_logits(model(batch).logits.float(), batch.labels)
    loss.backward()
    for o in opts.values():
        o.step()
    return loss.detach()


def run(mode: str, model_name: str, params: dict, env) -> dict:
    fm = make_feature_map(num_tasks=1)
    cfg = TrainConfig(distributed=DistributedConfig(embeddings=mode))
    torch.manual_seed(3)
    model = registry.build_model(model_name, fm, params)
    reference = copy.deepcopy(model)
    ref_opts = optimizers(reference, cfg)
    d = Distributed(env, cfg.distributed, log=lambda m: None)
    wrapped, opts = d.wrap(model, optimizers(model, cfg), cfg)
    per = GLOBAL_B // env.world_size
    mine = slice(env.rank * per, (env.rank + 1) * per)
    g = torch.Generator().manual_seed(11)
    losses, ref_losses = [], []
    for _ in range(STEPS):
        batch = random_batch(fm, GLOBAL_B, g)
        ref_losses.append(float(step(reference, ref_opts, batch)))
        local = float(step(wrapped, opts, slice_batch(batch, mine)))
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
    moved = max(float((want[k].float() - got[k].float()).abs().max() + 0) for k in want if k.endswith("embedding.weight"))
    return {"mode": d.mode, "model": model_name, "losses": losses, "ref_losses": ref_losses,
            "max_param_diff": param_diff, "max_adagrad_state_diff": state_diff,
            "placement": d.placement, "n_state_tensors": len(sums)}


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    env = init_distributed(DistributedConfig(timeout_s=60), "cpu")
    assert env is not None, "launch with torchrun --nproc_per_node=2"
    modes = ["ddp"] + (["torchrec"] if torchrec_available()[0] and "--no-torchrec" not in sys.argv else [])
    results = []
    for mode in modes:
        for name, params in (("deepfm", {"embedding_dim": 8, "dnn_hidden": [16]}),
                             ("dcnv2", {"embedding_dim": 8, "dnn_hidden": [16], "dropout": 0.0})):
            results.append(run(mode, name, params, env))
    if env.is_main:
        out.write_text(json.dumps(results, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
