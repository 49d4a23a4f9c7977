"""The shared frame of the headroom scripts (``scripts/*_headroom.py``): each fits logistic
regressions on features a generator's own arrays give, over a few independent draws, and writes
one JSON report of AUCs per feature set (rendered by ``render=mean-sd`` in the docs).

This module holds what every such script does the same way: ``--out`` and ``--option KEY=VALUE``
(a field of the generator's config), the refusal to overwrite a file it did not write, the
mean and standard deviation over draws, and the report itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from rankmixer.core.hardware import machine_info


def parse_args(doc: str, default_out: Path) -> tuple[Path, dict[str, Any]]:
    """``(--out, {key: value})`` from the command line; ``doc``'s first paragraph is the help."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a field of the generator's config (repeatable)")
    args = ap.parse_args()
    options = {}
    for opt in args.option:
        key, sep, value = opt.partition("=")
        if not sep:
            raise SystemExit(f"--option {opt!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return args.out, options


def run(out: Path, config: Any, one_draw: Callable[[int], dict[str, float]], extra: dict[str, Any],
        seeds: tuple[int, ...] = (11, 12, 13)) -> None:
    """Refuse an ``out`` this frame did not write, run ``one_draw(seed)`` (feature set -> AUC)
    per seed, print the table and write the report (``config`` a pydantic model; ``extra`` added
    to the report as it is)."""
    if out.exists():
        try:
            ours = {"draws", "rows"} <= set(json.loads(out.read_text()))
        except (ValueError, UnicodeDecodeError, TypeError):
            ours = False
        if not ours:
            raise SystemExit(f"{out}: exists and is not a headroom report; refusing to overwrite it")
    draws = [one_draw(seed) for seed in seeds]
    rows = [{"features": k, "auc_mean": float(np.mean([d[k] for d in draws])),
             "auc_sd": float(np.std([d[k] for d in draws], ddof=1))} for k in draws[0]]
    for r in rows:
        print(f"{r['features']:40s} {r['auc_mean']:.4f} +- {r['auc_sd']:.4f}")
    out.write_text(json.dumps({"machine": machine_info(), "config": config.model_dump(mode="json"), **extra,
                               "draws": draws, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
