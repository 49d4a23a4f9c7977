"""The AutoML searcher (Yin et al. 2023, "AutoML for Large Capacity Modeling of Meta's Ranking
Systems", arXiv 2311.07870): a predictor learned from the finished trials, and a REINFORCE
policy that explores the space against that predictor under a FLOPs budget, so that each of the
~100 real trials goes to an architecture the predictor ranks high.

It is an Optuna sampler (:class:`AutoMLSampler`), so a search with it is an ordinary study:
its storage, resume, retries, parallel workers and report are the tuning study's. Per trial:

1. **Start-up.** The first ``startup_trials`` complete trials are drawn at random (Optuna's
   random sampler), to give the predictor its first labels.
2. **Labels.** Every complete trial is a short training run. By default (``labels="value"``)
   its label is the trial's value, the metric the study itself maximizes, so the predictor
   learns the search's own objective; with ``labels="extrapolated"``, the learning-curve
   extrapolation of its validation metric to ``horizon_steps`` (rankmixer.search.curve),
   averaged over its seeds (on the drift set these disagree with the values and lose to random
   search, docs/search.md). Its FLOPs per sample are those its run measured.
3. **A round** (every ``round_size`` newly complete trials): the ensemble predictor
   (rankmixer.search.predictor: pairwise ranking loss, multi-task with log FLOPs) is fitted to
   all labels; then a policy (rankmixer.search.controller: one softmax per named draw of the
   space, rankmixer.search.policy) takes ``policy_steps`` REINFORCE steps
   of ``policy_samples`` architectures each, with the reward

       reward(a) = z(a) - flops_penalty * max(0, log2(FLOPs_hat(a) / flops_target))

   where ``z`` is the predicted score standardized over the trials' own predictions and
   ``FLOPs_hat`` the predicted FLOPs (no penalty without a target). With ``explore`` > 0 the
   score is an upper confidence bound, the ensemble's mean plus ``explore`` times its members'
   standard deviation, standardized the same way: architectures the members disagree on are
   worth a trial, since a trial there teaches the predictor most. The ``round_size``
   architectures with the highest reward among those the policy drew in its second half, and
   that no trial of the study has drawn yet, are queued.
4. Each trial takes the next queued architecture: the sampler answers each of the space's
   draws with the architecture's value.

What the paper leaves open, we chose: the extrapolation formula, the reward's penalty form,
the grid, the network sizes and the round size. A process keeps its own queue; several workers
on one study each fit their own predictor to the shared trials, and a queued architecture that
another worker has meanwhile drawn is skipped.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import optuna
import torch

from rankmixer.search.curve import extrapolate, read_curve
from rankmixer.search.policy import (PlanSampler, PolicyOptions, PolicyTrial, decisions, over_budget, params_key,
                                     policy_controller, standardized)
from rankmixer.search.predictor import Decision, Encoder, Predictor, cross_validate
from rankmixer.search.report import first_metrics
from rankmixer.search.space import ArchitectureSpace
from rankmixer.tune.study import continued_seed

LABELS = ("extrapolated", "value")

__all__ = ["LABELS", "AutoMLOptions", "AutoMLSampler", "automl_report", "propose", "study_labels", "trial_labels"]


def propose(space: ArchitectureSpace, table: list[Decision], predictor: Predictor, reference: np.ndarray, *,
            count: int, seen: set[str], steps: int = 200, samples: int = 32, lr: float = 0.2,
            flops_target: float | None = None, flops_penalty: float = 1.0, explore: float = 0.0,
            seed: int = 0) -> list[dict]:
    """The REINFORCE policy against ``predictor`` (module docstring, step 3): up to ``count``
    architectures, not in ``seen`` (parameter keys), with the highest reward among those drawn in
    the second half of the steps; each ``{"params", "reward", "score", "flops"}``.
    ``reference``: the encoded trials, whose predicted scores standardize the reward."""
    encoder = Encoder(table)
    ref = predictor.predict(reference)["score"]
    index = {d.name: i for i, d in enumerate(table)}
    controller = policy_controller(table, lr, torch.Generator().manual_seed(seed))
    found: dict[str, dict] = {}
    for step in range(steps):
        draws = []
        for _ in range(samples):
            trial = PolicyTrial(controller, index, table)
            space.suggest(trial)
            draws.append(trial)
        pred = predictor.predict(encoder.encode_all([t.params for t in draws]))
        z = standardized(pred["score"] + explore * pred["spread"], ref)
        reward = z - flops_penalty * over_budget(pred["flops"], flops_target)
        controller.step([t.taken for t in draws], reward.tolist())
        if step >= steps // 2:
            for t, r, s, f in zip(draws, reward, pred["score"], pred["flops"]):
                key = params_key(t.params)
                if key not in seen:
                    found[key] = {"params": t.params, "reward": float(r), "score": float(s), "flops": float(f)}
    return sorted(found.values(), key=lambda c: -c["reward"])[:count]


def trial_labels(trials: list, out_dir: Path, metric: str, maximize: bool,
                 horizon_steps: int | None) -> tuple[list, np.ndarray, np.ndarray]:
    """The complete trials with a finite value and a measured FLOPs count, their labels (higher
    = better: the extrapolated metric at ``horizon_steps``, seed mean, or the value) and their
    FLOPs per sample."""
    kept, labels, flops = [], [], []
    for t in trials:
        if t.value is None or not math.isfinite(t.value):
            continue
        run_dirs = t.user_attrs.get("run_dirs", [])
        f = (first_metrics(Path(out_dir), run_dirs) or {}).get("flops_per_sample")
        if f is None:
            continue
        value = t.value
        if horizon_steps:
            curves = [read_curve(Path(out_dir) / r, metric) for r in run_dirs]
            ends = [extrapolate(s, v, horizon_steps) for s, v in curves if s]
            value = float(np.mean(ends)) if ends else t.value
        kept.append(t)
        labels.append(value if maximize else -value)
        flops.append(float(f))
    return kept, np.asarray(labels), np.asarray(flops)


@dataclasses.dataclass(frozen=True)
class AutoMLOptions(PolicyOptions):
    """The searcher's settings (and the shared ones of rankmixer.search.policy.PolicyOptions);
    called with the number of trials a study holds, it builds the sampler (in each worker
    process: the options travel, the sampler does not)."""

    startup_trials: int = 20
    round_size: int = 10
    labels: str = "value"
    horizon_steps: int | None = None
    members: int = 5
    policy_steps: int = 200
    policy_samples: int = 32
    explore: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.startup_trials < 2 or self.round_size < 1 or self.members < 1:
            raise ValueError(f"startup_trials >= 2, round_size >= 1 and members >= 1; got {self.startup_trials}, "
                             f"{self.round_size}, {self.members}")
        if self.explore < 0:
            raise ValueError(f"explore must be >= 0, got {self.explore}")
        if self.labels not in LABELS:
            raise ValueError(f"labels must be one of {', '.join(LABELS)}, got {self.labels!r}")
        if self.horizon_steps is not None and self.labels != "extrapolated":
            raise ValueError(f"horizon_steps ({self.horizon_steps}) is the step the extrapolated labels are read at; "
                             f"with labels {self.labels!r} it would be unused: drop it or use labels 'extrapolated'")

    def __call__(self, trials_before: int) -> "AutoMLSampler":
        return AutoMLSampler(self, trials_before)


class AutoMLSampler(PlanSampler):
    """The Optuna sampler of the AutoML searcher (module docstring). Draws outside a queued
    architecture (start-up trials, a parameter the queue does not hold) are Optuna's random
    sampler's."""

    def __init__(self, options: AutoMLOptions, trials_before: int = 0) -> None:
        seed = continued_seed(options.seed, trials_before)
        super().__init__(seed)
        self.options = options
        self.seed = seed or 0
        self.table = decisions(options.space)
        self.queue: list[dict] = []
        self.fitted_on = -1  # complete trials at the last round
        self.rounds = 0

    def before_trial(self, study, trial) -> None:
        if trial.system_attrs.get("fixed_params"):  # a retry: it draws what it drew before
            return
        every = study.get_trials(deepcopy=False)
        complete = [t for t in every if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) < self.options.startup_trials:
            return
        seen = {params_key(t.params) for t in every if t.number != trial.number}
        if not self.queue or len(complete) >= self.fitted_on + self.options.round_size:
            self.fitted_on = len(complete)
            self._round(study, seen)
        while self.queue:
            nxt = self.queue.pop(0)
            if params_key(nxt["params"]) not in seen:
                self.plans[trial.number] = nxt["params"]
                return

    # the round -------------------------------------------------------------------------------
    def _round(self, study, seen: set[str]) -> None:
        o = self.options
        got = study_labels(o, study)
        if len(got["labels"]) < 2:
            return
        predictor = Predictor(members=o.members, seed=self.seed + self.rounds).fit(got["x"], got["labels"], got["flops"])
        self.queue = propose(o.space, self.table, predictor, got["x"], count=o.round_size, seen=seen,
                             steps=o.policy_steps, samples=o.policy_samples, flops_target=o.flops_target,
                             flops_penalty=o.flops_penalty, explore=o.explore, seed=self.seed + self.rounds)
        self.rounds += 1


def study_labels(options: AutoMLOptions, study) -> dict:
    """The study's labelled trials: ``numbers``, ``x`` (encoded), ``labels`` and ``flops``."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    kept, labels, flops = trial_labels(complete, Path(options.out_dir), options.space.objective.metric, maximize,
                                       options.horizon_steps)  # None with value labels (AutoMLOptions checks)
    x = Encoder(decisions(options.space)).encode_all([t.params for t in kept])
    return {"numbers": [t.number for t in kept], "values": [t.value for t in kept], "x": x, "labels": labels,
            "flops": flops}


def automl_report(options: AutoMLOptions, storage: str, study_name: str, folds: int = 5) -> dict:
    """What ``search.json`` adds for an automl search: its options, every labelled trial (value,
    label, FLOPs) and the predictor's ``folds``-fold cross-validated Kendall tau on them
    (rankmixer.search.predictor.cross_validate; None with fewer than ``2 * folds`` trials)."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    got = study_labels(options, study)
    cv = None
    if len(got["labels"]) >= 2 * folds:
        cv = cross_validate(got["x"], got["labels"], got["flops"], folds=folds, seed=options.seed or 0,
                            members=options.members)
    return {
        "options": {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name != "space"},
        "trials": [{"number": n, "value": v, "label": float(lab), "flops_per_sample": float(f)}
                   for n, v, lab, f in zip(got["numbers"], got["values"], got["labels"], got["flops"])],
        "predictor": cv,
    }

