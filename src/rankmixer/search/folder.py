"""What every one-shot search (DistDNAS, SiGeo, Rankitect) does before it writes: refuse an
override of the model (the search sets it), and take its output folder (new, empty or one of its
own kind, never an input)."""

from __future__ import annotations

from pathlib import Path

from rankmixer.config import ConfigError
from rankmixer.core.files import check_output, check_replaceable, write_marker

__all__ = ["SUPERNET_SETS_MODEL", "model_overrides", "open_folder", "refuse_model_overrides"]

SUPERNET_SETS_MODEL = "the search sets the model (the space's supernet): put fixed model keys under the space's model:"


def model_overrides(overrides: list[str]) -> list[str]:
    """The overrides that set the model section or one of its keys."""
    return [o for o in overrides if o.partition("=")[0].strip().split(".")[0] == "model"]


def refuse_model_overrides(overrides: list[str], why: str) -> None:
    if model_overrides(overrides):
        raise ConfigError(f"{why}; the override(s) {model_overrides(overrides)} would change it")


def open_folder(out_dir: Path, kind: str, inputs: list[Path | None]) -> None:
    """``out_dir`` made ready: not an input, new, empty or marked ``kind`` (then continued)."""
    check_output(out_dir, inputs, "search folder")
    check_replaceable(out_dir, kind, overwrite=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, kind)
