"""A planted machine: a training-speed surface with a known optimum, for testing the predictor
and the searcher without timing anything.

Over any space: log samples/s is a sum of one effect per (knob, choice), drawn once from the
seed, plus interactions that make the best choice of one knob depend on another (per-token FFN
implementation x batch size, precision x model size, threads x loader workers); peak memory
grows with the model and the batch. A measurement multiplies the true speed by log-normal noise
(``noise``, the relative spread of a real run) and fails, like a real one, when the memory
passes the options' limit. :meth:`PlantedMachine.best` is the exact optimum by enumeration.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from rankmixer.system.measure import MeasureOptions, record_of
from rankmixer.system.space import Setting, SystemSpace

__all__ = ["PlantedMachine"]

_PAIRS = (("ffn_impl", "batch_size"), ("precision", "model_size"), ("threads", "workers"))


class PlantedMachine:
    def __init__(self, space: SystemSpace, seed: int = 0, noise: float = 0.03) -> None:
        self.space, self.noise = space, noise
        rng = random.Random(seed)
        self.main = {(k, str(c)): rng.uniform(-0.4, 0.4) for k, cs in space.choices.items() for c in cs}
        for i, size in enumerate(space.choices["model_size"]):  # larger models train slower
            self.main[("model_size", str(size))] = 2.0 - 0.8 * i
        self.pairs = {(a, str(x), b, str(y)): rng.uniform(-0.25, 0.25)
                      for a, b in _PAIRS for x in space.choices[a] for y in space.choices[b]}
        self.size_mb = {str(s): 300.0 * (2 ** i) for i, s in enumerate(space.choices["model_size"])}
        self.rng = random.Random(seed + 1)

    def log_speed(self, s: Setting) -> float:
        v = 8.0 + sum(self.main.get((k, str(s[k])), 0.0) for k in self.space.choices)
        return v + sum(self.pairs.get((a, str(s[a]), b, str(s[b])), 0.0) for a, b in _PAIRS)

    def true_speed(self, s: Setting) -> float:
        return math.exp(self.log_speed(s))

    def true_memory(self, s: Setting) -> float:
        per_row = 0.25 if s["precision"] == "fp32" else 0.15
        return self.size_mb[str(s["model_size"])] + per_row * s["batch_size"] + 40.0 * s["workers"]

    def best(self, fixed: Setting | None = None, memory_limit_mb: float | None = None) -> tuple[Setting, float]:
        """The fastest setting (``fixed`` pinned, under the memory limit) and its true speed."""
        pool = [s for s in self.space.grid(fixed) if memory_limit_mb is None or self.true_memory(s) <= memory_limit_mb]
        best = max(pool, key=self.log_speed)
        return best, self.true_speed(best)

    def measure(self, space: SystemSpace, settings: list[Setting], options: MeasureOptions | None = None,
                origin: str = "planted", on_record: Callable[[dict], None] | None = None,
                log: Callable[[str], None] = print) -> list[dict]:
        """The signature of :func:`rankmixer.system.measure.measure_many`, on the planted surface."""
        options = options or MeasureOptions()
        out = []
        for s in settings:
            mem = self.true_memory(s)
            limit = options["memory_limit_mb"]
            if limit is not None and mem > limit:
                result = {"status": "failed", "reason": f"memory: resident {mem:.0f} MB passed the limit of {limit:.0f} MB"}
            else:
                result = {"status": "ok", "samples_per_s": self.true_speed(s) * math.exp(self.rng.gauss(0, self.noise)),
                          "peak_rss_mb": mem * math.exp(self.rng.gauss(0, self.noise / 3)), "step_ms_median": 1.0,
                          "params": 1, "timed_steps": 3}
            rec = record_of(s, result, origin, 0.0)
            if on_record is not None:
                on_record(rec)
            out.append(rec)
        return out
