"""docs/performance.md's speed tables are the kept JSON's, as ``bench speed`` prints them: the
table in the doc is regenerated from docs/results/ and compared line by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankmixer.bench.fuxictr_dcnv2 import format_dcn_table
from rankmixer.bench.speed_table import format_table

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "performance.md"
RESULT = ROOT / "docs" / "results" / "speed_100m_k4_fused.json"


def _table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| variant")]


@pytest.mark.parametrize("part", ["rankmixer", "dcn"])
def test_speed_tables_regenerate_from_the_kept_json(part):
    report = json.loads(RESULT.read_text())
    if part == "rankmixer":  # the main table alone (no profile, DCNv2 or MoE sections)
        rows = _table_rows(format_table({k: v for k, v in report.items() if k not in ("profile", "dcn", "moe")}))
    else:
        rows = _table_rows(format_dcn_table(report["dcn"]))
    doc = DOC.read_text().splitlines()
    missing = [r for r in rows if r not in doc]
    assert rows and not missing, "\n".join(missing)


def test_mfu_in_the_tables_is_against_the_stated_peak():
    """Every MFU the doc's tables show is achieved / the run's one stated peak of that precision
    (recomputed here from the JSON's achieved GFLOP/s, whatever MFU fields the file carries)."""
    report = json.loads(RESULT.read_text())
    doc = DOC.read_text()
    for r in report["rows"] + report["dcn"]["rows"]:
        if "achieved_gflops_best" not in r or r["kind"] == "peak" or "peak_gflops" not in r:
            continue
        peak = report["peak_gflops"][r["precision"]] if r in report["rows"] else r["peak_gflops"]
        want = f"{r['achieved_gflops_best'] / peak:.1%} / {r['achieved_gflops_median'] / peak:.1%}"
        line = next(line for line in doc.splitlines() if line.startswith(f"| {r['name']} |"))
        assert want in line, (r["name"], want, line)
