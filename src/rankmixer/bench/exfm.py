"""ExFM on the drifting synthetic stream: students alone, with plain distillation, with the
auxiliary head and with the student adapter, under a teacher that is 0 or more days stale.

A study (``configs/bench/exfm.yaml``) names the teacher experiment (trained day by day on every
vertical, keeping day snapshots), the student experiment (an ``exfm`` model), the field whose
hash cuts the traffic into verticals, the staleness values and the student variants. Per seed:

1. the teacher is trained by ``train.streaming`` (``keep_day_weights``) on all the rows;
2. the inference job (:func:`rankmixer.distill.teacher_log.log_teacher`) logs, for every row of
   every split, the prediction of the teacher snapshot that served it: day ``d - 1 - k`` for
   staleness k;
3. each vertical's rows (``fnv1a64(field) % count``, the same for every seed) are joined to each
   log by request id (:func:`rankmixer.distill.augment.augment`), with a schema declaring the
   teacher column;
4. each student variant trains day by day on its vertical (``alone`` once, the distilling
   variants once per staleness), its progressive validation recording NE and AUC per day.

Reported: per variant and staleness, the mean over days after the first (the first is scored by
an untrained student) of progressive NE and AUC, first averaged over verticals within a seed,
then mean and standard deviation over seeds; NE and AUC per day; and paired differences between
variants over the (seed, vertical) pairs with a t interval. Every number comes from the runs'
``metrics.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats

from rankmixer import experiment
from rankmixer.bench.accuracy import read_yaml_keys
from rankmixer.config import ConfigError, config_path, load_config
from rankmixer.core.files import check_replaceable, write_json, write_marker, write_text_atomic
from rankmixer.core.hardware import machine_info
from rankmixer.bench.runs import train_unfinished
from rankmixer.data.encode import fnv1a64
from rankmixer.data.schema import RawColumn, dump_schema
from rankmixer.distill.augment import augment, teacher_columns
from rankmixer.distill.teacher_log import log_teacher

BENCH_KIND = "bench-exfm"
SPLITS = ("train", "valid", "test")
METRICS = ("ne", "auc")
# Paired comparisons reported: (A, B) means A minus B.
# Pairs whose variants a study does not have are left out.
COMPARISONS = [("serving", "alone"), ("auxiliary", "alone"), ("auxiliary", "serving"),
               ("serving+adapter", "serving"), ("auxiliary+adapter", "auxiliary"), ("auxiliary+adapter", "alone")]


def load_study(path: Path | str = "exfm") -> dict:
    path = config_path(path, kind="bench", what="exfm study")
    study = read_yaml_keys(path, "exfm study", ("teacher", "student", "vertical", "staleness", "variants",
                                                "overrides", "description"))
    for key in ("teacher", "student", "vertical", "staleness", "variants"):
        if key not in study:
            raise ConfigError(f"{path}: the exfm study needs {key!r}")
    if set(study["vertical"]) != {"field", "count"}:
        raise ConfigError(f"{path}: vertical needs exactly field and count, got {sorted(study['vertical'])}")
    if "alone" not in study["variants"]:
        raise ConfigError(f"{path}: variants need 'alone' (the student without a teacher), the baseline")
    return {"overrides": [], **study}


def vertical_ids(values: pl.Series, count: int) -> np.ndarray:
    """The vertical of each row: FNV-1a of the field's value (as a string) modulo ``count``."""
    return (fnv1a64(values.cast(pl.String).to_arrow()) % np.uint64(count)).astype(np.int64)


def split_verticals(raw: dict[str, list[Path]], field: str, count: int, out_dir: Path) -> dict[int, dict[str, Path]]:
    """Each vertical's rows of each split, one Parquet file each (written once)."""
    files = {v: {s: out_dir / f"v{v}" / f"{s}.parquet" for s in SPLITS} for v in range(count)}
    if all(p.is_file() for per in files.values() for p in per.values()):
        return files
    for split in SPLITS:
        frame = pl.read_parquet(raw[split])
        ids = vertical_ids(frame[field], count)
        for v in range(count):
            files[v][split].parent.mkdir(parents=True, exist_ok=True)
            frame.filter(pl.Series(ids == v)).write_parquet(files[v][split])
    return files


def _student_data(files: dict[str, Path], schema_path: Path, prepared: Path) -> list[str]:
    """The overrides that make a student read one vertical's augmented rows."""
    splits = {s: [str(files[s])] for s in SPLITS}
    return ["data.dataset=null", "data.preset_options={}", "data.raw=null", f"data.schema_file={schema_path}",
            f"data.raw_splits={json.dumps(splits)}", f"data.prepared_dir={prepared}"]


def _write_student_schema(teacher_cfg, path: Path) -> None:
    """The teacher data's schema plus the teacher columns the augmentation adds."""
    src = experiment.data_source(teacher_cfg.data)
    schema = src.schema
    cols = teacher_columns([lab.name for lab in schema.labels])
    source = schema.source.model_copy(update={"columns": [*schema.source.columns, *(
        RawColumn(name=c, type="float") for c in cols.values())]})
    dump_schema(schema.model_copy(update={"source": source, "teacher_columns": cols, "name": f"{schema.name}-exfm"}),
                path)


def _progressive(cfg) -> dict:
    m = json.loads((cfg.resolved_run_dir() / "metrics.json").read_text())
    stream = m["streaming"]
    return {"mean": {k: stream["mean_after_first"][k] for k in METRICS},
            "days": [{"day": d["day"], **{k: d[k] for k in METRICS}} for d in stream["days"]],
            "test": {k: m["test"][k] for k in METRICS}}


def run_exfm(out_dir: Path, seeds: list[int], *, study: Path | str = "exfm", processes: int = 1, name: str = "exfm",
             overrides: list[str] | None = None, verticals: int | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Run (or read) every step of the study; write ``<name>.json`` and ``<name>.md`` into
    ``out_dir`` (runs, logs and data under it). ``verticals``: the number of verticals instead of
    the study's (the runs of one ``out_dir`` belong to one count)."""
    plan = load_study(study)
    if verticals is not None:
        if verticals < 2:
            raise ConfigError(f"--verticals must be at least 2, got {verticals}")
        plan["vertical"] = {**plan["vertical"], "count": verticals}
    check_replaceable(out_dir, BENCH_KIND, overwrite=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, BENCH_KIND)
    # The runs and data in out_dir are named by index only: one plan per folder.
    saved = out_dir / "plan.json"
    if saved.is_file():
        before = json.loads(saved.read_text())
        changed = [k for k in ("teacher", "student", "vertical", "staleness", "variants") if before.get(k) != plan[k]]
        if changed:
            raise ConfigError(f"{out_dir} holds runs of another plan (it differs in {', '.join(changed)}); "
                              "give a new --out")
    else:
        write_text_atomic(saved, json.dumps(plan, indent=1))
    extra = [*plan["overrides"], *(overrides or []), "train.progress=false"]
    ks = [int(k) for k in plan["staleness"]]
    field, count = plan["vertical"]["field"], int(plan["vertical"]["count"])
    t0 = time.time()

    # 1. Teachers.
    teachers = {s: load_config(plan["teacher"], [*extra, f"seed={s}", f"run_dir={out_dir / 'runs' / f'teacher-s{s}'}"])
                for s in seeds}
    if not all(t.train.streaming and t.train.streaming.keep_day_weights for t in teachers.values()):
        raise ConfigError(f"the teacher experiment {plan['teacher']} must stream with keep_day_weights")
    train_unfinished([(f"teacher seed {s}", cfg) for s, cfg in teachers.items()], processes, log)

    # 2-3. Logs, verticals, augmented rows.
    base = teachers[seeds[0]]
    raw = experiment.data_source(base.data).raw.by_split
    verticals = split_verticals(raw, field, count, out_dir / "data" / "verticals")
    schema_path = out_dir / "data" / "student_schema.yaml"
    _write_student_schema(base, schema_path)
    logs = {}
    for s in seeds:
        for k in ks:
            path = out_dir / "data" / "logs" / f"teacher-s{s}-k{k}.parquet"
            if not path.is_file():
                rep = log_teacher(teachers[s].resolved_run_dir(), [p for sp in SPLITS for p in raw[sp]], path,
                                  staleness=k, log=lambda *_: None)
                log(f"teacher seed {s}, staleness {k}: {rep['logged']:,} of {rep['rows']:,} rows logged")
            logs[s, k] = path
    student_files = {}
    for (s, k), path in logs.items():
        for v, per in verticals.items():
            folder = out_dir / "data" / "augmented" / f"s{s}-k{k}-v{v}"
            files = {sp: folder / f"{sp}.parquet" for sp in SPLITS}
            for sp in SPLITS:
                if not files[sp].is_file():
                    augment([per[sp]], path, files[sp])
            student_files[s, k, v] = files

    # 4. Students.
    runs = []
    for variant, model in plan["variants"].items():
        for k in (ks if model.get("distill", "auxiliary") != "none" else [None]):
            for s in seeds:
                for v in range(count):
                    files = student_files[s, ks[0] if k is None else k, v]
                    tag = f"{variant}-k{'-' if k is None else k}-v{v}-s{s}"
                    data = _student_data(files, schema_path,
                                         out_dir / "data" / "prepared" / f"s{s}-k{ks[0] if k is None else k}-v{v}")
                    model_over = [f"model.{key}={json.dumps(val)}" for key, val in model.items()]
                    cfg = load_config(plan["student"], [*extra, *data, *model_over, f"seed={s}",
                                                        f"run_dir={out_dir / 'runs' / tag}"])
                    runs.append({"variant": variant, "staleness": k, "vertical": v, "seed": s, "cfg": cfg})
    train_unfinished([(f"{r['variant']} k={r['staleness']} v{r['vertical']} seed {r['seed']}", r["cfg"]) for r in runs],
               processes, log)
    for r in runs:
        r.update(_progressive(r.pop("cfg")))
    teacher_rows = [{"seed": s, **_progressive(cfg)} for s, cfg in teachers.items()]

    report = {
        "machine": machine_info(), "study": str(study), "plan": plan, "seeds": seeds, "overrides": overrides or [],
        "seconds": round(time.time() - t0, 1), "teacher": teacher_rows, "runs": runs,
        "summary": summarise(runs, plan["variants"], ks), "differences": differences(runs, ks),
    }
    write_json(out_dir / f"{name}.json", report)
    write_text_atomic(out_dir / f"{name}.md", markdown(report))
    return report


def _cells(runs: list[dict], variant: str, k: int | None) -> list[dict]:
    return [r for r in runs if r["variant"] == variant and r["staleness"] == k]


def _seed_means(cells: list[dict], metric: str) -> dict[int, float]:
    """Per seed, the mean over verticals of the progressive mean (days after the first)."""
    by_seed: dict[int, list[float]] = {}
    for r in cells:
        by_seed.setdefault(r["seed"], []).append(r["mean"][metric])
    return {s: float(np.mean(v)) for s, v in sorted(by_seed.items())}


def summarise(runs: list[dict], variants: dict, ks: list[int]) -> list[dict]:
    """One row per (variant, staleness): mean and sd over seeds, and the mean per day."""
    rows = []
    for variant, model in variants.items():
        for k in (ks if model.get("distill", "auxiliary") != "none" else [None]):
            cells = _cells(runs, variant, k)
            row = {"variant": variant, "staleness": k, "runs": len(cells)}
            for m in METRICS:
                vals = list(_seed_means(cells, m).values())
                row[m] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None}
            days = sorted({d["day"] for r in cells for d in r["days"]})
            row["days"] = [{"day": d, **{m: float(np.mean([x[m] for r in cells for x in r["days"] if x["day"] == d]))
                                         for m in METRICS}} for d in days]
            rows.append(row)
    return rows


def differences(runs: list[dict], ks: list[int]) -> list[dict]:
    """A minus B per staleness, paired over (seed, vertical), with a 95% t interval."""
    out = []
    for a, b in COMPARISONS:
        for k in ks:
            ka = None if not any(r["variant"] == a and r["staleness"] is not None for r in runs) else k
            kb = None if not any(r["variant"] == b and r["staleness"] is not None for r in runs) else k
            A = {(r["seed"], r["vertical"]): r for r in _cells(runs, a, ka)}
            B = {(r["seed"], r["vertical"]): r for r in _cells(runs, b, kb)}
            pairs = sorted(set(A) & set(B))
            if len(pairs) < 2:
                continue
            row = {"a": a, "b": b, "staleness": k, "pairs": len(pairs)}
            for m in METRICS:
                d = np.array([A[p]["mean"][m] - B[p]["mean"][m] for p in pairs])
                half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
                row[m] = {"mean": float(d.mean()), "low": float(d.mean() - half), "high": float(d.mean() + half)}
            out.append(row)
    return out


def _pm(cell: dict, digits: int = 4) -> str:
    sd = "" if cell["sd"] is None else f" ± {cell['sd']:.{digits}f}"
    return f"{cell['mean']:.{digits}f}{sd}"


def summary_table(report: dict) -> str:
    """Progressive NE and AUC (mean over the days after the first), mean ± sd over seeds."""
    lines = ["| student | teacher staleness (days) | progressive NE | progressive AUC | runs |", "|---|---|---|---|---|"]
    for row in report["summary"]:
        k = "-" if row["staleness"] is None else str(row["staleness"])
        lines.append(f"| {row['variant']} | {k} | {_pm(row['ne'])} | {_pm(row['auc'])} | {row['runs']} |")
    t = report["teacher"]
    ne = [r["mean"]["ne"] for r in t]
    auc = [r["mean"]["auc"] for r in t]
    sd = lambda v: f" ± {np.std(v, ddof=1):.4f}" if len(v) > 1 else ""  # noqa: E731
    lines.append(f"| teacher (all verticals) | - | {np.mean(ne):.4f}{sd(ne)} | {np.mean(auc):.4f}{sd(auc)} | {len(t)} |")
    return "\n".join(lines) + "\n"


def differences_table(report: dict) -> str:
    """Paired differences A - B (NE: lower is better; AUC: higher is better), 95% t interval."""
    lines = ["| A - B | staleness | NE difference [95% CI] | AUC difference [95% CI] | pairs |", "|---|---|---|---|---|"]
    for d in report["differences"]:
        cells = [f"{d[m]['mean']:+.4f} [{d[m]['low']:+.4f}, {d[m]['high']:+.4f}]" for m in METRICS]
        lines.append(f"| {d['a']} - {d['b']} | {d['staleness']} | {cells[0]} | {cells[1]} | {d['pairs']} |")
    return "\n".join(lines) + "\n"


def days_table(report: dict, metric: str = "ne") -> str:
    """Progressive NE (or AUC) per day, the mean over seeds and verticals, of every student row."""
    rows = report["summary"]
    days = sorted({d["day"] for r in rows for d in r["days"]})
    head = "| student | staleness | " + " | ".join(f"day {d}" for d in days) + " |"
    lines = [head, "|---|---|" + "---|" * len(days)]
    for r in rows:
        by_day = {d["day"]: d[metric] for d in r["days"]}
        k = "-" if r["staleness"] is None else str(r["staleness"])
        lines.append(f"| {r['variant']} | {k} | " + " | ".join(f"{by_day[d]:.4f}" if d in by_day else "-" for d in days) + " |")
    return "\n".join(lines) + "\n"


def markdown(report: dict) -> str:
    return summary_table(report) + "\n" + differences_table(report) + "\n" + days_table(report)
