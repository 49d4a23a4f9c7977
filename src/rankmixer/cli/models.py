"""``models``: list the registry, or describe one model (config, parameters, FLOPs/sample)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from rankmixer.cli.common import console, human, user_errors

__all__ = ["models", "print_description"]


def models(
    describe: Optional[str] = typer.Option(
        None, "--describe", help="Print a model's config, parameter count and FLOPs/sample (built on the meta device)."),
    feature_map: Optional[Path] = typer.Option(
        None, "--feature-map", help="With --describe: a prepared feature map (file or directory) to count the "
        "embedding, tokenizer and heads too; without it only the backbone is counted."),
    option: List[str] = typer.Option([], "--option", "-o", help="With --describe: config override key=value (repeatable)."),
) -> None:
    """List registered models and variants, or describe one (--describe NAME)."""
    from rankmixer.models import registry

    if describe is None:
        table = Table(title="models")
        table.add_column("name")
        table.add_column("summary")
        table.add_column("config fields")
        for name, entry in registry.available().items():
            fields = ", ".join(entry.config_cls.model_fields)
            if entry.base is not None:
                fields = f"variant of {entry.base}: " + ", ".join(f"{k}={v}" for k, v in entry.defaults.items())
            table.add_row(name, entry.summary, fields)
        console.print(table)
        return
    from rankmixer.core.yamlio import parse_key_values
    from rankmixer.data.feature_map import FeatureMap
    from rankmixer.models.describe import describe_model

    with user_errors():
        fm = FeatureMap.load(feature_map) if feature_map is not None else None
        info = describe_model(describe, parse_key_values(option, "--option"), fm)
    print_description(info)


def print_description(info: dict) -> None:
    """The tables of :func:`rankmixer.models.describe.describe_model`'s answer: config, then
    parameters and FLOPs/sample per part where the model counts them, then its notes."""
    console.print(f"[bold]{info['name']}[/] ({info['summary']})", highlight=False)
    table = Table(title="config")
    table.add_column("field")
    table.add_column("value")
    for k, v in info["config"].items():
        table.add_row(k, json.dumps(v))
    console.print(table)
    for key, title, unit in (("params", "parameters", "count"), ("flops", "FLOPs per sample", "FLOPs")):
        counts = info.get(key)
        if not counts:
            continue
        table = Table(title=title)
        table.add_column("part")
        table.add_column(unit, justify="right")
        table.add_column("", justify="right")
        for part, n in counts.items():
            table.add_row(part, f"{n:,}", human(n))
        console.print(table)
    for note in info.get("notes") or []:
        console.print(note, highlight=False, soft_wrap=True)
