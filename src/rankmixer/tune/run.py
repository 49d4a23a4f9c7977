"""``rankmixer tune``: trials of one experiment config over a search space, in an Optuna study.

A trial draws the space's values, trains the config plus those overrides once per seed
(:func:`rankmixer.experiment.train`, run directory ``OUT/trials/<number>-s<seed>``) and reads its
value from each run's ``metrics.json``: the validation metric the space's objective names, the
mean over seeds. The study runs until it holds ``trials`` COMPLETE trials counted over every
process working on it, so a second command on the same storage continues the first (the count
is the study's total, not this process's). Two processes that both start the last trials may
finish a few more than asked; none fewer.

A retried trial (see :mod:`rankmixer.tune.study`) keeps the first attempt's run directories and
resumes each from its last checkpoint; a seed that had finished is read, not retrained. A
finished run's checkpoints are only good for resuming it, so they are removed once its
``metrics.json`` is written (``keep_checkpoints`` keeps them): a run directory keeps its config,
logs, metrics, predictions and best weights (enough to export or retrain the trial), and a
100-trial search of 100M-parameter models does not hold 100 sets of optimizer state.

``OUT`` is new, empty or a tuning folder of ours (marker kind ``tune``): it holds the default
SQLite storage ``study.db``, the trials' run directories and ``tune.json``, rewritten after
every trial (:mod:`rankmixer.tune.report`).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rankmixer import experiment
from rankmixer.config import ConfigError, config_path, load_config
from rankmixer.core.files import check_output, check_replaceable, write_json, write_marker
from rankmixer.core.hardware import machine_info, pick_device
from rankmixer.core.rundir import CHECKPOINTS_DIR, CONFIG_FILE, METRICS_FILE
from rankmixer.tune.report import build_report
from rankmixer.tune.space import SearchSpace, load_space
from rankmixer.tune.study import import_optuna, open_storage, open_study, public_url, retry_interrupted, storage_url

__all__ = ["MAX_FAILURES_IN_A_ROW", "REPORT_FILE", "TUNE_KIND", "TuneError", "run_tune"]

TUNE_KIND = "tune"  # the ownership marker of an output folder (core/files.py)
REPORT_FILE = "tune.json"
MAX_FAILURES_IN_A_ROW = 3  # trials whose value is not a number (a diverged run) before giving up


class TuneError(RuntimeError):
    """The study cannot go on (its trials keep failing); the message says why."""


class TrialRunner:
    """The objective Optuna calls: one trial's training runs and its value."""

    def __init__(self, config: Path, overrides: list[str], space: SearchSpace, seeds: list[int], out_dir: Path,
                 log: Callable[[str], None], catch_errors: bool = False, keep_checkpoints: bool = False):
        self.config, self.overrides, self.space, self.seeds = config, overrides, space, seeds
        self.out_dir, self.log, self.catch_errors = out_dir, log, catch_errors
        self.keep_checkpoints = keep_checkpoints
        self.failures_in_a_row = 0
        self.progress = ""  # "3/20": this trial's place in the study's target, for the log

    def __call__(self, trial) -> float:
        # A retry carries its first attempt's user attributes, hence its number and run directories.
        origin = trial.user_attrs.get("origin", trial.number)
        trial.set_user_attr("origin", origin)
        trial.set_user_attr("interrupted", False)
        values = self.space.suggest(trial)
        again = f" (retry of trial {origin})" if origin != trial.number else ""
        self.log(f"trial {trial.number} [{self.progress}]{again}: " + self.space.summary(values))
        scores, runs = [], []
        try:
            for seed in self.seeds:
                run_dir = self.out_dir / "trials" / f"{origin}-s{seed}"
                cfg = load_config(self.config, [*self.overrides, *self.space.overrides(values), f"seed={seed}",
                                                f"run_dir={run_dir}", "train.progress=false"])
                scores.append(self._value(self._train(cfg, run_dir, retry=origin != trial.number), run_dir))
                if not self.keep_checkpoints:
                    # Written by this trial's training, into the run directory this command owns.
                    shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)
                runs.append(str(run_dir.relative_to(self.out_dir)))
                trial.set_user_attr("values", scores)
                trial.set_user_attr("run_dirs", runs)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # the next run queues it again (study.retry_interrupted)
            raise
        except Exception as e:  # noqa: BLE001 - a trial's own failure (out of memory, a diverged run ...)
            if not self.catch_errors:
                raise
            reason = f"{type(e).__name__}: {e}"
            trial.set_user_attr("error", reason[:2000])
            self.log(f"trial {trial.number}: failed ({reason.splitlines()[0][:200]})")
            self.failures_in_a_row += 1
            return math.nan  # Optuna records the trial as failed; the study goes on
        value = float(np.mean(scores))
        obj = self.space.objective
        self.log(f"trial {trial.number}: valid {obj.metric} {value:.5f}"
                 + (f" (seeds {', '.join(f'{s:.5f}' for s in scores)})" if len(scores) > 1 else ""))
        self.failures_in_a_row = 0 if math.isfinite(value) else self.failures_in_a_row + 1
        return value  # not finite: Optuna records the trial as failed

    @staticmethod
    def _train(cfg, run_dir: Path, retry: bool) -> dict:
        """Train one seed, or read it if a first attempt of this trial finished it; a retry
        resumes from the first attempt's checkpoint, anything else starts the directory over."""
        done = run_dir / METRICS_FILE
        if retry and done.is_file():
            return json.loads(done.read_text())
        resume = retry and (run_dir / CONFIG_FILE).is_file()
        experiment.train(cfg, resume=resume, overwrite=not resume, log=lambda *_: None)
        return json.loads(done.read_text())

    def _value(self, metrics: dict, run_dir: Path) -> float:
        valid = metrics.get("valid") or {}
        metric = self.space.objective.metric
        if metric not in valid:
            raise ConfigError(f"objective.metric {metric!r} is not a validation metric of {run_dir / METRICS_FILE}; "
                              f"it has {', '.join(sorted(valid))}")
        return float(valid[metric])


def run_tune(
    config: str | Path,
    space: str | Path | SearchSpace,
    trials: int,
    out_dir: str | Path,
    overrides: list[str] | None = None,
    storage: str | None = None,
    study_name: str = "tune",
    log: Callable[[str], None] = print,
    heartbeat_s: int = 60,
    catch_errors: bool = False,
    max_failures_in_a_row: int = MAX_FAILURES_IN_A_ROW,
    sampler_factory: Callable | None = None,
    keep_checkpoints: bool = False,
) -> dict:
    """Run trials until the study holds ``trials`` complete ones (0: only create or open the
    study); write and return the report.

    ``config`` is an experiment (packaged name or file), ``space`` a space file, packaged space
    or a space object (:class:`SearchSpace`, or one with its methods, such as the architecture
    space of rankmixer.search), ``overrides`` apply to every trial before the space's values;
    ``storage`` an Optuna RDB URL or journal file (default ``sqlite:///OUT/study.db``).
    ``catch_errors``: a trial whose training raises is recorded as failed with the error (its
    ``error`` attribute) and the study goes on, until ``max_failures_in_a_row`` trials in a row
    have failed. ``sampler_factory(trials_before)`` builds the study's sampler instead of the
    space's (rankmixer.tune.study.open_study). ``keep_checkpoints``: keep finished trial runs'
    checkpoints (removed by default; see the module docstring)."""
    optuna = import_optuna()
    if trials < 0:
        raise ValueError(f"trials must be at least 0 (0: open the study and report it), got {trials}")
    out_dir = Path(out_dir)
    space = load_space(space) if isinstance(space, (str, Path)) else space
    config_file = config_path(config)
    overrides = list(overrides or [])
    inputs = [config_file, space.file]
    check_replaceable(out_dir, TUNE_KIND, overwrite=True)  # new, empty or ours: continue it
    check_output(out_dir, inputs, "tuning folder")
    base = load_config(config_file, overrides)
    space.check_against(config_file, overrides)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, TUNE_KIND)

    url = storage_url(out_dir, storage)
    study = open_study(open_storage(url, heartbeat_s), study_name, space,
                       {k: v for k, v in base.model_dump(mode="json").items() if k != "run_dir"}, sampler_factory)
    for number in retry_interrupted(study):
        log(f"trial {number} was interrupted: queued again with the same parameters")
    seeds = list(space.seeds or [base.seed])
    runner = TrialRunner(config_file, overrides, space, seeds, out_dir, log, catch_errors, keep_checkpoints)
    context = {"config": str(config), "overrides": overrides, "space_file": str(space.file) if space.file else None,
               "storage": public_url(url), "study": study_name, "trials_target": trials, "seeds": seeds,
               "base_config": base.model_dump(mode="json"), "machine": machine_info(pick_device(base.train.device))}

    def report() -> dict:
        rep = build_report(study, space, context)
        write_json(out_dir / REPORT_FILE, rep, inputs, "tuning report")
        return rep

    def complete() -> int:  # over every process working on the study
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    if complete() >= trials > 0:
        log(f"study {study_name!r} already holds {complete()} complete trials (asked for {trials}): nothing to run")
    while complete() < trials:
        runner.progress = f"{complete() + 1}/{trials}"
        try:
            study.optimize(runner, n_trials=1)
        finally:
            report()
        if runner.failures_in_a_row >= max_failures_in_a_row:
            raise TuneError(f"{runner.failures_in_a_row} trials in a row gave no finite valid {space.objective.metric} "
                            f"(diverged or failed?); see tune.json and their run directories under {out_dir / 'trials'}")
    return report()
