"""The offline protocol: one fixed dataset per seed, the same counts for every method.

A behaviour policy runs episodes of ``horizon`` steps from start states drawn from μ (a new episode starts
after an absorbing state or ``horizon`` steps) until ``max(sizes)`` transitions are collected; the dataset
of size n is the first n transitions, so the datasets of one seed are nested. Each method plans once on
the counts of each size and its greedy policy is scored exactly (normalised value).

Behaviours (:data:`BEHAVIOURS`):

- ``uniform``: uniformly random actions (full coverage in the limit);
- ``epsilon_greedy``: an optimal action w.p. 1 - ε (ε = ``epsilon``, 0.3 by default), else uniform;
- ``narrow``: the same with ε = 0.05: the data cover little more than the optimal policy's path
  (single-policy coverage, the setting pessimism is made for);
- ``generative``: no episodes: every pair of a non-absorbing state in turn (a simulator that can be set to
  any state), each round in a fresh random order, so a dataset of n transitions holds every such pair
  ⌊n / SA⌋ or ⌈n / SA⌉ times. Coverage is then never the question: it measures consistency, how close
  a method's plan comes to the optimum as the model it reads becomes exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Generator, Tensor

from rlfm.agents.base import Agent
from rlfm.counts import Counts
from rlfm.evaluation.online import Progress
from rlfm.evaluation.simulate import Scorer, Simulator
from rlfm.mdp import TabularMDP
from rlfm.solve import ActionLayout, optimal_values

BEHAVIOURS = ("uniform", "epsilon_greedy", "narrow", "generative")
NARROW_EPSILON = 0.05
DEFAULT_SIZES = tuple(2**k for k in range(3, 12))  # 8, 16, ..., 2048


@dataclass(frozen=True)
class OfflineConfig:
    """Dataset sizes (transitions), behaviour policy, its ε (for ``epsilon_greedy``), episode length."""

    sizes: tuple[int, ...] = DEFAULT_SIZES
    behaviour: str = "uniform"
    epsilon: float = 0.3
    horizon: int = 50

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {self.behaviour!r}; choose from {BEHAVIOURS}")
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError("dataset sizes must be positive")

    @property
    def behaviour_epsilon(self) -> float | None:
        """Probability of a uniformly random action (None for ``generative``, which runs no policy)."""
        epsilons = {"uniform": 1.0, "epsilon_greedy": self.epsilon, "narrow": NARROW_EPSILON}
        return epsilons.get(self.behaviour)


def collect_datasets(
    mdp: TabularMDP, seeds: int, config: OfflineConfig, generator: Generator
) -> list[list[Counts]]:
    """``datasets[i][seed]``: the counts of the first ``config.sizes[i]`` transitions of each seed's data."""
    simulator = Simulator(mdp, generator)
    total = max(config.sizes)
    if config.behaviour == "generative":
        sa = generative_pairs(mdp, seeds, total, generator)  # (N, T)
        states = mdp.sa_state[sa]
        columns = simulator.step(states.flatten(), (sa - mdp.action_ptr[states]).flatten())
        return _nested(mdp, config.sizes, *(c.reshape(seeds, total) for c in columns))
    layout = ActionLayout(mdp.num_actions)
    optimal = layout.greedy_actions(optimal_values(mdp)[0][None])[0]  # (S,)
    epsilon = config.behaviour_epsilon
    states = simulator.reset(seeds)
    age = torch.zeros(seeds, dtype=torch.long)
    columns: list[tuple[Tensor, ...]] = []
    for _ in range(total):
        explore = torch.rand(seeds, generator=generator, dtype=torch.float64) < epsilon
        actions = torch.where(explore, layout.random_actions(states, generator), optimal[states])
        sa, next_states, rewards, terminated = simulator.step(states, actions)
        columns.append((sa, next_states, rewards, terminated))
        age += 1
        restart = terminated | (age >= config.horizon)
        states = torch.where(restart, simulator.reset(seeds), next_states)
        age = torch.where(restart, 0, age)
    sa, next_states, rewards, terminated = (
        torch.stack(c, dim=1) for c in zip(*columns, strict=True)
    )  # (N, T)
    return _nested(mdp, config.sizes, sa, next_states, rewards, terminated)


def generative_pairs(mdp: TabularMDP, seeds: int, total: int, generator: Generator) -> Tensor:
    """(seeds, total) pair indices: every pair of a non-absorbing state once per round, in a fresh random
    order per round and seed."""
    pairs = (~mdp.terminal[mdp.sa_state]).nonzero().squeeze(1)
    if pairs.numel() == 0:
        raise ValueError(f"{mdp.name}: every state is absorbing, there is no pair to sample")
    rounds = -(-total // pairs.numel())
    order = torch.rand(seeds, rounds, pairs.numel(), generator=generator).argsort(dim=-1)
    return pairs[order].reshape(seeds, -1)[:, :total]


def _nested(
    mdp: TabularMDP,
    sizes: tuple[int, ...],
    sa: Tensor,
    next_states: Tensor,
    rewards: Tensor,
    terminated: Tensor,
) -> list[list[Counts]]:
    """``datasets[i][seed]``: counts of the first ``sizes[i]`` transitions of each row (N, T) of the columns."""
    return [
        [
            Counts.empty_like(mdp).add(
                sa[i, :size], next_states[i, :size], rewards[i, :size], terminated[i, :size]
            )
            for i in range(sa.shape[0])
        ]
        for size in sizes
    ]


def run_offline(
    mdp: TabularMDP,
    agent: Agent,
    datasets: list[list[Counts]],
    generator: Generator,
    scorer: Scorer | None = None,
    repeats: int = 1,
    progress: Progress | None = None,
) -> Tensor:
    """(sizes, repeats · seeds) normalised values of the agent's greedy policy planned on each dataset.

    With ``repeats`` > 1 the agent runs ``repeats`` copies of every seed's data at once (run
    ``k · seeds + i`` reads seed i), so that a grid of per-run settings shares one plan.
    """
    scorer = scorer or Scorer(mdp)
    values = []
    for counts in datasets:
        agent.start(mdp.num_actions, mdp.gamma, repeats * len(counts), generator)
        agent.plan(counts * repeats)
        values.append(scorer.normalized(agent.greedy_policy()))
        if progress is not None:
            progress.update(1)
    return torch.stack(values)
