"""``rankmixer tune-system``: measure, predict and search training-speed settings (CubicML)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from rankmixer.cli.common import console, user_errors

__all__ = ["fit", "measure", "search", "system_app"]

system_app = typer.Typer(no_args_is_help=True, help="Training-speed co-design (CubicML): measure settings, "
                         "fit a predictor, search untried settings.")

_HISTORY = typer.Option(None, help="History file (Parquet; default ~/.cache/rankmixer/system/history.parquet "
                        "or $RANKMIXER_SYSTEM_HISTORY).")
_SPACE = typer.Option("cpu", help="Space: a packaged name under configs/system or a YAML file.")


def _history(path: Optional[Path]) -> Path:
    from rankmixer.system.auto import default_history_path

    return path or default_history_path()


def _options(memory_limit_mb: Optional[float], timeout: float, min_seconds: float):
    from rankmixer.system.measure import MeasureOptions

    return MeasureOptions(memory_limit_mb=memory_limit_mb, timeout_s=timeout, min_seconds=min_seconds)


def measure(
    n: int = typer.Option(20, "--n", min=1, help="Random settings to measure (distinct; those measured before on "
                          "this machine are skipped)."),
    space: str = _SPACE,
    history: Optional[Path] = _HISTORY,
    seed: int = typer.Option(0, help="Seed of the random settings."),
    fix: List[str] = typer.Option([], help="knob=value pinned in every setting (repeatable)."),
    memory_limit_mb: Optional[float] = typer.Option(None, help="Kill a run whose resident memory passes this."),
    timeout: float = typer.Option(300, help="Seconds before a run is killed and recorded as failed."),
    min_seconds: float = typer.Option(1.5, help="Timed seconds per run (after the warm-up steps)."),
) -> None:
    """Measure random settings (training samples/s, peak memory) and add them to the history."""
    from rankmixer.core.hardware import hardware_fingerprint
    from rankmixer.system.history import append_records, read_history
    from rankmixer.system.measure import measure_many
    from rankmixer.system.space import load_system_space, setting_key

    path = _history(history)
    with user_errors():
        sp = load_system_space(space)
        here = {r["key"] for r in read_history(path) if r["fingerprint"] == hardware_fingerprint()}
        todo = [s for s in sp.draw(n, seed, sp.parse_fixed(fix)) if setting_key(s) not in here]
        console.print(f"measuring {len(todo)} setting(s) into {path}")
        measure_many(sp, todo, _options(memory_limit_mb, timeout, min_seconds), origin="random",
                     on_record=lambda r: append_records(path, [r]), log=console.print)


def fit(
    space: str = _SPACE,
    history: Optional[Path] = _HISTORY,
    folds: int = typer.Option(5, min=2, help="Cross-validation folds."),
    seed: int = typer.Option(0),
) -> None:
    """Fit the predictor on the history and report its rank correlation on held-out settings."""
    from rankmixer.system.history import read_history
    from rankmixer.system.predictor import cross_validated_spearman, usable
    from rankmixer.system.space import load_system_space

    path = _history(history)
    with user_errors():
        sp = load_system_space(space)
        records = read_history(path)
        q = cross_validated_spearman(sp, records, folds, seed)
    failed = len([r for r in records if r["kind"] == "train"]) - len(usable(records))
    console.print(f"{path}: {len(usable(records))} successful measurements ({failed} failed, left out)")
    console.print(f"held-out Spearman: speed {q['spearman_speed']:.3f} (folds {q['spearman_speed_fold_mean']:.3f} "
                  f"+- {q['spearman_speed_fold_sd']:.3f}), peak memory {q['spearman_memory']:.3f}")


def search(
    space: str = _SPACE,
    history: Optional[Path] = _HISTORY,
    fix: List[str] = typer.Option([], help="knob=value pinned (repeatable); model_size is required."),
    budget: int = typer.Option(5, min=1, help="Real runs the search may spend."),
    rounds: int = typer.Option(1, min=1, help="Predict-measure-refit rounds the budget is split into."),
    memory_limit_mb: Optional[float] = typer.Option(None, help="Leave out settings predicted to need more, and kill "
                                                    "runs that pass it."),
    timeout: float = typer.Option(300, help="Seconds before a run is killed and recorded as failed."),
    min_seconds: float = typer.Option(1.5, help="Timed seconds per run."),
    seed: int = typer.Option(0),
) -> None:
    """Rank the untried settings by the predictor and verify the top ones by real runs; print the
    best measured setting and its `rankmixer train` overrides."""
    from rankmixer.system.history import append_records, read_history
    from rankmixer.system.measure import allocator_env
    from rankmixer.system.searcher import search as run_search
    from rankmixer.system.space import load_system_space, setting_key

    path = _history(history)
    with user_errors():
        sp = load_system_space(space)
        fixed = sp.parse_fixed(fix)
        if "model_size" not in fixed:
            raise ValueError(f"--fix model_size=NAME is required (the model to speed up; one of {list(sp.choices['model_size'])})")
        result = run_search(sp, read_history(path), fixed, budget, rounds, memory_limit_mb,
                            _options(memory_limit_mb, timeout, min_seconds), seed,
                            on_record=lambda r: append_records(path, [r]), log=console.print)
    table = Table(title=f"top predicted of {result.candidates} settings ({result.excluded_by_memory} over the memory limit)")
    for c in ("setting", "predicted samples/s", "+- (log)", "predicted MB", "measured samples/s"):
        table.add_column(c)
    measured = {m["key"]: m for m in result.measured}
    for c in result.ranked[:budget]:
        m = measured.get(setting_key(c.setting))
        got = "-" if m is None else (f"{m['samples_per_s']:.0f}" if m["status"] == "ok" else f"failed: {m['reason']}")
        table.add_row(setting_key(c.setting), f"{c.predicted_samples_per_s:.0f}", f"{c.log_sps_std:.2f}",
                      f"{c.predicted_peak_mb:.0f}", got)
    console.print(table)
    if result.best is None:
        console.print("every verified setting failed")
        raise typer.Exit(1)
    console.print(f"best measured: {result.best['key']}: {result.best['samples_per_s']:.0f} samples/s, "
                  f"{result.best['peak_rss_mb']:.0f} MB")
    best = result.best["setting"]
    console.print("  overrides: " + " ".join(sp.overrides(best)), highlight=False, soft_wrap=True)
    env, _ = allocator_env(best["allocator"])
    if env or best["compile"] != "none":
        console.print(f"  and: allocator {best['allocator']} ({' '.join(f'{k}={v}' for k, v in env.items()) or 'default'}), "
                      f"compile {best['compile']}", highlight=False, soft_wrap=True)


system_app.command("measure")(measure)
system_app.command("fit")(fit)
system_app.command("search")(search)
