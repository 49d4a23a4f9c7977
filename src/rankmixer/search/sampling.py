"""Rankitect's sampling-based search (Wen et al. 2023, arXiv 2311.08430): a REINFORCE controller
draws architectures from the search space, every drawn architecture is trained on its own as a
trial, and the trials' validation results move the controller.

It is an Optuna sampler (:class:`SamplingSampler`), so a search with it is an ordinary study:
storage, resume, retries, parallel workers and report are the tuning study's.

* **The policy** is one softmax per named draw of the space (rankmixer.search.policy: the block
  count, each block's type, sizes and inputs; numbers on a grid), all uniform at the start.
* **The reward** of a complete trial is its validation metric (negated where lower is better)
  minus ``flops_penalty * max(0, log2(FLOPs / flops_target))``, FLOPs per sample as its run
  measured them (no penalty without a target): the soft cost constraint the AutoML searcher
  also uses. The penalty's unit (``penalty_unit``) is either the metric's own (``metric``: a
  doubling above the target costs ``flops_penalty`` AUC, far more than the few thousandths
  between architectures) or its spread (``spread``: the batch's metrics are standardized before
  the penalty is taken, so a doubling costs ``flops_penalty`` standard deviations of the metric,
  as the AutoML policy's standardized predicted score does).
* **An update** is one REINFORCE step on a batch of ``batch`` complete trials:
  ``theta += lr * sum_j z_j * grad log pi(a_j)``, with ``z`` the rewards standardized within the
  batch (their mean is the baseline; dividing by their spread makes ``lr`` independent of the
  metric's scale, which for AUC differences is a few thousandths).

The controller is not stored: before each trial the sampler replays every update from the
study's complete trials, in trial-number order, from the uniform start. A resumed search, or
another worker on the same storage, therefore holds the same controller, and a trial's draw is
seeded by (seed, trial number), so a search replays. With several workers a batch may hold
trials another worker drew from a slightly earlier controller (mildly off-policy).

What the paper leaves open, we chose: the batch size, the standardized advantage, the penalty's
form and the redraw of an architecture the study already ran (up to ``redraws`` times, so that
the budget goes to new architectures; this conditions the draw on novelty).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import optuna
import torch

from rankmixer.search.controller import Controller
from rankmixer.search.policy import (PlanSampler, PolicyOptions, PolicyTrial, decisions, over_budget, params_key,
                                     policy_controller, standardized, taken_options)
from rankmixer.search.report import first_metrics

__all__ = ["PENALTY_UNITS", "SamplingOptions", "SamplingSampler", "batch_rewards", "replay", "sampling_report"]


PENALTY_UNITS = ("metric", "spread")


def batch_rewards(metrics: np.ndarray, over: np.ndarray, flops_penalty: float, penalty_unit: str) -> np.ndarray:
    """The rewards of one update's trials from their metrics (higher better) and doublings above
    the FLOPs target (``over``): with ``penalty_unit`` ``spread`` the metrics are standardized
    within the batch first (module docstring)."""
    if penalty_unit == "spread":
        metrics = standardized(metrics)
    return metrics - flops_penalty * over


@dataclasses.dataclass(frozen=True)
class SamplingOptions(PolicyOptions):
    """The search's settings (and the shared ones of rankmixer.search.policy.PolicyOptions);
    called with the number of trials a study holds, it builds the sampler (in each worker
    process: the options travel, the sampler does not)."""

    batch: int = 8
    controller_lr: float = 0.5
    redraws: int = 20
    penalty_unit: str = "metric"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch < 2 or self.controller_lr <= 0 or self.redraws < 0:
            raise ValueError(f"batch >= 2, controller_lr > 0 and redraws >= 0; got {self.batch}, "
                             f"{self.controller_lr}, {self.redraws}")
        if self.penalty_unit not in PENALTY_UNITS:
            raise ValueError(f"penalty_unit must be one of {PENALTY_UNITS}, got {self.penalty_unit!r}")

    def __call__(self, trials_before: int) -> "SamplingSampler":
        return SamplingSampler(self)


def replay(options: SamplingOptions, study, generator: torch.Generator | None = None) -> tuple[Controller, list[dict]]:
    """The controller after every update the study's complete trials make (module docstring),
    and one record per update: its trial numbers, rewards and the controller's entropy after it.
    Trials drawn off the policy's grid, or without a measured FLOPs count under a target, are
    left out."""
    table = decisions(options.space)
    controller = policy_controller(table, options.controller_lr, generator or torch.Generator().manual_seed(0))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    pending: list[tuple[int, list[int | None], float, float]] = []  # number, draws, metric, doublings over
    updates = []
    complete = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                      key=lambda t: t.number)
    for t in complete:
        taken = taken_options(table, t.params)
        if taken is None or t.value is None or not math.isfinite(t.value):
            continue
        flops = None
        if options.flops_target is not None:
            flops = (first_metrics(Path(options.out_dir), t.user_attrs.get("run_dirs", [])) or {}).get("flops_per_sample")
            if flops is None:
                continue
        over = 0.0 if flops is None else float(over_budget(flops, options.flops_target))
        pending.append((t.number, taken, t.value if maximize else -t.value, over))
        if len(pending) == options.batch:
            _, draws, metrics, overs = (list(x) for x in zip(*pending))
            rewards = batch_rewards(np.array(metrics), np.array(overs), options.flops_penalty, options.penalty_unit)
            controller.step(draws, standardized(rewards).tolist())
            updates.append({"trials": [n for n, *_ in pending], "rewards": rewards.tolist(),
                            "entropy": controller.entropy()})
            pending = []
    return controller, updates


class SamplingSampler(PlanSampler):
    """The Optuna sampler of Rankitect's sampling-based search (module docstring): each trial's
    whole architecture is drawn from the replayed controller in ``before_trial``."""

    def __init__(self, options: SamplingOptions) -> None:
        super().__init__(options.seed)
        self.options = options
        self.table = decisions(options.space)
        self.index = {d.name: i for i, d in enumerate(self.table)}

    def before_trial(self, study, trial) -> None:
        if trial.system_attrs.get("fixed_params"):  # a retry: it draws what it drew before
            return
        seed = np.random.SeedSequence([self.options.seed or 0, trial.number]).generate_state(1)[0]
        controller, _ = replay(self.options, study, torch.Generator().manual_seed(int(seed)))
        seen = {params_key(t.params) for t in study.get_trials(deepcopy=False) if t.number != trial.number}
        for _ in range(self.options.redraws + 1):
            draw = PolicyTrial(controller, self.index, self.table)
            self.options.space.suggest(draw)
            if params_key(draw.params) not in seen:
                break
        self.plans[trial.number] = draw.params


def sampling_report(options: SamplingOptions, storage: str, study_name: str) -> dict:
    """What ``search.json`` adds for a rankitect-sampling search: its options, every controller
    update (trials, rewards, entropy after it) and the controller's most likely architecture's
    draws (``mode``)."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    controller, updates = replay(options, study)
    table = decisions(options.space)
    best = controller.best()
    return {
        "options": {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name != "space"},
        "updates": updates,
        "mode": {d.name: d.options[k] for d, k in zip(table, best)},
    }
