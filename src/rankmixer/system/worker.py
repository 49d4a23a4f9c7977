"""One measurement, in its own process: a short stretch of real training under one setting.

``python -m rankmixer.system.worker SPEC.json OUT.json`` builds the experiment of the spec (the
base config with the setting's overrides), the model (its ``auto`` kernels measured, untimed) and
the :class:`~rankmixer.train.trainer.Trainer` exactly as ``rankmixer train`` does, feeds it batches from the DataLoader (its workers included),
and times whole steps: reading the batch, forward, backward, optimizer. The first ``warmup``
steps (DataLoader start, allocator growth, kernel selection, compilation) are not timed; then
steps run until ``min_seconds`` have passed and at least ``min_steps`` are done (at most
``max_steps``). Epochs wrap around, so a small split still gives every step.

A process of its own because the allocator is chosen by the environment before Python starts,
the thread count and a compiled graph must not leak into the next setting, and the peak
resident memory (``ru_maxrss``) is this setting's alone. The result (or the error) is written
as JSON to OUT.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

__all__ = ["run_spec"]


def _quiet(msg: str) -> None:
    pass


def run_spec(spec: dict) -> dict:
    import torch

    from rankmixer.config import load_config
    from rankmixer.data.loader import make_loader
    from rankmixer.experiment import measure_auto, prepare_data
    from rankmixer.models import registry
    from rankmixer.train.trainer import Trainer, seed_everything

    t0 = time.perf_counter()
    cfg = load_config(spec["base"], [*spec["overrides"], "train.progress=false"])
    fm = prepare_data(cfg.data, log=_quiet)
    seed_everything(spec.get("seed", 0))
    model = registry.build_model(cfg.model_name, fm, cfg.model_params)
    params = sum(p.numel() for p in model.parameters())
    train_cfg = cfg.train
    if train_cfg.measured_auto:  # auto kernels timed (or read from the history) as `rankmixer train` does
        train_cfg, _ = measure_auto(model, fm, train_cfg, _quiet)
    with tempfile.TemporaryDirectory(prefix="rankmixer-system-") as run_dir:
        trainer = Trainer(model, fm, train_cfg, run_dir, seed=spec.get("seed", 0), num_workers=cfg.data.num_workers,
                          shuffle_buffer=cfg.data.shuffle_buffer, log=_quiet)
        if spec.get("compile", "none") != "none":
            mode = None if spec["compile"] == "default" else spec["compile"]
            trainer.model = torch.compile(trainer.model, mode=mode)  # the training forward, compiled
        warmup, min_steps, max_steps = spec.get("warmup", 2), spec.get("min_steps", 3), spec.get("max_steps", 30)
        min_seconds = spec.get("min_seconds", 1.5)
        times: list[float] = []
        rows = 0
        setup_s = time.perf_counter() - t0
        done, epoch = 0, 0
        start = time.perf_counter()
        while True:
            trainer.train_data.set_epoch(epoch)
            t_prev = time.perf_counter()
            for batch in make_loader(trainer.train_data, num_workers=trainer.num_workers):
                loss, _ = trainer.train_step(batch.to(trainer.device))
                now = time.perf_counter()
                if done >= warmup:
                    times.append(now - t_prev)
                    rows += len(batch)
                else:
                    start = now
                done += 1
                t_prev = now
                timed = len(times)
                if timed >= max_steps or (timed >= min_steps and now - start >= min_seconds):
                    break
            else:
                epoch += 1
                continue
            break
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the training loss is {float(loss)} after {done} steps")
    elapsed = sum(times)
    return {
        "status": "ok", "samples_per_s": rows / elapsed, "step_ms_median": 1e3 * statistics.median(times),
        "timed_steps": len(times), "timed_seconds": elapsed, "setup_seconds": setup_s, "params": params,
        # Linux reports ru_maxrss in KiB: the peak resident memory of this process.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str]) -> int:
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    try:
        result = run_spec(json.loads(spec_path.read_text()))
    except Exception as e:  # reported to the parent, which records the setting as failed
        last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        where = f" ({Path(last.filename).name}:{last.lineno})" if last else ""
        message = " ".join(str(e).split())[:500]  # a config error spans lines: keep them, on one
        result = {"status": "failed", "reason": f"{type(e).__name__}: {message}{where}"}
    out_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
