"""The results tables of README.md and docs/*.md, generated from the JSON in docs/results/.

A results table sits between two markers that name the JSON behind it and the renderer that
turns that JSON into Markdown, with options (``key=value``, lists comma-separated)::

    <!-- table: results/rankmixer_main.json render=accuracy datasets=synthetic -->
    | dataset | model | ... |
    <!-- /table -->

Paths are relative to the Markdown file; a marker may name several JSON files (their rows are
read in order) or none (``variants``: counted from the code). The renderers reuse the formatters
of the benchmarks that wrote the JSON, so a doc table reads as the command printed it; derived
tables (ablation deltas, targets) compute what they show from the JSON and say how.

:func:`check` lists what is wrong with a Markdown text: a marked table that differs from its
rendering, a marker naming a missing JSON or an unknown renderer, and a table outside the
markers that looks like results (numbers in its body) and is not in :data:`NOT_RESULTS`.
:func:`regenerate` rewrites the marked tables. ``rankmixer bench tables [--check]`` runs both
over README.md and docs/*.md; ``tests/bench/test_doc_tables.py`` keeps them true.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rankmixer.bench import (
    accuracy, conversions, cubicml, distributed, exfm, fuxictr_dcnv2, gts, intervals, moe, pareto, scaling, search_budget,
    sequence_length, serve, sigeo, speed_table,
)
from rankmixer.bench.doc_renderers import (
    ablation_deltas,
    drift_days,
    exit_curve,
    exit_seeds,
    mean_sd_rows,
    override_runs,
    quickstart,
    speed_targets,
    variants,
)
from rankmixer.core.files import write_text_atomic
from rankmixer.search import distdnas, rankitect
from rankmixer.tune.report import trials_markdown

__all__ = ["NOT_RESULTS", "RENDERERS", "Block", "blocks", "check", "doc_files", "regenerate", "render", "update"]

START = re.compile(r"^<!-- table: (.*?) -->\s*$")
END = "<!-- /table -->"
# A body cell with a decimal (not a version like 2.3.10), a percentage, a thousands separator,
# a speed-up (1.2x) or a count with a unit (524k, 1.8M): the signs of a measured number.
NUMBER = re.compile(r"(?<![\d.])\d+\.\d+(?![\d.])|\d%|\d,\d{3}|\b\d+(\.\d+)?x\b|\b\d+(\.\d+)?[kMG]\b")
# Tables with numbers that are not results: (file, header line).
NOT_RESULTS: set[tuple[str, str]] = {
    ("docs/serving.md", "| format | graph | loaded by | notes |"),  # "torch 2.13" in a note
    ("docs/reliability.md", "| fault | before | now | test |"),  # fault cases and their test sizes
}


@dataclass
class Block:
    """One marked table: where it is, what it names, and its current text."""

    line: int  # 1-based line of the start marker
    paths: list[str]
    renderer: str
    options: dict[str, str] = field(default_factory=dict)
    body: str = ""
    start: int = 0  # index of the start marker line
    end: int = 0  # index of the end marker line


def blocks(text: str) -> list[Block]:
    """The marked tables of a Markdown text; ValueError for a marker without its end or without
    ``render=``."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        m = START.match(lines[i])
        if m:
            tokens = m.group(1).split()
            opts = dict(t.split("=", 1) for t in tokens if "=" in t)
            if "render" not in opts:
                raise ValueError(f"line {i + 1}: table marker without render=NAME")
            try:
                j = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == END or START.match(lines[k]))
            except StopIteration:
                raise ValueError(f"line {i + 1}: table marker without its '{END}'") from None
            if lines[j].strip() != END:
                raise ValueError(f"line {i + 1}: table marker without its '{END}' (next marker at line {j + 1})")
            out.append(Block(i + 1, [t for t in tokens if "=" not in t], opts.pop("render"), opts,
                             "\n".join(lines[i + 1:j]), i, j))
            i = j
        i += 1
    return out


def render(block: Block, base: Path) -> str:
    """The table a block stands for, from its JSON (paths relative to ``base``)."""
    if block.renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {block.renderer!r}; expected one of {', '.join(sorted(RENDERERS))}")
    reports = []
    for p in block.paths:
        path = base / p
        if not path.is_file():
            raise FileNotFoundError(f"{p}: no such JSON (the marker must name a kept file)")
        reports.append(json.loads(path.read_text()))
    return RENDERERS[block.renderer](reports, dict(block.options)).rstrip("\n")


def check(text: str, base: Path, name: str) -> list[str]:
    """Problems of one Markdown text (``name``: its path as the allow-list spells it)."""
    try:
        found = blocks(text)
    except ValueError as e:
        return [f"{name}: {e}"]
    problems = []
    for b in found:
        try:
            want = render(b, base)
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"{name}:{b.line}: {type(e).__name__}: {e}")
            continue
        if want != b.body:
            problems.append(f"{name}:{b.line}: the table differs from `{b.renderer}` of {', '.join(b.paths) or '(code)'}"
                            f" (first difference: {_first_difference(b.body, want)})")
    inside = {i for b in found for i in range(b.start, b.end + 1)}
    for line, header in _tables(text, inside):
        if (name, header) not in NOT_RESULTS:
            problems.append(f"{name}:{line}: a table of results outside the table markers: {header[:80]}")
    return problems


def regenerate(text: str, base: Path) -> str:
    """The text with every marked table replaced by its rendering."""
    lines = text.split("\n")
    for b in reversed(blocks(text)):
        lines[b.start + 1:b.end] = render(b, base).split("\n")
    return "\n".join(lines)


def doc_files(root: Path) -> list[Path]:
    """README.md and docs/*.md of a checkout."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def update(paths: list[Path], root: Path, write: bool = True) -> tuple[list[Path], list[str]]:
    """Regenerate (``write``) and check Markdown files; returns (files rewritten, problems).
    Problems name each file relative to ``root`` where it lies under it, as :data:`NOT_RESULTS`
    spells them."""
    rewritten, problems = [], []
    for path in paths:
        text = path.read_text()
        if write:
            try:
                new = regenerate(text, path.parent)
            except (OSError, ValueError, KeyError):
                new = text  # a bad marker or a missing JSON: check() below names it
            if new != text:
                write_text_atomic(path, new)  # only the marked tables differ
                rewritten.append(path)
            text = new
        full, base = path.resolve(), root.resolve()
        name = full.relative_to(base).as_posix() if full.is_relative_to(base) else str(path)
        problems += check(text, path.parent, name)
    return rewritten, problems


def _first_difference(have: str, want: str) -> str:
    a, b = have.split("\n"), want.split("\n")
    for x, y in zip(a, b):
        if x != y:
            return f"doc {x[:70]!r} vs rendered {y[:70]!r}"
    return f"doc has {len(a)} lines, rendered {len(b)}"


def _tables(text: str, skip: set[int]) -> list[tuple[int, str]]:
    """(line, header) of the Markdown tables outside fenced code and ``skip`` whose body holds a
    number that looks measured (:data:`NUMBER`, code spans ignored)."""
    lines = text.split("\n")
    out, fenced, i = [], False, 0
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and i not in skip and lines[i].startswith("|") and i + 1 < len(lines) \
                and re.fullmatch(r"\|[\s:|-]+\|\s*", lines[i + 1]):
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            body = [re.sub(r"`[^`]*`", "", line) for line in lines[i + 2:j]]
            if any(NUMBER.search(line) for line in body):
                out.append((i + 1, lines[i].strip()))
            i = j
            continue
        i += 1
    return out


# ---- renderers: (reports, options) -> Markdown -------------------------------------------------
def _names(opts: dict, key: str) -> list[str] | None:
    return [x for x in opts.pop(key).split(",") if x] if key in opts else None


def _done(opts: dict, renderer: str) -> None:
    if opts:
        raise ValueError(f"renderer {renderer}: unknown option(s) {sorted(opts)}")


def _cells(reports: list[dict]) -> list[dict]:
    """Every (cell, seed) of accuracy reports, in order. Runs from before cells had labels, dense
    parameters and FLOPs are labelled by their config's file name, the counts left unknown."""
    out = []
    for rep in reports:
        for c in rep["cells"]:
            out.append({"dense_parameters": None, "flops_per_sample": None, **c,
                        "label": c.get("label") or Path(c["config"]).stem})
    return out


def _select(rows: list[dict], opts: dict) -> list[dict]:
    """Rows filtered by ``datasets=``, ``models=`` (model column) and ``rows=`` (labels, in that
    order); a name that matches nothing is an error, so a typo cannot hide a row."""
    for key, col in (("datasets", "dataset"), ("models", "model")):
        wanted = _names(opts, key)
        if wanted is not None:
            missing = set(wanted) - {r[col] for r in rows}
            if missing:
                raise ValueError(f"{key}: {sorted(missing)} not in the JSON")
            rows = [r for r in rows if r[col] in wanted]
    wanted = _names(opts, "rows")
    if wanted is not None:
        by_label = {r["label"]: r for r in rows}
        missing = [w for w in wanted if w not in by_label]
        if missing:
            raise ValueError(f"rows: {missing} not in the JSON (labels: {', '.join(by_label)})")
        rows = [by_label[w] for w in wanted]
    return rows


def render_accuracy(reports: list[dict], opts: dict) -> str:
    """``bench accuracy``'s summary table, recomputed from the runs (so FLOPs/sample is the mean
    over seeds). Options: ``datasets``, ``models``, ``rows``, ``columns`` (of
    :data:`rankmixer.bench.accuracy.COLUMNS`), ``bayes=no``."""
    stored = [r for rep in reports for r in rep.get("summary") or []]  # the intervals (no runs here)
    rows = _select(accuracy.summarise(_cells(reports), stored=stored), opts)
    columns = _names(opts, "columns")
    bayes = opts.pop("bayes", "yes") != "no"
    _done(opts, "accuracy")
    return accuracy.markdown_table(rows, columns, bayes)


def render_seeds(reports: list[dict], opts: dict) -> str:
    """One row per run (cell and seed). Options: ``datasets``, ``models``."""
    cells = _select(_cells(reports), opts)
    _done(opts, "accuracy-seeds")
    return accuracy.seed_table(cells)


def render_differences(reports: list[dict], opts: dict) -> str:
    """The paired differences a suite's ``differences`` asked for. Options: ``datasets``."""
    diffs = [d for rep in reports for d in rep.get("differences") or []]
    wanted = _names(opts, "datasets")
    if wanted is not None:
        missing = set(wanted) - {d["dataset"] for d in diffs}
        if missing:
            raise ValueError(f"datasets: {sorted(missing)} not in the JSON's differences")
        diffs = [d for d in diffs if d["dataset"] in wanted]
    _done(opts, "differences")
    return intervals.differences_table(diffs)


def render_ablations(reports: list[dict], opts: dict) -> str:
    rows = accuracy.summarise(_cells(reports))
    base = opts.pop("base", None)
    _done(opts, "ablations")
    return ablation_deltas(rows, base)


def render_scaling(reports: list[dict], opts: dict) -> str:
    """``bench scaling``'s tables: every point, then each family's fitted slopes."""
    _done(opts, "scaling")
    (rep,) = reports
    rows = accuracy.summarise(_cells(reports))
    # The stored slopes carry their intervals (computed from the runs' predictions, not kept).
    return scaling.markdown(rows, rep.get("slopes") or scaling.fit_slopes(rows), rep.get("bayes_auc"),
                            rep.get("differences"))


def render_gts(reports: list[dict], opts: dict) -> str:
    """``bench gts``'s table, optionally only some ``datasets=`` and ``models=``."""
    datasets, models = _names(opts, "datasets"), _names(opts, "models")
    _done(opts, "gts")
    (rep,) = reports
    return gts.markdown_table(rep, datasets, models)


def render_speed(reports: list[dict], opts: dict) -> str:
    """A part of a ``bench speed`` report: ``part=rankmixer`` (default), ``part=profile``
    (``precision=``, ``what=train|infer``, ``top=``), ``part=dcn`` or ``part=moe``."""
    (rep,) = reports
    part = opts.pop("part", "rankmixer")
    if part == "rankmixer":
        out = speed_table.rankmixer_table(rep)
    elif part == "profile":
        prof = rep["profile"][opts.pop("precision", "fp32")][opts.pop("what", "train")]
        out = speed_table.profile_table(prof, int(opts.pop("top", "10")))
    elif part == "dcn":
        out = fuxictr_dcnv2.dcn_table(rep["dcn"])
    elif part == "moe":
        out = moe.moe_table(rep["moe"])
    else:
        raise ValueError(f"renderer speed: part={part!r}; expected rankmixer, profile, dcn or moe")
    _done(opts, "speed")
    return out


def _one(fn: Callable[[dict], str], name: str) -> Callable[[list[dict], dict], str]:
    """A renderer of one JSON without options."""
    def renderer(reports: list[dict], opts: dict) -> str:
        _done(opts, name)
        if len(reports) != 1:
            raise ValueError(f"renderer {name} reads one JSON, got {len(reports)}")
        return fn(reports[0])
    return renderer


def _many(fn: Callable[[list[dict]], str], name: str) -> Callable[[list[dict], dict], str]:
    """A renderer of one or more JSON without options."""
    def renderer(reports: list[dict], opts: dict) -> str:
        _done(opts, name)
        if not reports:
            raise ValueError(f"renderer {name} needs at least one JSON")
        return fn(reports)
    return renderer


def render_curve(reports: list[dict], opts: dict) -> str:
    points = opts.pop("points", "timed")
    _done(opts, "early-exit-curve")
    (rep,) = reports
    return exit_curve(rep, timed_only=points == "timed")


def render_distdnas_weights(reports: list[dict], opts: dict) -> str:
    """The aggregated weights of one search of a kept set (``search=N``: its index, default 0)."""
    (rep,) = reports
    index = int(opts.pop("search", 0))
    _done(opts, "distdnas-weights")
    return distdnas.weights_table(rep["searches"][index])


def render_variants(reports: list[dict], opts: dict) -> str:
    names = _names(opts, "names")
    _done(opts, "variants")
    if reports:
        raise ValueError("renderer variants counts from the code and reads no JSON")
    return variants(names)


RENDERERS: dict[str, Callable[[list[dict], dict], str]] = {
    "accuracy": render_accuracy,
    "accuracy-seeds": render_seeds,
    "differences": render_differences,
    "ablations": render_ablations,
    "scaling": render_scaling,
    "gts": render_gts,
    "speed": render_speed,
    "speed-targets": _one(speed_targets, "speed-targets"),
    "moe": _one(moe.moe_table, "moe"),
    "serve": _one(serve.markdown_table, "serve"),
    "distributed": _one(distributed.markdown_table, "distributed"),
    "early-exit-curve": render_curve,
    "accuracy-overrides": _many(override_runs, "accuracy-overrides"),
    "early-exit-seeds": _many(exit_seeds, "early-exit-seeds"),
    "quickstart": _one(quickstart, "quickstart"),
    "tune-trials": _one(trials_markdown, "tune-trials"),
    "sequence-length": _one(lambda rep: sequence_length.markdown(rep["rows"]), "sequence-length"),
    "mean-sd": _one(mean_sd_rows, "mean-sd"),
    "drift-days": _one(drift_days, "drift-days"),
    "distdnas": _one(lambda rep: distdnas.searches_table(rep["searches"]), "distdnas"),
    "distdnas-weights": render_distdnas_weights,
    "sigeo": _one(sigeo.markdown_table, "sigeo"),
    "sigeo-picks": _one(sigeo.picks_table, "sigeo-picks"),
    "rankitect": _one(lambda rep: rankitect.searches_table(rep["searches"]), "rankitect"),
    "rankitect-probabilities": _one(lambda rep: rankitect.probabilities_table(rep["searches"][0]),
                                    "rankitect-probabilities"),
    "cubicml-history": _one(cubicml.history_table, "cubicml-history"),
    "cubicml-predictor": _one(cubicml.predictor_table, "cubicml-predictor"),
    "cubicml-comparison": _one(cubicml.comparison_table, "cubicml-comparison"),
    "cubicml-auto": _one(cubicml.auto_table, "cubicml-auto"),
    "pareto-points": _one(pareto.points_table, "pareto-points"),
    "pareto-hypervolume": _one(pareto.hypervolume_table, "pareto-hypervolume"),
    "conversions": _one(conversions.markdown_table, "conversions"),
    "conversions-beta": _one(conversions.beta_table, "conversions-beta"),
    "conversions-windows": _one(conversions.windows_table, "conversions-windows"),
    "search-budget": _one(search_budget.summary_table, "search-budget"),
    "search-budget-comparison": _one(search_budget.comparison_table, "search-budget-comparison"),
    "search-budget-predictor": _one(search_budget.predictor_table, "search-budget-predictor"),
    "search-budget-searches": _one(search_budget.searches_table, "search-budget-searches"),
    "search-budget-labels": _one(search_budget.labels_table, "search-budget-labels"),
    "variants": render_variants,
    "exfm": _one(exfm.summary_table, "exfm"),
    "exfm-differences": _one(exfm.differences_table, "exfm-differences"),
    "exfm-days": _one(exfm.days_table, "exfm-days"),
    "exfm-days-auc": _one(lambda rep: exfm.days_table(rep, "auc"), "exfm-days-auc"),
}
