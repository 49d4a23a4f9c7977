"""Every results table in README.md and docs/*.md is generated from a kept JSON in docs/results/:
each marked table equals its rendering, every marker names a JSON that exists, and no table of
numbers sits outside the markers. Then the checks themselves can fail, and the derived numbers
(MFU, MoE FLOPs, ablation deltas) are recomputed here from the raw JSON, not by the renderers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rankmixer.bench.doc_tables import RENDERERS, blocks, check, doc_files, regenerate
from rankmixer.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = doc_files(ROOT)
RESULTS = ROOT / "docs" / "results"


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", DOCS, ids=_name)
def test_every_results_table_is_generated_from_its_json(path):
    problems = check(path.read_text(), path.parent, _name(path))
    assert not problems, "\n".join(problems) + "\n(run `rankmixer bench tables` to regenerate)"


def test_the_docs_hold_marked_tables():
    """A guard against a parser that silently finds nothing to check."""
    found = [(p, b) for p in DOCS for b in blocks(p.read_text())]
    assert len(found) > 30
    assert {b.renderer for _, b in found} >= {"accuracy", "scaling", "speed", "serve", "distributed",
                                              "early-exit-curve", "quickstart"}
    kept = {(p.parent / path).resolve() for p, b in found for path in b.paths}
    assert (RESULTS / "quickstart.json").resolve() in kept and (RESULTS / "distributed.json").resolve() in kept


# ---- the checks can fail ----------------------------------------------------------------------
def _doc(body: str, spec: str = "results/rankmixer_main.json render=accuracy datasets=synthetic") -> str:
    return f"Intro.\n\n<!-- table: {spec} -->\n{body}\n<!-- /table -->\n\nAfter.\n"


def _rendered(spec: str) -> str:
    text = _doc("", spec)
    return regenerate(text, ROOT / "docs")


def test_a_changed_number_is_caught():
    good = _rendered("results/rankmixer_main.json render=accuracy datasets=synthetic")
    assert check(good, ROOT / "docs", "x.md") == []
    assert "0.7283 ± 0.0012" in good
    bad = good.replace("0.7283 ± 0.0012", "0.7293 ± 0.0012", 1)
    (problem,) = check(bad, ROOT / "docs", "x.md")
    assert "x.md:3" in problem and "differs" in problem


def test_a_missing_json_or_renderer_is_caught():
    (problem,) = check(_doc("| a |\n|---|\n| 1.5 |", "results/nope.json render=accuracy"), ROOT / "docs", "x.md")
    assert "nope.json" in problem
    (problem,) = check(_doc("", "results/rankmixer_main.json render=nope"), ROOT / "docs", "x.md")
    assert "unknown renderer 'nope'" in problem
    (problem,) = check(_doc("", "results/rankmixer_main.json render=accuracy datasets=typo"), ROOT / "docs", "x.md")
    assert "typo" in problem


def test_an_unclosed_marker_is_caught():
    (problem,) = check("<!-- table: results/rankmixer_main.json render=accuracy -->\n| a |\n", ROOT / "docs", "x.md")
    assert "without its" in problem


def test_a_results_table_outside_the_markers_is_caught():
    numbers = "| model | AUC |\n|---|---|\n| dcnv2 | 0.7122 |\n"
    (problem,) = check("Text.\n\n" + numbers, ROOT / "docs", "x.md")
    assert "x.md:3" in problem and "outside the table markers" in problem
    for body in ("| speed |\n|---|\n| 1.2x |\n", "| n |\n|---|\n| 12,345 |\n", "| share |\n|---|\n| 40% |\n",
                 "| size |\n|---|\n| 524k |\n"):
        assert check(body, ROOT / "docs", "x.md"), body
    # Not results: words, versions, numbers in code spans, tables inside fenced code.
    for body in ("| option | meaning |\n|---|---|\n| `--rows` | training rows |\n",
                 "| extra | notes |\n|---|---|\n| fuxictr | fuxictr 2.3.10 |\n",
                 "| status | detail |\n|---|---|\n| 413 | `65 rows; the limit is 64.5` |\n",
                 "```text\n| a | b |\n|---|---|\n| 0.5 | 1.5 |\n```\n"):
        assert check(body, ROOT / "docs", "x.md") == [], body


def test_regenerate_rewrites_only_the_marked_tables():
    stale = _doc("| old | table |\n|---|---|\n| 1.0 | 2.0 |", "results/distributed.json render=distributed")
    new = regenerate(stale, ROOT / "docs")
    assert new.startswith("Intro.\n\n<!-- table:") and new.endswith("<!-- /table -->\n\nAfter.\n")
    assert "| 2 | torchrec |" in new and "| old |" not in new
    assert regenerate(new, ROOT / "docs") == new and check(new, ROOT / "docs", "x.md") == []


def test_bench_tables_command_checks_and_rewrites(tmp_path):
    (tmp_path / "docs").mkdir()
    shutil.copy(RESULTS / "distributed.json", tmp_path / "docs" / "distributed.json")
    page = tmp_path / "docs" / "page.md"
    page.write_text(_doc("| stale |\n|---|\n| 1.0 |", "distributed.json render=distributed"))
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "tables", "--check", "--root", str(tmp_path)], terminal_width=200)
    assert res.exit_code == 1 and "docs/page.md:3" in res.output
    res = runner.invoke(app, ["bench", "tables", "--root", str(tmp_path)], terminal_width=200)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["bench", "tables", "--check", "--root", str(tmp_path)], terminal_width=200)
    assert res.exit_code == 0 and "| 1 | single process | 2 |" in page.read_text()


def test_every_renderer_is_used_in_the_docs():
    used = {b.renderer for p in DOCS for b in blocks(p.read_text())}
    assert used == set(RENDERERS), set(RENDERERS) - used


# ---- derived numbers, recomputed from the raw JSON ------------------------------------------
def _lines(path: str) -> list[str]:
    return (ROOT / path).read_text().splitlines()


def test_mfu_in_the_speed_tables_is_against_the_one_stated_peak():
    """Every MFU in performance.md's tables is achieved GFLOP/s over the run's stated peak of that
    precision (``peak_gflops``), whatever MFU fields the file carries: so the median round can
    never read above the best."""
    report = json.loads((RESULTS / "speed_100m_k4_fused.json").read_text())
    doc = _lines("docs/performance.md")
    rows = [r for r in report["rows"] + report["dcn"]["rows"] if r["kind"] in ("train", "infer")]
    assert len(rows) > 30
    for r in rows:
        peak = report["peak_gflops"][r["precision"]]
        best, median = r["achieved_gflops_best"] / peak, r["achieved_gflops_median"] / peak
        assert median <= best
        line = next(x for x in doc if x.startswith(f"| {r['name']} |"))
        assert f"| {100 * best:.1f}% / {100 * median:.1f}% |" in line, (r["name"], line)


@pytest.mark.parametrize("result,dataset,want", [
    ("rankmixer_tuned.json", "movielens-latest", "305.83k ± 81.79k"),
    ("rankmixer_tuned.json", "taobao-userbehavior", "577.71k ± 348.92k"),
    ("rankmixer_tuned.json", "synthetic", "185.73k ± 11.79k"),
    ("rankmixer_synthetic_1m_tuned.json", "synthetic-1m", "512.77k ± 44.00k"),
])
def test_moe_flops_are_the_mean_over_seeds(result, dataset, want):
    cells = [c for c in json.loads((RESULTS / result).read_text())["cells"]
             if c["dataset"] == dataset and c["model"] == "rankmixer-moe"]
    flops = np.array([c["flops_per_sample"] for c in cells], dtype=float)
    assert len(flops) == 3 and len(set(flops)) == 3  # routing differs by seed
    assert f"{flops.mean() / 1e3:.2f}k ± {flops.std(ddof=1) / 1e3:.2f}k" == want
    row = next(x for x in _lines("docs/benchmarks.md") if x.startswith(f"| {dataset} | rankmixer-moe |"))
    assert f"| {want} |" in row


def test_ablation_deltas_are_differences_of_the_seed_means():
    cells = json.loads((RESULTS / "rankmixer_ablations_tuned.json").read_text())["cells"]

    def mean_auc(model: str) -> float:
        return float(np.mean([c["test"]["auc"] for c in cells if c["model"] == model]))

    base = mean_auc("rankmixer")
    d = mean_auc("rankmixer-no-token-mixing") - base
    row = next(x for x in _lines("docs/benchmarks.md") if x.startswith("| no token mixing |"))
    assert f"| {d:+.4f} ({100 * d / base:+.2f}%) |" in row
