"""A policy over a search space's draws: every named draw the space can make (``blocks``,
``b{i}.type``, ``b{i}.{type}.{size}``, ``b{i}.inputs``, ``b{i}.in{s}``) as one categorical
decision of a REINFORCE controller (rankmixer.search.controller), numbers on a grid of at most
:data:`GRID` values. The AutoML searcher's policy (against its predictor) and Rankitect's
sampling-based search (against trained trials) both draw architectures through it, and both
are Optuna samplers that hand a trial the architecture drawn for it (:class:`PlanSampler`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import optuna
import torch

from rankmixer.models.searched import SOURCE
from rankmixer.search.controller import Controller
from rankmixer.search.predictor import Decision
from rankmixer.search.space import ArchitectureSpace
from rankmixer.tune.space import Param

__all__ = ["GRID", "PlanSampler", "PolicyOptions", "PolicyTrial", "decisions", "over_budget", "params_key",
           "policy_controller", "standardized", "taken_options"]

GRID = 8  # the most values the policy offers for a number (a smaller integer range: all of it)


@dataclasses.dataclass(frozen=True)
class PolicyOptions:
    """What the searches that draw through the policy share: the space, the search folder (the
    trials' runs, whose measured FLOPs the cost term reads), the seed and the soft FLOPs budget
    (a reward less ``flops_penalty * max(0, log2(FLOPs / flops_target))``; none without a
    target)."""

    space: ArchitectureSpace
    out_dir: str
    seed: int | None = None
    flops_target: float | None = None
    flops_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.flops_target is not None and self.flops_target <= 0:
            raise ValueError(f"flops_target must be positive, got {self.flops_target}")
        if self.flops_penalty < 0:
            raise ValueError(f"flops_penalty must be >= 0, got {self.flops_penalty}")


def standardized(values: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """``(values - mean) / sd`` of ``reference`` (default: ``values``). A reference without
    spread (its sd at the level of float rounding, as for equal values) only centres: dividing
    by rounding noise would turn equal rewards into +-1."""
    ref = np.asarray(values if reference is None else reference, dtype=float)
    mean, sd = float(ref.mean()), float(ref.std())
    return (np.asarray(values, dtype=float) - mean) / (sd if sd > 1e-9 * max(1.0, abs(mean)) else 1.0)


def over_budget(flops, flops_target: float | None):
    """``max(0, log2(FLOPs / flops_target))``, elementwise for an array: the doublings above the
    budget that the reward's cost term counts (0 without a target)."""
    if flops_target is None:
        return np.zeros_like(np.asarray(flops, dtype=float))
    return np.maximum(0.0, np.log2(np.asarray(flops, dtype=float) / flops_target))


def _grid(p: Param) -> tuple:
    if p.kind == "choice":
        return p.encoded
    step = p.step or (1 if p.kind == "int" else None)
    if p.kind == "int" and (p.high - p.low) // step + 1 <= 2 * GRID:
        return tuple(range(p.low, p.high + 1, step))
    points = np.geomspace(p.low, p.high, GRID) if p.log else np.linspace(p.low, p.high, GRID)
    if p.kind == "int":
        points = [p.low + round((v - p.low) / step) * step for v in points]
    elif step:
        points = [p.decode(p.low + round((v - p.low) / step) * step) for v in points]
    return tuple(dict.fromkeys(int(v) if p.kind == "int" else float(v) for v in points))


def decisions(space: ArchitectureSpace) -> list[Decision]:
    """Every named draw the space can make (rankmixer.search.space: ``blocks``, ``b{i}.type``,
    ``b{i}.{type}.{size}``, ``b{i}.inputs``, ``b{i}.in{s}``), with the policy's options."""
    out = []

    def add(p: Param, name: str) -> None:
        if p.kind == "fixed":
            return
        numeric = p.kind in ("int", "float")
        out.append(Decision(name, _grid(p), numeric, p.low if numeric else 0.0, p.high if numeric else 1.0,
                            p.log))

    add(space.blocks, space.blocks.key)
    most = space.blocks.high if space.blocks.kind == "int" else space.blocks.value
    types = list(space.types)
    for i in range(most):
        if len(types) > 1:
            out.append(Decision(f"b{i}.type", tuple(types)))
        for t, sizes in space.types.items():
            for k, p in sizes.items():
                add(p, f"b{i}.{t}.{k}")
        sources = (SOURCE, *(f"b{j}" for j in range(i)))
        inputs = min(space.max_inputs, len(sources))
        if inputs > 1:
            out.append(Decision(f"b{i}.inputs", tuple(range(1, inputs + 1)), True, 1, inputs))
        if len(sources) > 1:
            out.extend(Decision(f"b{i}.in{s}", sources) for s in range(inputs))
    return out


def policy_controller(table: list[Decision], lr: float, generator: torch.Generator) -> Controller:
    """A uniform controller with one softmax per decision of ``table`` over its options."""
    return Controller([list(range(len(d.options))) for d in table], max(len(d.options) for d in table), lr, generator)


def params_key(params: dict[str, Any]) -> str:
    """An architecture's draws as one string: equal draws, equal keys (the "run already" test)."""
    return json.dumps(params, sort_keys=True, default=str)


class PolicyTrial:
    """What ``space.suggest`` draws from: each draw answered by the controller's decision of
    that name, recorded as Optuna params and as the option index taken."""

    def __init__(self, controller: Controller, index: dict[str, int], table: list[Decision]) -> None:
        self.controller, self.index, self.table = controller, index, table
        self.params: dict[str, Any] = {}
        self.taken: list[int | None] = [None] * len(table)

    def _draw(self, name: str, allowed: Any = None) -> Any:
        i = self.index[name]
        k = self.controller.draw(i)
        value = self.table[i].options[k]
        if allowed is not None and value not in allowed:
            raise ValueError(f"the policy's option {value!r} for {name} lies outside {allowed}")
        self.params[name], self.taken[i] = value, k
        return value

    def suggest_int(self, name: str, low: int, high: int, log: bool = False, step: int = 1) -> int:
        return self._draw(name, range(low, high + 1))

    def suggest_float(self, name: str, low: float, high: float, log: bool = False, step: float | None = None) -> float:
        return self._draw(name)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._draw(name, choices)


def taken_options(table: list[Decision], params: dict[str, Any]) -> list[int | None] | None:
    """The option index of each decision in a trial's ``params`` (None: a draw it did not make);
    None when a value is not one of its decision's options (a trial drawn off the grid)."""
    taken: list[int | None] = []
    for d in table:
        if d.name not in params:
            taken.append(None)
        elif params[d.name] in d.options:
            taken.append(d.options.index(params[d.name]))
        else:
            return None
    return taken


class PlanSampler(optuna.samplers.BaseSampler):
    """An Optuna sampler that answers each draw of a trial from the architecture planned for it
    (``plans[trial.number]``, set by a subclass's ``before_trial``); a draw outside the plan
    (no plan yet, a retry) is Optuna's random sampler's."""

    def __init__(self, seed: int | None) -> None:
        self.random = optuna.samplers.RandomSampler(seed=seed)
        self.plans: dict[int, dict[str, Any]] = {}

    def infer_relative_search_space(self, study, trial) -> dict:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def sample_independent(self, study, trial, name: str, distribution) -> Any:
        plan = self.plans.get(trial.number)
        if plan is not None and name in plan:
            return plan[name]
        return self.random.sample_independent(study, trial, name, distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.plans.pop(trial.number, None)

    def reseed_rng(self) -> None:
        self.random.reseed_rng()
