"""``rankmixer conversion``: Personalized Interpolation of conversion windows (docs/production.md)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rankmixer.cli.common import console, user_errors


def fit_delays(
    logs: List[Path] = typer.Argument(..., help="Conversion log file(s): Parquet/CSV in the log layout, or Criteo "
                                      "conversion-logs text files with --format criteo."),
    out: Path = typer.Option(..., "--out", help="Delay rates JSON to write."),
    fmt: str = typer.Option("log", "--format", help="log (click_ts, conv_ts, observed_until, advertiser) or criteo."),
    advertiser: Optional[str] = typer.Option(None, help="Criteo layout: the categorical column (C1..C9) that "
                                             "identifies the advertiser; default: one advertiser."),
    prior_conversions: float = typer.Option(5.0, min=0.0, help="Shrinkage toward the global rate, in "
                                            "pseudo-conversions per advertiser (0: plain MLE)."),
) -> None:
    """Fit each advertiser's exponential delay rate by censored maximum likelihood (and the
    global rate) on a conversion log; write them as JSON."""
    from rankmixer.conversion.delays import fit_delay_rates, save_rates
    from rankmixer.conversion.files import read_log
    from rankmixer.core.files import check_output

    with user_errors():
        check_output(out, logs, "--out")
        fitted = fit_delay_rates(read_log(logs, fmt, advertiser), prior_conversions)
        save_rates(fitted, out)
    g = fitted["global"]
    console.print(f"global rate {g['rate_per_day']:.4f} per day (mean delay {1 / g['rate_per_day']:.2f} days) over "
                  f"{g['clicks']:,} clicks, {g['conversions']:,} conversions; {len(fitted['advertisers'])} advertisers")
    console.print(f"wrote {out}")


def interpolate(
    short_predictions: Path = typer.Option(..., "--short", help="Predictions of the T_s run (rankmixer predict)."),
    long_predictions: Path = typer.Option(..., "--long", help="Predictions of the T_l run, same clicks and order."),
    clicks: Path = typer.Option(..., help="The clicks (Parquet/CSV) with an 'advertiser' column (and 'window_days' "
                                "unless --window-days is given)."),
    rates: Path = typer.Option(..., help="Delay rates JSON (rankmixer conversion fit-delays)."),
    short_days: float = typer.Option(..., help="T_s of the short run, days."),
    long_days: float = typer.Option(..., help="T_l of the long run, days."),
    window_days: Optional[float] = typer.Option(None, help="One window T_f for every click (days, within [T_s, T_l])."),
    global_rate: bool = typer.Option(False, help="Use the global delay rate for every advertiser."),
    output: Path = typer.Option(..., help="Output Parquet or CSV: advertiser, window_days, alpha, conversion_prob."),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
) -> None:
    """Each click's conversion probability within its window: p_s + alpha (p_l - p_s)."""
    from rankmixer.conversion.delays import load_rates
    from rankmixer.conversion.files import interpolate_files

    with user_errors():
        out = interpolate_files(short_predictions, long_predictions, clicks, load_rates(rates), output,
                                short_days=short_days, long_days=long_days, window_days=window_days,
                                personalised=not global_rate, overwrite=overwrite)
    console.print(f"wrote {output} ({out.height:,} clicks, mean conversion_prob {out['conversion_prob'].mean():.4f})")


def export(
    short: Path = typer.Option(..., help="Exported artifact of the T_s run (rankmixer export)."),
    long: Path = typer.Option(..., help="Exported artifact of the T_l run."),
    rates: Path = typer.Option(..., help="Delay rates JSON (rankmixer conversion fit-delays)."),
    short_days: float = typer.Option(..., help="T_s, days."),
    long_days: float = typer.Option(..., help="T_l, days."),
    out: Path = typer.Option(..., "--out", help="The interpolating artifact directory to write."),
    overwrite: bool = typer.Option(False, help="Replace an interpolating artifact already there."),
) -> None:
    """Bundle two exported window models and the delay rates into one artifact that
    `rankmixer serve` serves with a `window_days` request field."""
    from rankmixer.serve.interpolation import export_interpolation

    with user_errors():
        export_interpolation(short, long, rates, out, short_days=short_days, long_days=long_days, overwrite=overwrite)
    console.print(f"wrote {out}")
