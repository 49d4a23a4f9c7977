"""One FuxiCTR end-to-end run, in its own process: FuxiCTR's model zoo ``run_expid.py`` on a
config directory that :mod:`rankmixer.bench.fuxictr_e2e` wrote, with our composition as the
zoo model (:mod:`rankmixer.models.fuxictr.zoo`)::

    python -m rankmixer.bench.fuxictr_e2e_worker --config fuxictr_config --expid DCNv2_e2e \\
        --model dcnv2 --out fuxictr_out [--threads N] [--gpu -1]

run from the run directory (the configs name their files relative to it). The steps are
``run_expid.py``'s, with FuxiCTR 2.3.10's own API: ``load_config``, ``set_logger``,
``seed_everything``, ``FeatureProcessor`` + ``build_dataset``, ``FeatureMap.load``, the model,
``RankDataLoader``, ``fit`` (its early stopping, regularisers, reduce-LR-on-plateau and best
checkpoint), ``evaluate`` on valid and test. Two additions: Ray (FuxiCTR's data engine) is
started first (see below: its CPUs, no dashboard), and the valid and test predictions are
written with each row's ``__split_row`` (``BaseModel.predict``'s loop, keeping that column), so
the caller matches them to its rows. Outputs in ``--out``: ``result.json`` (FuxiCTR's metrics,
the validation history, step counts, parameter counts, the parameters used) and
``<split>_predictions.npz`` (``row``, ``labels`` [N, T], ``probs`` [N, T]).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from rankmixer.bench.fuxictr_export import ROW_ID
from rankmixer.models.fuxictr.zoo import build_zoo_model
from rankmixer.nn.embedding import split_parameters


def predictions(model, data, labels: list[str]) -> dict[str, np.ndarray]:
    """``BaseModel.predict``'s loop (eval mode, no gradients, ``forward``), keeping each row's
    id and labels beside its predicted probabilities."""
    keys = ["y_pred"] if len(labels) == 1 else [f"{lab}_pred" for lab in labels]
    rows, ys, ps = [], [], []
    model.eval()
    with torch.no_grad():
        for batch in data:
            out = model.forward(batch)
            rows.append(batch[ROW_ID].numpy().reshape(-1))
            ys.append(np.stack([batch[lab].numpy().reshape(-1) for lab in labels], axis=1))
            ps.append(torch.cat([out[k].reshape(-1, 1) for k in keys], dim=1).float().cpu().numpy())
    return {"row": np.concatenate(rows).astype(np.int64), "labels": np.concatenate(ys).astype(np.float32),
            "probs": np.concatenate(ps).astype(np.float32)}


def _plain(obj):
    """``obj`` with numpy scalars as Python numbers (FuxiCTR's metrics are numpy floats)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj.item() if isinstance(obj, np.generic) else obj


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="FuxiCTR config directory (model_config.yaml, dataset_config.yaml)")
    ap.add_argument("--expid", required=True, help="the experiment id in model_config.yaml")
    ap.add_argument("--model", required=True, help="the composition (a key of rankmixer.models.fuxictr.zoo.ZOO)")
    ap.add_argument("--out", required=True, help="directory for result.json and the predictions")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--gpu", type=int, default=-1, help="FuxiCTR's gpu: -1 for the CPU")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import ray
    from fuxictr import __version__ as fuxictr_version
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything
    from fuxictr.utils import load_config, print_to_json, set_logger

    # Before FuxiCTR starts Ray itself (it then finds it running): no dashboard, and at least 4
    # logical CPUs for Ray (how many of its data tasks may run at once; torch keeps --threads).
    # With fewer, each build_dataset transform starts fresh Ray workers (seconds each), and with
    # one the training loader can hold it while the validation loader waits (Ray warns of a hang).
    ray.init(num_cpus=max(4, args.threads or os.cpu_count() or 1), include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    params = load_config(args.config, args.expid)
    params["gpu"] = args.gpu
    set_logger(params)
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.info("Params: " + print_to_json(params))
    seed_everything(seed=params["seed"])

    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    if any(c.get("preprocess") == "convert_to_bucket" for c in params["feature_cols"]):
        from fuxictr.datasets.criteo import CustomizedFeatureProcessor as Processor  # Criteo's log buckets
    else:
        Processor = FeatureProcessor
    params["train_data"], params["valid_data"], params["test_data"] = build_dataset(Processor(**params), **params)
    feature_map = FeatureMap(params["dataset_id"], data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
    logging.info("Feature specs: " + print_to_json(feature_map.features))

    model = build_zoo_model(args.model, feature_map, **params)
    model.count_parameters()
    train_gen, valid_gen = RankDataLoader(feature_map, stage="train", **params)
    model.fit(train_gen, validation_data=valid_gen, **params)
    logging.info("****** Validation evaluation ******")
    valid_result = model.evaluate(valid_gen)
    logging.info("******** Test evaluation ********")
    test_gen = RankDataLoader(feature_map, stage="test", **params)
    test_result = model.evaluate(test_gen)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, data in (("valid", valid_gen), ("test", test_gen)):
        np.savez(out / f"{split}_predictions.npz", **predictions(model, data, feature_map.labels))
    emb, dense = split_parameters(model)
    result = {
        "fuxictr_version": fuxictr_version,
        "valid": valid_result, "test": test_result, "history": model.history,
        "steps": model._total_steps, "steps_per_epoch": model._steps_per_epoch,
        "epochs": model._epoch_index + 1, "stopped_early": model._stop_training,
        "parameters": sum(p.numel() for p in emb + dense), "dense_parameters": sum(p.numel() for p in dense),
        "params": {k: v for k, v in params.items() if k not in ("feature_cols", "label_col")},
    }
    (out / "result.json").write_text(json.dumps(_plain(result), indent=2, default=str))
    ray.shutdown()


if __name__ == "__main__":
    main()
