"""``rankmixer bench cubicml``: does the CubicML searcher pick faster settings than the default
and than random search at the same number of real runs?

1. **History.** ``random_settings`` settings drawn uniformly from the space (a fixed list, seed
   0) are measured on this machine and kept in the history file; a rerun measures only what is
   missing, so an interrupted benchmark continues.
2. **Predictor.** Spearman's rho between predicted and measured samples/s (and peak memory) on
   held-out settings, by 5-fold cross-validation, once per seed (folds and bootstrap differ).
3. **Search vs default vs random, per seed.** The searcher sees a seed's subsample of the
   history (``train_fraction``), keeps the model size fixed and spends ``budget`` real runs; the
   random baseline measures ``budget`` settings of the same model size drawn with that seed; the
   default setting is measured too. Then the three winners (search, best random, default) are
   measured ``confirm`` more times, interleaved, and the ratios come from those medians: the
   winners' first measurements are maxima over noisy runs, the confirmation is not.
4. **Runs saved.** From every measured random setting of that model size: the share ``p`` at
   least as fast as the search's confirmed pick; random search needs ``1/p`` runs on average to
   find one (a lower bound when none was), against the search's ``budget``.

Every measurement is a short stretch of real training (:mod:`rankmixer.system.worker`).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rankmixer.core.files import write_json
from rankmixer.core.hardware import hardware_fingerprint, machine_info
from rankmixer.system.history import append_records, read_history
from rankmixer.system.measure import MeasureOptions, measure_many
from rankmixer.system.predictor import cross_validated_spearman, fastest
from rankmixer.system.searcher import search
from rankmixer.system.space import load_system_space, setting_key

__all__ = ["AUTO_VARIANTS", "auto_table", "comparison_table", "format_cubicml", "history_table", "predictor_table",
           "run_auto_bench", "run_cubicml_bench"]


def _median_sps(records: list[dict]) -> float | None:
    ok = [r["samples_per_s"] for r in records if r["status"] == "ok"]
    return statistics.median(ok) if ok else None


def _mean_sd(xs: list[float]) -> dict:
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def run_cubicml_bench(
    history_path: Path | str,
    space_name: str = "cpu",
    random_settings: int = 120,
    model_size: str = "large",
    budget: int = 5,
    rounds: int = 1,
    seeds: tuple[int, ...] = (0, 1, 2),
    train_fraction: float = 0.8,
    confirm: int = 2,
    memory_limit_mb: float | None = None,
    options: MeasureOptions | None = None,
    out: Path | str | None = None,
    log: Callable[[str], None] = print,
    measure: Callable[..., list[dict]] = measure_many,
    members: int = 16,
    iterations: int = 150,
) -> dict:
    """Run the benchmark (module doc); print the table; return (and with ``out`` write) the
    report. ``measure`` runs settings (a planted machine in tests); ``members`` and
    ``iterations`` size the predictor."""
    space = load_system_space(space_name)
    space.check_value("model_size", model_size)
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    options = options or MeasureOptions(memory_limit_mb=memory_limit_mb)
    history_path = Path(history_path)
    fingerprint = hardware_fingerprint()
    save = lambda rec: append_records(history_path, [rec])  # noqa: E731  (each record as it comes)

    # 1. the history of random settings on this machine
    wanted = space.draw(random_settings, seed=0)
    have = {r["key"] for r in read_history(history_path) if r["origin"] == "random" and r["fingerprint"] == fingerprint}
    todo = [s for s in wanted if setting_key(s) not in have]
    log(f"history {history_path}: {len(wanted) - len(todo)} of {len(wanted)} random settings measured here; measuring {len(todo)}")
    measure(space, todo, options, origin="random", on_record=save, log=log)
    wanted_keys = {setting_key(s) for s in wanted}
    history = [r for r in read_history(history_path)
               if r["origin"] == "random" and r["fingerprint"] == fingerprint and r["key"] in wanted_keys]
    failed = [r for r in history if r["status"] != "ok"]

    # 2. the predictor on held-out settings
    quality = []
    for seed in seeds:
        q = cross_validated_spearman(space, history, folds=5, seed=seed, members=members, iterations=iterations)
        log(f"predictor, seed {seed}: Spearman on held-out settings {q['spearman_speed']:.3f} (speed), "
            f"{q['spearman_memory']:.3f} (memory), n={q['n']}")
        quality.append({"seed": seed, **q})

    # 3. search vs random vs default at equal budget
    fixed = {"model_size": model_size}
    per_seed = []
    seen = sorted(history, key=lambda r: r["key"])
    for seed in seeds:
        rng = random.Random(seed)
        sub = rng.sample(seen, max(8, round(train_fraction * len(seen)))) if train_fraction < 1 else seen
        log(f"seed {seed}: search ({budget} runs, predictor on {len(sub)} history rows) ...")
        found = search(space, sub, fixed, budget, rounds, memory_limit_mb, options, seed=seed, on_record=save, log=log,
                       measure=measure, members=members, iterations=iterations)
        log(f"seed {seed}: random search ({budget} runs) ...")
        rand = measure(space, space.draw(budget, seed=10_000 + seed, fixed=fixed), options,
                            origin="random-baseline", on_record=save, log=log)
        default = space.default_setting(model_size)
        log(f"seed {seed}: default ...")
        first_default = measure(space, [default], options, origin="default", on_record=save, log=log)
        best_random = fastest(rand) or {}
        winners = {"default": default, "search": (found.best or {}).get("setting"), "random": best_random.get("setting")}
        confirm_recs: dict[str, list[dict]] = {k: [] for k in winners}
        log(f"seed {seed}: confirming the winners, {confirm} interleaved measurement(s) each ...")
        for _ in range(confirm):
            for name, s in winners.items():
                if s is not None:
                    confirm_recs[name] += measure(space, [s], options, origin=f"confirm-{name}", on_record=save, log=log)
        med = {k: _median_sps(v) for k, v in confirm_recs.items()}
        row: dict[str, Any] = {
            "seed": seed, "history_rows": len(sub), "candidates": found.candidates,
            "excluded_by_memory": found.excluded_by_memory,
            "search": {"setting": winners["search"], "first_samples_per_s": (found.best or {}).get("samples_per_s"),
                       "confirmed_samples_per_s": med["search"],
                       "ranked_top": [{"setting": c.setting, "predicted_samples_per_s": c.predicted_samples_per_s,
                                       "log_sps_std": c.log_sps_std, "predicted_peak_mb": c.predicted_peak_mb}
                                      for c in found.ranked[:budget]],
                       "measured": found.measured},
            "random": {"setting": winners["random"], "first_samples_per_s": best_random.get("samples_per_s"),
                       "confirmed_samples_per_s": med["random"], "measured": rand},
            "default": {"setting": default, "first_samples_per_s": _median_sps(first_default),
                        "confirmed_samples_per_s": med["default"]},
            "confirm_records": confirm_recs,
        }
        for other in ("default", "random"):
            row[f"search_over_{other}"] = (med["search"] / med[other]) if med["search"] and med[other] else None
        log(f"seed {seed}: search {med['search']} vs random {med['random']} vs default {med['default']} samples/s")
        per_seed.append(row)

    # 4. runs saved against random search
    pool = [r["samples_per_s"] for r in history if r["status"] == "ok" and r["setting"]["model_size"] == model_size]
    pool += [r["samples_per_s"] for row in per_seed for r in row["random"]["measured"] if r["status"] == "ok"]
    saved = []
    for row in per_seed:
        pick = row["search"]["confirmed_samples_per_s"]
        if pick is None or not pool:
            continue
        p = sum(x >= pick for x in pool) / len(pool)
        expected = 1 / p if p > 0 else None
        saved.append({"seed": row["seed"], "share_of_random_at_least_as_fast": p, "random_runs_expected": expected,
                      "random_runs_lower_bound": None if p > 0 else len(pool) + 1, "search_runs": budget})
    grid_size = len(list(space.grid(fixed)))
    machine = machine_info()
    report = {
        "setup": {"space": space_name, "model_size": model_size, "budget": budget, "rounds": rounds,
                  "seeds": list(seeds), "train_fraction": train_fraction, "confirm": confirm,
                  "random_settings": random_settings, "memory_limit_mb": memory_limit_mb, "options": dict(options),
                  "space_size": space.size(), "settings_at_model_size": grid_size, "fingerprint": fingerprint,
                  "history": str(history_path), "machine": machine, "cpu_flags": machine["cpu_flags"]},
        "history": {"measured": len(history), "failed": len(failed),
                    "failed_reasons": sorted({r["reason"] for r in failed if r["reason"]}),
                    "records": history},
        "predictor": {"per_seed": quality,
                      "spearman_speed": _mean_sd([q["spearman_speed"] for q in quality]),
                      "spearman_memory": _mean_sd([q["spearman_memory"] for q in quality])},
        "comparison": {"per_seed": per_seed,
                       "search_over_default": _mean_sd([r["search_over_default"] for r in per_seed]),
                       "search_over_random": _mean_sd([r["search_over_random"] for r in per_seed])},
        "runs_saved": {"per_seed": saved, "random_pool": len(pool), "exhaustive_runs": grid_size},
    }
    log(format_cubicml(report))
    if out is not None:
        log(f"wrote {write_json(out, report, inputs=[history_path])}")
    return report


def format_cubicml(report: dict) -> str:
    p, c = report["predictor"], report["comparison"]
    lines = [f"CubicML on {report['setup']['machine']['device_name']} (model size {report['setup']['model_size']}, "
             f"budget {report['setup']['budget']} runs, seeds {report['setup']['seeds']})",
             f"history: {report['history']['measured']} settings measured, {report['history']['failed']} failed",
             f"predictor Spearman (held-out): speed {p['spearman_speed']['mean']:.3f} +- {p['spearman_speed']['sd']:.3f}, "
             f"memory {p['spearman_memory']['mean']:.3f} +- {p['spearman_memory']['sd']:.3f}",
             "seed | search samples/s | best random | default | search/default | search/random"]
    for r in c["per_seed"]:
        f = lambda x: "failed" if x is None else f"{x:.0f}"  # noqa: E731
        g = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        lines.append(f"{r['seed']} | {f(r['search']['confirmed_samples_per_s'])} | {f(r['random']['confirmed_samples_per_s'])} | "
                     f"{f(r['default']['confirmed_samples_per_s'])} | {g(r['search_over_default'])} | {g(r['search_over_random'])}")
    return "\n".join(lines)


def _knobs(setting: dict | None, skip: tuple[str, ...] = ("model_size",)) -> str:
    if setting is None:
        return "-"
    return ", ".join(f"{k}={v}" for k, v in setting.items() if k not in skip)


def predictor_table(report: dict) -> str:
    """Held-out Spearman per seed and over seeds."""
    p = report["predictor"]
    lines = ["| seed | held-out settings | Spearman, samples/s | Spearman, peak memory | per fold (samples/s) |",
             "| --- | --- | --- | --- | --- |"]
    for q in p["per_seed"]:
        lines.append(f"| {q['seed']} | {q['n']} | {q['spearman_speed']:.3f} | {q['spearman_memory']:.3f} | "
                     + ", ".join(f"{f['spearman_speed']:.2f}" for f in q["folds"]) + " |")
    sp, mem = p["spearman_speed"], p["spearman_memory"]
    lines.append(f"| mean ± sd | | {sp['mean']:.3f} ± {sp['sd']:.3f} | {mem['mean']:.3f} ± {mem['sd']:.3f} | |")
    return "\n".join(lines) + "\n"


def comparison_table(report: dict) -> str:
    """Per seed: the confirmed samples/s of the search's pick, the best random setting and the
    default, their ratios and the pick; then mean ± sd of the ratios and the runs saved."""
    c = report["comparison"]
    f = lambda x: "failed" if x is None else f"{x:,.0f}"  # noqa: E731
    g = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    lines = ["| seed | search | best of random | default | search / default | search / random | search's pick |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in c["per_seed"]:
        lines.append(f"| {r['seed']} | {f(r['search']['confirmed_samples_per_s'])} | "
                     f"{f(r['random']['confirmed_samples_per_s'])} | {f(r['default']['confirmed_samples_per_s'])} | "
                     f"{g(r['search_over_default'])} | {g(r['search_over_random'])} | {_knobs(r['search']['setting'])} |")
    d, rr = c["search_over_default"], c["search_over_random"]
    lines.append(f"| mean ± sd | | | | {g(d['mean'])} ± {g(d['sd'])} | {g(rr['mean'])} ± {g(rr['sd'])} | |")
    lines += ["", "| seed | random settings at least as fast as the pick | random runs to find one (expected) | "
              "search runs |", "| --- | --- | --- | --- |"]
    for s in report["runs_saved"]["per_seed"]:
        runs = (f"{s['random_runs_expected']:.1f}" if s["random_runs_expected"] is not None
                else f"> {s['random_runs_lower_bound'] - 1}")
        lines.append(f"| {s['seed']} | {100 * s['share_of_random_at_least_as_fast']:.1f}% of "
                     f"{report['runs_saved']['random_pool']} | {runs} | {s['search_runs']} |")
    return "\n".join(lines) + "\n"


def history_table(report: dict) -> str:
    """Per model size: measured settings, the slowest, median and fastest samples/s and the
    fastest setting; then the failures with their reasons."""
    rows = report["history"]["records"]
    sizes = sorted({r["setting"]["model_size"] for r in rows}, key=lambda s: [r["setting"]["model_size"] for r in rows].index(s))
    lines = ["| model size | measured | failed | slowest | median | fastest (samples/s) | fastest setting |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for size in sizes:
        mine = [r for r in rows if r["setting"]["model_size"] == size]
        ok = sorted((r for r in mine if r["status"] == "ok"), key=lambda r: r["samples_per_s"])
        if not ok:
            lines.append(f"| {size} | {len(mine)} | {len(mine)} | - | - | - | - |")
            continue
        lines.append(f"| {size} | {len(mine)} | {len(mine) - len(ok)} | {ok[0]['samples_per_s']:,.0f} | "
                     f"{statistics.median(r['samples_per_s'] for r in ok):,.0f} | {ok[-1]['samples_per_s']:,.0f} | "
                     f"{_knobs(ok[-1]['setting'])} |")
    return "\n".join(lines) + "\n"


# The measured auto kernels against every alternative we ship, all else the default setting.
AUTO_VARIANTS = {
    "auto (measured)": {"ffn_impl": "auto", "optimizer_impl": "auto"},
    "ffn bmm": {"ffn_impl": "bmm", "optimizer_impl": "auto"},
    "ffn fused": {"ffn_impl": "fused", "optimizer_impl": "auto"},
    "ffn split": {"ffn_impl": "split", "optimizer_impl": "auto"},
    "optimizer fused": {"ffn_impl": "auto", "optimizer_impl": "fused"},
    "optimizer foreach": {"ffn_impl": "auto", "optimizer_impl": "foreach"},
    "optimizer forloop": {"ffn_impl": "auto", "optimizer_impl": "forloop"},
}


def run_auto_bench(
    history_path: Path | str,
    space_name: str = "cpu",
    model_sizes: tuple[str, ...] = ("large",),
    precisions: tuple[str, ...] = ("fp32",),
    rounds: int = 3,
    options: MeasureOptions | None = None,
    out: Path | str | None = None,
    log: Callable[[str], None] = print,
    measure: Callable[..., list[dict]] = measure_many,
) -> dict:
    """Whole training runs of the default setting with the measured ``auto`` kernels and with
    each alternative (:data:`AUTO_VARIANTS`), in ``rounds`` interleaved rounds; per model size
    and precision, the median samples/s of each and ``auto`` over the best alternative. The
    auto timings go to the history at ``history_path`` (the workers' cache)."""
    space = load_system_space(space_name)
    options = MeasureOptions(**{**(options or MeasureOptions()), "auto_history": str(history_path)})
    groups = []
    for size in model_sizes:
        for precision in precisions:
            base = {**space.default_setting(size), "precision": precision}
            recs: dict[str, list[dict]] = {name: [] for name in AUTO_VARIANTS}
            for r in range(rounds):
                log(f"{size} {precision}: round {r + 1}/{rounds}")
                for name, knobs in AUTO_VARIANTS.items():
                    recs[name] += measure(space, [{**base, **knobs}], options, origin="auto-check", log=log)
            med = {k: _median_sps(v) for k, v in recs.items()}
            alts = {k: v for k, v in med.items() if k != "auto (measured)" and v is not None}
            best_alt = max(alts, key=alts.get) if alts else None
            groups.append({"model_size": size, "precision": precision, "setting": base, "median_samples_per_s": med,
                           "per_round": {k: [x["samples_per_s"] for x in v] for k, v in recs.items()},
                           "failed": {k: [x["reason"] for x in v if x["status"] != "ok"] for k, v in recs.items()},
                           "best_alternative": best_alt,
                           "auto_over_best_alternative": (med["auto (measured)"] / alts[best_alt])
                           if best_alt and med["auto (measured)"] else None})
    choices = [r for r in read_history(history_path) if r["kind"] == "auto" and r["fingerprint"] == hardware_fingerprint()]
    machine = machine_info()
    report = {"setup": {"space": space_name, "model_sizes": list(model_sizes), "precisions": list(precisions),
                        "rounds": rounds, "options": dict(options), "machine": machine,
                        "cpu_flags": machine["cpu_flags"], "fingerprint": hardware_fingerprint()},
              "groups": groups, "auto_choices": [r["setting"] for r in choices]}
    log(auto_table(report))
    if out is not None:
        log(f"wrote {write_json(out, report, inputs=[history_path])}")
    return report


def auto_table(report: dict) -> str:
    """Median samples/s of the measured auto kernels and of each alternative, and the ratio."""
    names = list(AUTO_VARIANTS)
    lines = ["| model size | precision | " + " | ".join(names) + " | auto / best alternative |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " | --- |"]
    for g in report["groups"]:
        med = g["median_samples_per_s"]
        cells = ["failed" if med[n] is None else f"{med[n]:,.0f}" for n in names]
        ratio = "-" if g["auto_over_best_alternative"] is None else f"{g['auto_over_best_alternative']:.2f} (vs {g['best_alternative']})"
        lines.append(f"| {g['model_size']} | {g['precision']} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines) + "\n"
