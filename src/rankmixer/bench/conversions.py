"""Personalized Interpolation on the synthetic conversion log: for several windows ``T_f``
between the fixed windows ``T_s`` and ``T_l``, the test logloss and calibration of

* ``personalised``: ``p_s + alpha (p_l - p_s)`` with each advertiser's delay rate (censored MLE
  on the training log, shrunk toward the global rate; :mod:`rankmixer.conversion.delays`);
* ``global``: the same with one delay rate for all advertisers;
* ``nearest``: the fixed-window model whose window is closer to ``T_f`` (the long one on a tie);
* ``oracle``: a model trained directly on the ``T_f`` label (its own censoring: the clicks of
  the training log's last ``T_f`` days are dropped);
* ``planted-beta``: the interpolation with the generator's true rates (the method's ceiling
  given the two models);
* ``bayes``: the planted probability ``p (1 - exp(-beta_a T_f))`` itself;

and how well the personalised rates recover the planted ones. Every model is the same experiment
(``conversions_dcnv2``: DCNv2, the default recipe, early stopping on validation logloss) on its
window's labels, one run per window and seed; each seed draws its own data (generator seed =
training seed). Test clicks are followed for 7 days, so every window's test rows are the same
clicks in the same order (checked, with their labels, against each run's saved predictions).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from rankmixer import experiment
from rankmixer.config import load_config
from rankmixer.conversion.delays import DEFAULT_PRIOR_CONVERSIONS, fit_delay_rates, rates_for
from rankmixer.conversion.interpolate import interpolate
from rankmixer.core.files import check_replaceable, write_json, write_marker
from rankmixer.core.hardware import machine_info
from rankmixer.core.metrics import auc, calibration, expected_calibration_error, group_calibration_error, logloss
from rankmixer.core.predictions import load_predictions
from rankmixer.core.rundir import TEST_PREDICTIONS
from rankmixer.data.datasets.base import get_preset
from rankmixer.data.datasets.conversions.columns import LABEL
from rankmixer.data.datasets.conversions.log import LOG_COLUMNS

BENCH_KIND = "bench-conversions"
METHODS = ("personalised", "global", "nearest", "oracle", "planted-beta", "bayes")
ECE_BINS = 20


def _window_tag(days: float) -> str:
    return f"w{days:g}"


METRICS = ("logloss", "calibration", "ece", "advertiser_ece", "auc")


def _metrics(y: np.ndarray, p: np.ndarray, advertiser: np.ndarray) -> dict:
    """Test logloss, calibration (mean predicted / mean observed), ECE over probability bins,
    ECE over advertisers (each advertiser's predicted against observed conversions), AUC."""
    return {"logloss": logloss(y, p), "calibration": calibration(y, p),
            "ece": expected_calibration_error(y, p, ECE_BINS),
            "advertiser_ece": group_calibration_error(y, p, advertiser), "auc": auc(y, p)}


def nearest_window(window: float, short: float, long: float) -> float:
    """The fixed window closer to ``window`` (the long one on a tie)."""
    return short if window - short < long - window else long


def _train_window(config: str, overrides: Sequence[str], options: dict, raw: Path, root: Path, seed: int,
                  days: float) -> dict:
    """Train (or reuse) the run of one window; its test predictions and censoring counts."""
    tag = _window_tag(days)
    cfg = load_config(config, [
        *overrides, f"data.preset_options={json.dumps({**options, 'window_days': days})}", f"data.raw={raw}",
        f"data.prepared_dir={root / ('prepared-' + tag)}", f"run_dir={root / ('run-' + tag)}", f"seed={seed}",
        "train.threads=1", "train.progress=false", "train.tensorboard=false",
    ])
    t0 = time.perf_counter()
    experiment.train_to_end(cfg)
    seconds = time.perf_counter() - t0
    run_dir = cfg.resolved_run_dir()
    preds = load_predictions(run_dir / TEST_PREDICTIONS)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    fm = json.loads((cfg.data.prepared_path() / "feature_map.json").read_text())
    return {"probs": preds.probs[:, 0].astype(np.float64), "labels": preds.labels[:, 0],
            "censored": fm["extras"]["censored"], "train_rows": fm["splits"]["train"]["rows"],
            "best_step": metrics.get("best_step"), "steps": metrics.get("steps"), "seconds": round(seconds, 1),
            "run_dir": str(run_dir)}


def beta_recovery(fitted: dict, planted: np.ndarray) -> dict:
    """The fitted rates against the planted ones: per advertiser, and the median / mean absolute
    relative error and the correlation of log rates, of the shrunk and of the plain MLE rates."""
    rows = []
    for name, v in fitted["advertisers"].items():
        true = float(planted[int(name)])
        rows.append({"advertiser": name, "planted": true, "fitted": v["rate_per_day"], "mle": v["rate_mle"],
                     "conversions": v["conversions"], "clicks": v["clicks"]})
    out: dict = {"global_rate": fitted["global"]["rate_per_day"], "advertisers": rows}
    true = np.array([r["planted"] for r in rows])
    for key in ("fitted", "mle"):
        ok = np.array([r[key] is not None for r in rows])
        est = np.array([r[key] for r in rows if r[key] is not None], dtype=np.float64)
        rel = np.abs(est / true[ok] - 1)
        out[key] = {"median_abs_rel_error": float(np.median(rel)), "mean_abs_rel_error": float(rel.mean()),
                    "max_abs_rel_error": float(rel.max()), "advertisers": int(ok.sum()),
                    "log_rate_correlation": float(np.corrcoef(np.log(est), np.log(true[ok]))[0, 1])}
    glob_rel = np.abs(fitted["global"]["rate_per_day"] / true - 1)
    out["global"] = {"median_abs_rel_error": float(np.median(glob_rel))}
    return out


def run_seed(seed: int, work: Path, *, short: float, long: float, windows: Sequence[float], options: dict,
             config: str, overrides: Sequence[str], prior_conversions: float,
             log: Callable[[str], None]) -> dict:
    """Every window's model of one seed, the delay fit and every method's test metrics."""
    options = {**options, "seed": seed}
    root = work / f"seed{seed}"
    raw = root / "raw"
    preset = get_preset("conversions", **options)
    preset.raw_files(raw)  # generated once per seed, shared by every window
    planted = np.array(preset.load_meta(raw)["planted_model"]["delay_rate_per_day"])

    runs = {}
    for days in sorted({short, long, *windows}):
        runs[days] = _train_window(config, overrides, options, raw, root, seed, days)
        log(f"seed {seed} window {days:g} d: {runs[days]['train_rows']:,} training rows "
            f"({runs[days]['censored']['train']['censored']:,} censored), {runs[days]['seconds']} s")

    train_log = pl.read_parquet([raw / f for f in preset.split_files("train")], columns=list(LOG_COLUMNS))
    t0 = time.perf_counter()
    fitted = fit_delay_rates(train_log, prior_conversions)
    fit_seconds = time.perf_counter() - t0

    for days, run in runs.items():  # every run scored the same test clicks, in the log's order
        labels = preset.window_frame(raw, "test", days)[LABEL].to_numpy()
        if len(run["labels"]) != len(labels) or not np.array_equal(run["labels"], labels):
            raise ValueError(f"seed {seed}: the window {days:g} run's test rows or labels differ from the log's "
                             "(censored test rows, or another order)")
    results = {}
    for t_f in windows:
        test = preset.window_frame(raw, "test", t_f)
        y = test[LABEL].to_numpy().astype(np.float64)
        adv = test["advertiser"].to_list()
        adv_ids = np.array(adv, dtype=np.int64)
        p_s, p_l = runs[short]["probs"], runs[long]["probs"]
        preds = {
            "personalised": interpolate(p_s, p_l, rates_for(fitted, adv), short, long, t_f),
            "global": interpolate(p_s, p_l, rates_for(fitted, adv, personalised=False), short, long, t_f),
            "nearest": runs[nearest_window(t_f, short, long)]["probs"],
            "oracle": runs[t_f]["probs"],
            "planted-beta": interpolate(p_s, p_l, planted[adv_ids], short, long, t_f),
            "bayes": test["bayes_p"].to_numpy(),
        }
        results[f"{t_f:g}"] = {"rows": len(y), "label_mean": float(y.mean()),
                               "methods": {m: _metrics(y, p, adv_ids) for m, p in preds.items()}}
    kept = ("train_rows", "censored", "best_step", "steps", "seconds", "run_dir")
    return {
        "seed": seed,
        "windows": results,
        "fixed_windows": {f"{d:g}": {"test": {"logloss": logloss(runs[d]["labels"], runs[d]["probs"])},
                                     **{k: runs[d][k] for k in kept}}
                          for d in runs},
        "beta": beta_recovery(fitted, planted),
        "delay_fit_seconds": round(fit_seconds, 2),
    }


def summarise(seeds: list[dict], windows: Sequence[float]) -> dict:
    """Per window and method: mean and sd over seeds of every metric; beta recovery likewise."""
    def mean_sd(values: list[float]) -> dict:
        a = np.array(values, dtype=np.float64)
        return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else None}

    table = {}
    for t_f in windows:
        key = f"{t_f:g}"
        table[key] = {m: {k: mean_sd([s["windows"][key]["methods"][m][k] for s in seeds])
                          for k in METRICS} for m in METHODS}
        # Paired by seed: the seeds' data differ, so their spread hides what a method changes.
        for m in METHODS:
            table[key][m]["logloss_minus_oracle"] = mean_sd(
                [s["windows"][key]["methods"][m]["logloss"] - s["windows"][key]["methods"]["oracle"]["logloss"]
                 for s in seeds])
    beta = {k: {stat: mean_sd([s["beta"][k][stat] for s in seeds])
                for stat in ("median_abs_rel_error", "mean_abs_rel_error", "log_rate_correlation")}
            for k in ("fitted", "mle")}
    beta["global"] = {"median_abs_rel_error": mean_sd([s["beta"]["global"]["median_abs_rel_error"] for s in seeds])}
    return {"table": table, "beta": beta}


def run_conversions(out: Path, work: Path, seeds: Sequence[int], *, short: float = 1.0, long: float = 7.0,
                    windows: Sequence[float] = (2.0, 3.0, 5.0), rows_train: int = 200_000,
                    config: str = "conversions_dcnv2", overrides: Sequence[str] = (),
                    prior_conversions: float = DEFAULT_PRIOR_CONVERSIONS,
                    log: Callable[[str], None] = print) -> dict:
    """Run every seed (runs and data under ``work``; finished runs are reused) and write the
    report JSON ``out``."""
    if not 0 < short < long:
        raise ValueError(f"the fixed windows must satisfy 0 < short < long, got {short}, {long}")
    bad = [w for w in windows if not short < w < long]
    if bad:
        raise ValueError(f"windows {bad} are not strictly between the fixed windows {short} and {long}")
    check_replaceable(work, BENCH_KIND, overwrite=True)
    work.mkdir(parents=True, exist_ok=True)
    write_marker(work, BENCH_KIND)
    options = {"rows_train": rows_train}
    t0 = time.perf_counter()
    per_seed = [run_seed(s, work, short=short, long=long, windows=windows, options=options, config=config,
                         overrides=overrides, prior_conversions=prior_conversions, log=log) for s in seeds]
    report = {
        "machine": machine_info(),
        "config": config, "overrides": list(overrides), "generator_options": options,
        "short_days": short, "long_days": long, "windows": [float(w) for w in windows],
        "prior_conversions": prior_conversions, "ece_bins": ECE_BINS, "seeds": list(seeds),
        "seconds": round(time.perf_counter() - t0, 1),
        **summarise(per_seed, windows),
        "per_seed": per_seed,
    }
    write_json(out, report, inputs=[work])
    return report


def _cell(stat: dict, fmt: str) -> str:
    sd = f" ± {stat['sd']:{fmt.replace('+', '')}}" if stat.get("sd") is not None else ""
    return f"{stat['mean']:{fmt}}{sd}"


def markdown_table(report: dict) -> str:
    """Per window and method: test logloss, its difference to the oracle's (paired by seed),
    calibration (mean predicted / mean observed), ECE over probability bins and over advertisers,
    AUC; mean ± sd over seeds."""
    lines = [f"| T_f (days) | method | test logloss | minus the oracle's | calibration | "
             f"ECE ({report['ece_bins']} bins) | ECE over advertisers | AUC |", "|---|---|---|---|---|---|---|---|"]
    for key, methods in report["table"].items():
        for m in METHODS:
            s = methods[m]
            delta = "" if m == "oracle" else _cell(s["logloss_minus_oracle"], "+.4f")
            lines.append(f"| {key} | {m} | {_cell(s['logloss'], '.4f')} | {delta} | {_cell(s['calibration'], '.3f')} | "
                         f"{_cell(s['ece'], '.4f')} | {_cell(s['advertiser_ece'], '.4f')} | {_cell(s['auc'], '.4f')} |")
    return "\n".join(lines) + "\n"


def beta_table(report: dict) -> str:
    """How well the fitted delay rates recover the planted ones, mean ± sd over seeds."""
    b = report["beta"]
    lines = ["| rates | median abs. relative error | mean abs. relative error | correlation of log rates |",
             "|---|---|---|---|"]
    for key, what in (("fitted", f"per advertiser, shrunk (k = {report['prior_conversions']:g})"),
                      ("mle", "per advertiser, plain MLE")):
        lines.append(f"| {what} | {_cell(b[key]['median_abs_rel_error'], '.3f')} | "
                     f"{_cell(b[key]['mean_abs_rel_error'], '.3f')} | {_cell(b[key]['log_rate_correlation'], '.3f')} |")
    lines.append(f"| one global rate | {_cell(b['global']['median_abs_rel_error'], '.3f')} | | |")
    return "\n".join(lines) + "\n"


def windows_table(report: dict) -> str:
    """The fixed-window models of the first seed: training rows kept after censoring."""
    first = report["per_seed"][0]
    lines = ["| window (days) | training rows kept | censored (dropped) | test logloss | best step / steps |",
             "|---|---|---|---|---|"]
    for key, w in first["fixed_windows"].items():
        lines.append(f"| {key} | {w['train_rows']:,} | {w['censored']['train']['censored']:,} | "
                     f"{w['test']['logloss']:.4f} | {w['best_step']} / {w['steps']} |")
    return "\n".join(lines) + "\n"


def markdown_tables(report: dict) -> str:
    return "\n".join([markdown_table(report), beta_table(report), windows_table(report)])
