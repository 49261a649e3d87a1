r"""Tabular Q-learning (Watkins, 1989), ε-greedy, with an optimistic start.

After every step, for each run:

.. math::
    Q(s, a) \leftarrow Q(s, a) + \alpha \bigl(r + \gamma (1 - d) \max_{a'} Q(s', a') - Q(s, a)\bigr),

d = 1 if s' ended the episode. A pair not yet updated is worth :math:`\kappa \hat r_{\max} / (1 - \gamma)`,
with :math:`\hat r_{\max}` the largest |reward| observed so far (1 before any): optimistic for κ > 0 without
knowing the true reward scale. It acts ε-greedily (ties at random) and exploits greedily on Q. It learns
from the steps it observes, not from counts, so it takes part in the online protocol only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Generator, Tensor

from rlfm.agents.base import Agent, Hyperparameter, describe, per_run
from rlfm.solve import ActionLayout


class QLearning(Agent):
    """ε-greedy Q-learning. Grid: epsilon ∈ {0.01, 0.1, 0.3} × alpha ∈ {0.1, 0.3, 1} (optimism κ = 1)."""

    name = "qlearning"
    modes: ClassVar[frozenset[str]] = frozenset({"online"})
    grid: ClassVar[dict[str, tuple[float, ...]]] = {"epsilon": (0.01, 0.1, 0.3), "alpha": (0.1, 0.3, 1.0)}
    defaults: ClassVar[dict[str, float]] = {"epsilon": 0.1, "alpha": 0.1, "optimism": 1.0}
    uses_counts = False

    def __init__(
        self, epsilon: Hyperparameter = 0.1, alpha: Hyperparameter = 0.1, optimism: Hyperparameter = 1.0
    ) -> None:
        self.settings = {"epsilon": epsilon, "alpha": alpha, "optimism": optimism}

    def hyperparameters(self) -> dict[str, Any]:
        return {name: describe(value) for name, value in self.settings.items()}

    def start(self, num_actions: Tensor, gamma: float, runs: int, generator: Generator) -> None:
        self.num_actions, self.gamma, self.runs, self.generator = num_actions, float(gamma), runs, generator
        self.layout = ActionLayout(num_actions)
        self.epsilon, self.alpha, self.optimism = (
            per_run(self.settings[name], runs, name) for name in ("epsilon", "alpha", "optimism")
        )
        SA = self.layout.num_pairs
        self.q = torch.zeros(runs, SA, dtype=torch.float64)
        self.updated = torch.zeros(runs, SA, dtype=torch.bool)
        self.max_abs_reward = torch.zeros(runs, dtype=torch.float64)
        self.priority = torch.rand(runs, SA, generator=generator, dtype=torch.float64)
        self.rows = torch.arange(runs)

    def q_values(self) -> Tensor:
        """(R, SA) Q, with the optimistic value in pairs not yet updated."""
        scale = torch.where(self.max_abs_reward > 0, self.max_abs_reward, 1.0)
        initial = (self.optimism * scale / (1.0 - self.gamma))[:, None]
        return torch.where(self.updated, self.q, initial)

    def _state_q(self, q: Tensor, states: Tensor) -> Tensor:
        """(R, A_max) each run's action values in its state, -inf in missing slots."""
        padded = torch.nn.functional.pad(q, (0, 1), value=-torch.inf)
        return padded.gather(1, self.layout.pad[states])

    def act(self, states: Tensor) -> Tensor:
        values = self._state_q(self.q_values(), states)  # (R, A_max)
        best = values.amax(dim=1, keepdim=True)
        jitter = torch.rand(values.shape, generator=self.generator, dtype=torch.float64)
        greedy = torch.where(values >= best, 1.0 + jitter, 0.0).argmax(dim=1)
        explore = torch.rand(self.runs, generator=self.generator, dtype=torch.float64) < self.epsilon
        return torch.where(explore, self.layout.random_actions(states, self.generator), greedy)

    def observe(
        self,
        states: Tensor,
        actions: Tensor,
        rewards: Tensor,
        next_states: Tensor,
        terminated: Tensor,
        active: Tensor,
    ) -> None:
        rewards = rewards.double()
        seen = torch.where(active, rewards.abs(), 0.0)
        self.max_abs_reward = torch.maximum(self.max_abs_reward, seen)
        q = self.q_values()
        sa = self.layout.action_ptr[states] + actions
        next_value = self._state_q(q, next_states).amax(dim=1).masked_fill(terminated, 0.0)
        current = q[self.rows, sa]
        updated = current + self.alpha * (rewards + self.gamma * next_value - current)
        rows, sa = self.rows[active], sa[active]
        self.q[rows, sa] = updated[active]
        self.updated[rows, sa] = True

    def greedy_policy(self) -> Tensor:
        return self.layout.one_hot(self.layout.greedy_actions(self.q_values(), self.priority))
