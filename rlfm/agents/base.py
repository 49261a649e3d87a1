r"""The agent interface shared by the classical baselines and the rlfm in-context agent.

An agent runs R independent runs (seeds, or seeds × hyperparameter settings) of one MDP at once, so that
planning happens once for all of them. States and actions are local indices; the pair (s, a) has index
``sa = action_ptr[s] + a`` as in :class:`~rlfm.mdp.TabularMDP`. The protocol (:mod:`rlfm.evaluation`):

.. code-block:: text

    agent.start(num_actions, gamma, runs, generator)     # once per MDP
    agent.plan(counts)                                   # online: before every episode; offline: once
    for each step of an episode:                         # online only
        actions = agent.act(states)
        agent.observe(states, actions, rewards, next_states, terminated, active)
    policy = agent.greedy_policy()                       # scored exactly: online after every episode

Online, the counts grow by one whole episode between plans; offline, ``plan`` is called once per dataset.
Counts may be shared between runs (a grid of settings reads the same data): treat them as read-only.
States and actions are ``torch.long``, rewards ``float64``, policies ``float64``.

What an agent may use: the ``counts`` (:class:`~rlfm.counts.Counts`, one per run: N(s, a), N(s, a, s'),
reward sums, the states seen to end an episode, the largest |reward| seen), the transitions passed to
``observe``, the number of actions per state and γ. Nothing else: no true reward scale (the scale is the
largest observed |reward|) and no terminal flags beyond ``Counts.terminal``, whose states are absorbing
with value 0.

Hyperparameters are constructor arguments. Agents with ``vectorized = True`` also accept, for each
numeric hyperparameter, a sequence of R values (one per run), so that a whole grid of settings runs as
one batch; ``grid`` lists the small grid each baseline is tuned over.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Generator, Tensor

from rlfm.counts import Counts

Hyperparameter = float | Sequence[float] | Tensor


class Agent(ABC):
    """Base class of all agents, batched over R runs of the same MDP.

    Class attributes:
        name: registry name (:func:`rlfm.agents.make_agent`).
        modes: protocols the agent takes part in, ``"online"`` and/or ``"offline"``.
        grid: hyperparameter grid of the baseline, name -> values (empty: nothing to tune).
        defaults: the setting used without the grid.
        vectorized: numeric hyperparameters may be given per run (a sequence of length R).
        uses_counts: the agent reads ``plan(counts)`` (False lets the evaluation skip building counts).
    """

    name: ClassVar[str] = "agent"
    modes: ClassVar[frozenset[str]] = frozenset({"online", "offline"})
    grid: ClassVar[dict[str, tuple[float, ...]]] = {}
    defaults: ClassVar[dict[str, float]] = {}
    vectorized: ClassVar[bool] = True
    uses_counts: ClassVar[bool] = True

    num_actions: Tensor
    gamma: float
    runs: int
    generator: Generator

    @abstractmethod
    def start(self, num_actions: Tensor, gamma: float, runs: int, generator: Generator) -> None:
        """Reset for a new MDP.

        Args:
            num_actions: (S,) actions available in each state.
            gamma: the benchmark's discount.
            runs: R, the number of independent runs.
            generator: the source of all of the agent's randomness.
        """

    def plan(self, counts: list[Counts]) -> None:  # noqa: B027 (optional hook)
        """Update the policy from all experience so far: ``counts`` holds one :class:`Counts` per run."""

    @abstractmethod
    def act(self, states: Tensor) -> Tensor:
        """(R,) local actions for ``states`` (R,), one per run."""

    def observe(  # noqa: B027 (optional hook)
        self,
        states: Tensor,
        actions: Tensor,
        rewards: Tensor,
        next_states: Tensor,
        terminated: Tensor,
        active: Tensor,
    ) -> None:
        """One step of every run: all (R,); ``terminated`` (bool) says ``next_states`` ended the episode,
        and runs with ``active`` False have already finished their episode (ignore their entries)."""

    @abstractmethod
    def greedy_policy(self) -> Tensor:
        """(R, SA) the exploitation policy of each run (each state's block sums to 1)."""

    def hyperparameters(self) -> dict[str, Any]:
        """The settings this agent was built with (for reports)."""
        return {}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({settings})"


def per_run(value: Hyperparameter, runs: int, name: str = "hyperparameter") -> Tensor:
    """(R,) float64: a scalar broadcast to every run, or a sequence of one value per run."""
    tensor = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if tensor.numel() == 1:
        return tensor.expand(runs).clone()
    if tensor.numel() != runs:
        raise ValueError(f"{name} has {tensor.numel()} values for {runs} runs: give one value or one per run")
    return tensor.clone()


def describe(value: Hyperparameter) -> float | list[float]:
    """A hyperparameter as JSON-friendly numbers."""
    tensor = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    values = tensor.tolist()
    return values[0] if len(set(values)) == 1 else values
