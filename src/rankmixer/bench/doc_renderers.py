"""Doc tables that no benchmark prints as such: views derived from kept JSON (ablation deltas,
the speed targets, runs of one config with different overrides, the early-exit curve and its
per-seed calibration, the quick start) and the named RankMixer variants counted from the code.
:mod:`rankmixer.bench.doc_tables` maps renderer names to them.

Each says in its docstring how it derives what it shows. Numbers quoted from the RankMixer
paper (arXiv 2507.15551) are constants here, labelled as the paper's.
"""

from __future__ import annotations

import re
from pathlib import Path

from rankmixer.bench.accuracy import format_si

# The paper's ablations (RankMixer-100M on Douyin: change of AUC), by our model label.
PAPER_ABLATIONS: dict[str, tuple[str, str]] = {
    "rankmixer-no-token-mixing": ("no token mixing", "-0.50%"),
    "rankmixer-shared-ffn": ("shared FFN instead of per-token", "-0.31%"),
    "rankmixer-no-layernorm": ("no LayerNorm", "-0.05%"),
    "rankmixer-self-attention": ("self-attention instead of token mixing", "-0.03% at +71.8% FLOPs"),
    "rankmixer-no-residual": ("no residual connections", "-0.07%"),
}
# The paper's parameter counts of its two sizes.
PAPER_SIZES = {"rankmixer-100m": "107M", "rankmixer-1b": "1.1B"}


def ablation_deltas(rows: list[dict], base: str | None = None) -> str:
    """Each ablation's mean test AUC minus the base model's (label ``base``, default the row whose
    model is ``rankmixer``), absolute and relative to the base's AUC, with its FLOPs change where
    the FLOPs differ, beside the paper's figure."""
    by_model = {r["model"]: r for r in rows}
    ref = next((r for r in rows if r["label"] == base), None) if base else by_model.get("rankmixer")
    if ref is None:
        raise ValueError(f"no base row {base or 'rankmixer'!r} in the JSON")
    lines = ["| ablation | test AUC change here (relative) | sd of the ablation over seeds | paper |",
             "|---|---|---|---|"]
    for model, (what, paper) in PAPER_ABLATIONS.items():
        r = by_model.get(model)
        if r is None:
            continue
        d = r["auc"] - ref["auc"]
        here = f"{d:+.4f} ({d / ref['auc']:+.2%})"
        if r.get("flops_per_sample") and ref.get("flops_per_sample") and r["flops_per_sample"] != ref["flops_per_sample"]:
            here += f" at {r['flops_per_sample'] / ref['flops_per_sample'] - 1:+.1%} FLOPs"
        lines.append(f"| {what} | {here} | {r['auc_std']:.4f} | {paper} |")
    return "\n".join(lines) + "\n"


def _mfu(row: dict, peak: float) -> tuple[float, float]:
    return row["achieved_gflops_best"] / peak, row["achieved_gflops_median"] / peak


def _met(best: float, median: float, target: float) -> str:
    if min(best, median) >= target:
        return "yes"
    return "best round only" if best >= target else "no"


def speed_targets(rep: dict) -> str:
    """The issue's CPU targets against a ``bench speed`` report: MFU of our RankMixer (achieved
    GFLOP/s of the best call and of the median round over the run's one stated peak of that
    precision), its speed over the public-style loop, our DCNv2's over FuxiCTR's, and sparse MoE
    inference's over dense. "met?" is yes when both the best and the median round reach it."""
    rows = {r["name"]: r for r in rep["rows"]}
    peaks = rep["peak_gflops"]
    tb = rep["setup"]["train_batch"]
    lines = ["| target | measured (best / median round) | met? |", "|---|---|---|"]

    def mfu_line(what: str, name: str, precision: str, target: float) -> None:
        r = rows.get(name)
        if r is not None:
            b, m = _mfu(r, peaks[precision])
            lines.append(f"| {what} >= {target:.0%} of the {precision} peak | {b:.1%} / {m:.1%} | {_met(b, m, target)} |")

    mfu_line("bf16 training", f"ours/train/bf16/b{tb}", "bf16", 0.5)
    for bs in rep["setup"]["batch_sizes"]:
        mfu_line(f"bf16 inference, batch {bs}", f"ours/infer/bf16/b{bs}", "bf16", 0.6)
    mfu_line("fp32 training", f"ours/train/fp32/b{tb}", "fp32", 0.8)
    r = rows.get(f"ours/train/bf16/b{tb}")
    if r is not None and "vs_public_best" in r:
        b, m = r["vs_public_best"], r["vs_public_median"]
        lines.append(f"| RankMixer >= 2x the public-style loop, bf16 training | {b:.2f}x / {m:.2f}x | {_met(b, m, 2)} |")
    dcn = {d["name"]: d for d in rep.get("dcn", {}).get("rows", [])}
    r = dcn.get(f"dcnv2-ours/train/bf16/b{rep.get('dcn', {}).get('setup', {}).get('batch_size')}")
    if r is not None and "vs_fuxictr_best" in r:
        b, m = r["vs_fuxictr_best"], r["vs_fuxictr_median"]
        lines.append(f"| our DCNv2 >= 2x FuxiCTR's, bf16 training | {b:.2f}x / {m:.2f}x | {_met(b, m, 2)} |")
    for r in rep.get("moe", {}).get("rows", []):
        if r["target_ratio"] == 0.25 and r["skew"] == 0:
            b, m = r["speedup"], r["speedup_median_round"]
            lines.append(f"| sparse MoE inference at 1/4 active >= 2x dense (`{r['impl']}`, E={r['E']}) | "
                         f"{b:.2f}x / {m:.2f}x | {_met(b, m, 2)} |")
    return "\n".join(lines) + "\n"


def exit_curve(rep: dict, timed_only: bool = True) -> str:
    """``calibrate-exit``'s curve (``early_exit_curve.json``): the timed points (or all), then
    each exit's AUC alone and the full model's. Latency ratios divide the minimum times."""
    n = len(rep["curve"][0]["exit_share"])
    check = rep.get("check_split") or "check"
    cols = ["t (\\|logit\\|)", "max(p,1-p) >=", *[f"exit {i + 1}" for i in range(n)], f"{rep['split']} AUC",
            f"{rep['split']} AUC loss", "FLOPs/sample", "FLOPs ratio", "ms/batch min (median)",
            "latency ratio (min)", f"{check} AUC loss", f"{check} exit 1"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for k, p in enumerate(rep["curve"]):
        timed = "ms_per_batch" in p
        if timed_only and not timed:
            continue
        t = "inf (full)" if p["threshold"] is None else f"{p['threshold']:.3f}"
        if k == rep["chosen_index"]:
            t += " **chosen**"
        c = p.get("check") or {}
        lines.append("| " + " | ".join([
            t, "-" if p["min_confidence_prob"] is None else f"{p['min_confidence_prob']:.3f}",
            *[f"{s:.1%}" for s in p["exit_share"]], f"{p['auc']:.5f}", f"{p['auc_loss']:+.5f}",
            f"{p['flops_per_sample']:,.0f}", f"{p['flops_ratio']:.3f}",
            f"{p['ms_per_batch_min']:.1f} ({p['ms_per_batch']:.1f})" if timed else "-",
            f"{p['latency_ratio_min']:.3f}" if timed else "-",
            f"{c['auc_loss']:+.5f}" if c else "-", f"{c['exit_share'][0]:.1%}" if c else "-"]) + " |")
    alone = ", ".join(f"exit {i + 1} {a:.5f}" for i, a in enumerate(rep["exit_auc"]))
    lines += ["", f"each exit alone, {rep['split']} AUC: {alone}; full model {rep['split']} AUC {rep['auc_full']:.5f}"
              + (f", {check} AUC {rep['check_auc_full']:.5f}" if rep.get("check_auc_full") is not None else "")
              + f"; rows {rep['rows']:,}" + (f" / {rep['check_rows']:,}" if rep.get("check_rows") else "")
              + f"; batch {rep['batch_size']:,} x {rep['latency_batches']} batches x {rep['repeats']} repeats, "
              f"{rep['threads']} thread(s)" + _load(rep)]
    return "\n".join(lines) + "\n"


def _load(rep: dict) -> str:
    load = (rep.get("machine") or {}).get("loadavg")
    return f"; load average {load[0]:.1f} at the end" if load else ""


def _seed(run_dir: str) -> str:
    m = re.search(r"-s(\d+)$", run_dir.rstrip("/"))
    return m.group(1) if m else "-"


def override_runs(reports: list[dict]) -> str:
    """Accuracy runs of one config, each with its own command-line overrides (one JSON each): per
    run, what it changed, parameters, FLOPs/sample (mean over seeds; torch's counter in eval
    mode), and the means over seeds of valid AUC and logloss and test AUC (± sd)."""
    import numpy as np

    lines = ["| dataset | config | overrides | seeds | params | FLOPs/sample | valid AUC | valid logloss | test AUC |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for rep in reports:
        cells = rep["cells"]
        first = cells[0]
        changed = [f"`{o}`" for o in rep.get("overrides") or [] if not o.startswith("train.threads")]
        valid = np.array([c["valid"]["auc"] for c in cells])
        valid_ll = np.array([c["valid"]["logloss"] for c in cells])
        test = np.array([c["test"]["auc"] for c in cells])
        flops = [c["flops_per_sample"] for c in cells if c.get("flops_per_sample") is not None]
        sd = f" ± {np.std(test, ddof=1):.4f}" if len(test) > 1 else ""
        lines.append(f"| {first['dataset']} | `{Path(first['config']).stem}` | {' '.join(changed) or '(as configured)'} | "
                     f"{len(cells)} | {first['parameters']:,} | {format_si(float(np.mean(flops)) if flops else None)} | "
                     f"{valid.mean():.4f} | {valid_ll.mean():.4f} | {test.mean():.4f}{sd} |")
    return "\n".join(lines) + "\n"


def exit_seeds(reports: list[dict]) -> str:
    """The chosen setting of several ``calibrate-exit`` curves (one per run): each exit's AUC
    alone, the chosen threshold, exit shares, AUC loss and FLOPs ratio on the calibration split,
    and the same thresholds on the check split."""
    lines = ["| run | seed | exit AUCs alone (valid) | chosen t | exit shares (valid) | valid AUC loss | FLOPs ratio "
             "| test AUC loss | test exit shares |",
             "|---|---|---|---|---|---|---|---|---|"]
    for rep in reports:
        p = rep["curve"][rep["chosen_index"]]
        c = p.get("check") or {}
        name = Path(rep["run_dir"]).name
        run = re.sub(r"-s\d+$", "", name)
        lines.append(
            f"| {run} | {_seed(name)} | {', '.join(f'{a:.4f}' for a in rep['exit_auc'])} | "
            + ("inf" if p["threshold"] is None else f"{p['threshold']:.3g}") + " | "
            + ", ".join(f"{s:.0%}" for s in p["exit_share"]) + f" | {p['auc_loss']:+.5f} | {p['flops_ratio']:.3f} | "
            + (f"{c['auc_loss']:+.5f} | " + ", ".join(f"{s:.0%}" for s in c["exit_share"]) if c else "- | -") + " |")
    return "\n".join(lines) + "\n"


def quickstart(rep: dict) -> str:
    """``rankmixer quickstart --json``: the model's AUC and logloss beside the planted model's
    (Bayes-optimal) on valid and test, then the run: rows, epochs, steps, wall time, machine."""
    bayes = rep.get("bayes") or {}
    lines = ["| split | model AUC | Bayes-optimal AUC | model logloss | Bayes-optimal logloss |",
             "|---|---:|---:|---:|---:|"]
    for split in ("valid", "test"):
        m, b = rep[split], bayes.get(split) or {}
        lines.append(f"| {split} | {m['auc']:.4f} | {b.get('auc', float('nan')):.4f} | {m['logloss']:.4f} | "
                     f"{b.get('logloss', float('nan')):.4f} |")
    c, mach = rep["command"], rep["machine"]
    lines += ["", f"{c['model']} on {c['rows']:,} training rows, {c['epochs']} epochs (best step {rep['best_step']} of "
                  f"{rep['steps']}): {rep['wall_s']:.0f} s from the command's start to its metrics (generating and "
                  f"preparing the data included), on {mach['device_name']} with {mach['threads']} threads, load average "
                  f"{rep['loadavg_start'][0]:.1f} at the start and {mach['loadavg'][0]:.1f} at the end."]
    return "\n".join(lines) + "\n"


def variants(names: list[str] | None = None) -> str:
    """The named RankMixer variants: sizes, backbone parameters and forward FLOPs per sample,
    counted analytically (``rankmixer models --describe NAME``; the count is checked there
    against the module built on the meta device), beside the paper's parameter counts."""
    from rankmixer.models import registry
    from rankmixer.models.describe import describe_model

    names = names or [n for n, e in registry.available().items() if e.base == "rankmixer"]
    lines = ["| name | T | D | L | k | backbone parameters | forward FLOPs/sample | paper |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name in names:
        info = describe_model(name, {}, None)
        cfg, params, flops = info["config"], info["params"], info["flops"]
        moe = cfg.get("moe")
        p, f = format_si(params["blocks"]), format_si(flops["blocks"])
        if moe:
            p += f" ({moe['num_experts']} experts)"
            f += f" training, {format_si(flops['blocks_active'])} active at {moe['target_active_ratio']:g}"
        lines.append(f"| `{name}` | {cfg['num_tokens']} | {cfg['hidden_dim']} | {cfg['num_layers']} | "
                     f"{cfg['expansion']:g} | {p} | {f} | {PAPER_SIZES.get(name, '')} |")
    return "\n".join(lines) + "\n"


def mean_sd_rows(rep: dict) -> str:
    """A report's ``rows`` of ``{features, auc_mean, auc_sd}`` (e.g. the impressions headroom,
    ``scripts/impressions_headroom.py``): one line each, mean +- sd over its draws."""
    n = len(rep.get("draws", []))
    lines = [f"| features of the history | test AUC ({n} draws) |", "|---|---|"]
    for r in rep["rows"]:
        lines.append(f"| {r['features']} | {r['auc_mean']:.4f} ± {r['auc_sd']:.4f} |")
    return "\n".join(lines) + "\n"


def drift_days(meta: dict) -> str:
    """A synthetic set's days (its ``synthetic_meta.json``): each component's scale and the
    bias per day, the last day being valid and test's, then the Bayes AUC of train and test."""
    days = meta["planted_model"]["days"]
    last = len(days) - 1
    lines = ["| component | " + " | ".join(f"day {d['day']}" + (" (valid, test)" if d['day'] == last else "")
                                         for d in days) + " |",
             "|---" * (len(days) + 1) + "|"]
    for g in days[0]["scales"]:
        lines.append(f"| {g} | " + " | ".join(f"{d['scales'][g]:.2f}" for d in days) + " |")
    lines.append("| bias | " + " | ".join(f"{d['bias']:.2f}" for d in days) + " |")
    splits = meta["splits"]
    return "\n".join(lines) + (f"\n\nBayes AUC: train (days 0 to {last - 1}) {splits['train']['bayes_auc']:.4f}, "
                               f"test (day {last}) {splits['test']['bayes_auc']:.4f}.\n")
