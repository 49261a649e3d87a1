"""The shared skeleton of the model-based baselines: plan on the counts, act greedily on the result."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import Generator, Tensor

from rlfm.agents.base import Agent, Hyperparameter, describe, per_run
from rlfm.agents.planning import RELATIVE_TOLERANCE, EmpiricalModel
from rlfm.counts import Counts
from rlfm.solve import ActionLayout, expectation, stopping_threshold, value_iteration

TIE_TOLERANCE = 10 * RELATIVE_TOLERANCE  # actions this close (relative to V̂_max) count as tied


class ModelBasedAgent(Agent):
    """Plans once per call of :meth:`plan` for all runs; acts deterministically on the planned values.

    Subclasses implement :meth:`solve`, returning the action values to act on and those of the exploitation
    (greedy) policy. Ties are broken by a random order of each run's actions drawn at :meth:`start`. Before
    the first plan every run acts by that random order.
    """

    hyperparameter_names: tuple[str, ...] = ()

    def __init__(self, **hyperparameters: Hyperparameter) -> None:
        unknown = set(hyperparameters) - set(self.hyperparameter_names)
        if unknown:
            raise TypeError(
                f"{self.name} has no hyperparameter {sorted(unknown)}; it has {self.hyperparameter_names}"
            )
        self._settings = {**self.defaults, **hyperparameters}

    def hyperparameters(self) -> dict[str, Any]:
        return {name: describe(value) for name, value in self._settings.items()}

    def start(self, num_actions: Tensor, gamma: float, runs: int, generator: Generator) -> None:
        self.num_actions, self.gamma, self.runs, self.generator = num_actions, float(gamma), runs, generator
        self.layout = ActionLayout(num_actions)
        self.params = {name: per_run(value, runs, name)[:, None] for name, value in self._settings.items()}
        self.priority = torch.rand(runs, self.layout.num_pairs, generator=generator, dtype=torch.float64)
        self.values: Tensor | None = None  # last plan's values, the next plan's warm start
        self.empirical_values: Tensor | None = None  # the same for the certainty-equivalent plan
        zeros = torch.zeros(runs, self.layout.num_pairs, dtype=torch.float64)
        self._acting = self._greedy = self.layout.greedy_actions(zeros, self.priority)

    def plan(self, counts: list[Counts]) -> None:
        if len(counts) != self.runs:
            raise ValueError(f"expected counts for {self.runs} runs, got {len(counts)}")
        model = EmpiricalModel.from_counts(counts, self.layout)
        acting_q, greedy_q = self.solve(model)
        tolerance = (TIE_TOLERANCE * model.scale / (1.0 - self.gamma))[:, None]
        self._acting = self.layout.greedy_actions(acting_q, self.priority, tolerance)
        self._greedy = (
            self._acting
            if greedy_q is acting_q
            else self.layout.greedy_actions(greedy_q, self.priority, tolerance)
        )

    @abstractmethod
    def solve(self, model: EmpiricalModel) -> tuple[Tensor, Tensor]:
        """Action values (R, SA) to act on and (R, SA) whose greedy policy is the exploitation policy (may be
        the same tensor)."""

    def act(self, states: Tensor) -> Tensor:
        return self._acting.gather(1, states[:, None]).squeeze(1)

    def greedy_policy(self) -> Tensor:
        return self.layout.one_hot(self._greedy)

    def certainty_equivalent(self, model: EmpiricalModel) -> Tensor:
        """(R, SA) Q of the empirical model (r̂, P̂), unvisited pairs worth 0 (see :mod:`rlfm.agents.certainty`)."""
        P = model.matrix(model.p_hat)
        reward, visited, gamma = model.mean_reward, model.visited, self.gamma

        def backup(values: Tensor) -> Tensor:
            return torch.where(visited, reward + gamma * expectation(P, values), 0.0)

        threshold = self.threshold(self.value_bound(model))
        q, self.empirical_values = value_iteration(
            backup, self.layout, threshold, terminal=model.terminal, initial=self.empirical_values
        )
        return q

    def threshold(self, value_bound: Tensor) -> Tensor:
        """(R,) the stopping threshold of value iteration for an error of ε·V̂_max in V (``value_bound`` (R, 1))."""
        return stopping_threshold(value_bound.squeeze(1), self.gamma, RELATIVE_TOLERANCE)

    def value_bound(self, model: EmpiricalModel) -> Tensor:
        """(R, 1) V̂_max = r̂_max / (1 - γ) from the largest observed |reward|."""
        return (model.scale / (1.0 - self.gamma))[:, None]


def plan_once(planner: ModelBasedAgent, model: EmpiricalModel, gamma: float) -> Tensor:
    """(R, SA) the action values ``planner`` acts on for the R runs of ``model``, outside the protocols
    (a fixed tie-break order, no warm start): for readouts that consult a baseline's plan."""
    planner.start(model.layout.num_actions, gamma, model.runs, torch.Generator().manual_seed(0))
    return planner.solve(model)[0]
