r"""What the protocols share: R copies of a true MDP stepped at once, and exact scoring of policies.

Scores are the normalised value of a policy, computed exactly (one linear solve per distinct policy):

.. math::
    \text{score}(\pi) = \frac{V^\pi(\mu) - V^{unif}(\mu)}{V^*(\mu) - V^{unif}(\mu)},

with μ the start distribution, as :func:`rlfm.solve.normalized_value`. Deterministic policies recur from
episode to episode, so scores are cached by policy.
"""

from __future__ import annotations

import torch
from torch import Generator, Tensor

from rlfm.experience import draw_in_blocks
from rlfm.graph import mdp_graph
from rlfm.mdp import TabularMDP, action_ptr
from rlfm.solve import (
    evaluate_policy,
    mdp_arrays,
    normalize,
    normalizer,
    optimal_and_uniform_start_values,
    value_iteration,
)


class Simulator:
    """Samples transitions of a :class:`TabularMDP` for a batch of runs (vectorised with
    :func:`rlfm.experience.draw_in_blocks`)."""

    def __init__(self, mdp: TabularMDP, generator: Generator) -> None:
        self.mdp, self.generator = mdp, generator
        self.action_ptr = mdp.action_ptr
        ptr = action_ptr(torch.bincount(mdp.transition_sa, minlength=mdp.num_state_actions))
        self.edge_lo, self.edge_hi = ptr[:-1], ptr[1:]
        self.edge_cumsum = mdp.transition_prob.double().cumsum(0)
        self.start_cumsum = mdp.start.double().cumsum(0)
        self.reward = mdp.reward.double()

    def reset(self, runs: int) -> Tensor:
        """(R,) start states drawn from the start distribution."""
        zeros = torch.zeros(runs, dtype=torch.long)
        return draw_in_blocks(self.start_cumsum, zeros, zeros + self.mdp.num_states, self.generator)

    def step(self, states: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step of every run: returns pair indices, next states, rewards (R,) and ``terminated``
        (the next state is absorbing, which ends an episode)."""
        sa = self.action_ptr[states] + actions
        edge = draw_in_blocks(self.edge_cumsum, self.edge_lo[sa], self.edge_hi[sa], self.generator)
        next_states = self.mdp.transition_next[edge]
        rewards = self.reward[sa]
        if self.mdp.reward_noise > 0:
            noise = torch.randn(sa.shape, generator=self.generator, dtype=torch.float64)
            rewards = rewards + self.mdp.reward_noise * noise
        return sa, next_states, rewards, self.mdp.terminal[next_states]


class Scorer:
    """Exact values of policies on one MDP.

    Attributes:
        optimal_start, uniform_start: V*(μ) and V^unif(μ) (infinite horizon), (1,).
        optimal_horizon, uniform_horizon: (S,) optimal and uniform expected discounted returns over
            ``horizon`` steps (the comparators of the online regret).
    """

    def __init__(self, mdp: TabularMDP, horizon: int = 50) -> None:
        self.mdp = mdp
        graph = mdp_graph(mdp)
        self.arrays = mdp_arrays(graph)
        self.start = mdp.start.double()
        self.optimal_start, self.uniform_start = optimal_and_uniform_start_values(graph)
        layout, backup = self.arrays.layout, self.arrays.bellman_backup
        uniform = layout.uniform(1)
        self.optimal_horizon = value_iteration(backup, layout, 0.0, sweeps=horizon)[1][0]
        expected = value_iteration(
            backup, layout, 0.0, sweeps=horizon, reduce=lambda q: layout.policy_mean(q, uniform)
        )
        self.uniform_horizon = expected[1][0]
        self._cache: dict[bytes, float] = {}

    @property
    def horizon_gap(self) -> float:
        """V*(μ) - V^unif(μ) over ``horizon`` steps, the normaliser of the regret (floored,
        :func:`rlfm.solve.normalizer`)."""
        optimal, uniform = self.start @ self.optimal_horizon, self.start @ self.uniform_horizon
        return float(normalizer(optimal, uniform))

    def start_values(self, policies: Tensor) -> Tensor:
        """(U,) V^π(μ) of each policy (U, SA), exactly (one sparse solve)."""
        return evaluate_policy(self.arrays, policies) @ self.start

    def normalized(self, policies: Tensor) -> Tensor:
        """(R,) normalised values of ``policies`` (R, SA), from the cache where seen before."""
        keys = [row.numpy().tobytes() for row in policies.double()]
        missing = sorted({i for i, key in enumerate(keys) if key not in self._cache})
        unique: dict[bytes, int] = {}
        for i in missing:
            unique.setdefault(keys[i], i)
        if unique:
            rows = torch.tensor(list(unique.values()))
            scores = normalize(self.start_values(policies[rows]), self.optimal_start, self.uniform_start)
            self._cache.update(zip(unique, scores.tolist(), strict=True))
        return torch.tensor([self._cache[key] for key in keys], dtype=torch.float64)
