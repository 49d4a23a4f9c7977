"""What every command shares: the console, the one user-error handler and the metrics table.

A user error (a bad config or option, a missing file, an unknown name, a damaged run directory
or weights file) prints one ``error:`` line and exits with code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from rankmixer.core.weights import WeightsError
from rankmixer.core.yamlio import format_validation_error

__all__ = ["USER_ERRORS", "console", "fail", "human", "metrics_table", "user_errors"]

console = Console()

# ValueError covers YamlError, ConfigError, RunDirError, SchemaError, BadInputError and pydantic's
# ValidationError; WeightsError (a damaged or mismatched weights file) is a RuntimeError.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, WeightsError)


def fail(e: BaseException) -> None:
    """Print ``error: <message>`` and exit with code 2."""
    if isinstance(e, ValidationError):  # one line per bad field, without pydantic's links
        msg = format_validation_error(e, e.title)
    else:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@contextmanager
def user_errors(*extra: type[BaseException]) -> Iterator[None]:
    """Turn :data:`USER_ERRORS` (and ``extra``, e.g. RuntimeError for a failed download) raised
    in the block into :func:`fail`."""
    try:
        yield
    except (*USER_ERRORS, *extra) as e:
        fail(e)


def metrics_table(title: str, rows: dict[str, dict], keys=("auc", "gauc", "logloss", "ne", "calibration")) -> Table:
    """One row per split, one column per metric present in any split (NaN and absent: ``-``)."""
    table = Table(title=title)
    table.add_column("split")
    present = [k for k in keys if any(k in r for r in rows.values())]
    for k in present:
        table.add_column(k, justify="right")
    for name, r in rows.items():
        table.add_row(name, *(f"{r[k]:.4f}" if k in r and r[k] == r[k] else "-" for k in present))
    return table


def human(n: float) -> str:
    """``1234567`` -> ``1.23M`` (T, G, M, k)."""
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))
