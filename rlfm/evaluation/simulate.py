r"""What the protocols share: R copies of a true MDP stepped at once, and exact scoring of policies.

Scores are the normalised value of a policy, computed exactly (one linear solve per distinct policy):

.. math::
    \text{score}(\pi) = \frac{V^\pi(\mu) - V^{unif}(\mu)}{V^*(\mu) - V^{unif}(\mu)},

with μ the start distribution, as :func:`rlfm.solve.normalized_value`. Deterministic policies recur from
episode to episode, so scores are cached by policy.
"""

from __future__ import annotations

import sys

import torch
from torch import Generator, Tensor

from rlfm.experience import draw_in_blocks
from rlfm.mdp import TabularMDP, action_ptr
from rlfm.solve import evaluate_policy, mdp_arrays, state_max, uniform_policy, value_iteration

MAX_DENSE_ENTRIES = 4_000_000  # policies solved together: batch × S² at most this many entries
GAP_FLOOR = 1e-12  # the smallest normaliser V* - V^unif, relative to the size of the values


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
        optimal_start, uniform_start: V*(μ) and V^unif(μ) (infinite horizon).
        optimal_horizon, uniform_horizon: (S,) optimal and uniform expected discounted returns over
            ``horizon`` steps (the comparators of the online regret).
    """

    def __init__(self, mdp: TabularMDP, horizon: int = 50) -> None:
        self.mdp = mdp
        self.arrays = mdp_arrays(mdp)
        self.start = mdp.start.double()
        scale = min(1.0, float(self.arrays.reward.abs().max())) or 1.0  # V* to 1e-8 relative to small rewards
        optimal = value_iteration(self.arrays, tol=1e-8 * scale)[1]
        uniform = evaluate_policy(self.arrays, uniform_policy(self.arrays))
        self.optimal_start = float(self.start @ optimal)
        self.uniform_start = float(self.start @ uniform)
        self.optimal_horizon, self.uniform_horizon = self._finite_horizon_values(horizon)
        self._cache: dict[bytes, float] = {}

    @property
    def gap(self) -> float:
        """V*(μ) - V^unif(μ), the normaliser of the scores (floored relative to the values' size)."""
        return _gap(self.optimal_start, self.uniform_start)

    @property
    def horizon_gap(self) -> float:
        """The same over ``horizon`` steps, the normaliser of the regret."""
        optimal, uniform = float(self.start @ self.optimal_horizon), float(self.start @ self.uniform_horizon)
        return _gap(optimal, uniform)

    def _finite_horizon_values(self, horizon: int) -> tuple[Tensor, Tensor]:
        arrays = self.arrays
        P = arrays.transition_matrix()
        gamma = float(arrays.gamma[0])
        uniform = uniform_policy(arrays)
        num_actions = arrays.num_actions
        optimal = torch.zeros(arrays.num_states, dtype=torch.float64)
        random = torch.zeros(arrays.num_states, dtype=torch.float64)
        for _ in range(horizon):
            optimal = state_max(arrays.reward + gamma * (P @ optimal), num_actions)
            q = arrays.reward + gamma * (P @ random)
            random = torch.zeros_like(random).index_add_(0, arrays.sa_state, uniform * q)
        return optimal, random

    def start_values(self, policies: Tensor) -> Tensor:
        """(U,) V^π(μ) of each policy (U, SA), exactly (batched dense solves)."""
        arrays, S = self.arrays, self.arrays.num_states
        gamma = float(arrays.gamma[0])
        src, dst = arrays.sa_state[arrays.edge_sa], arrays.edge_next
        chunk = max(1, MAX_DENSE_ENTRIES // (S * S))
        values = []
        for block in policies.double().split(chunk):
            U = block.shape[0]
            r_pi = torch.zeros(U, S, dtype=torch.float64).index_add_(
                1, arrays.sa_state, block * arrays.reward
            )
            weight = block[:, arrays.edge_sa] * arrays.prob  # (U, E)
            system = torch.eye(S, dtype=torch.float64).repeat(U, 1, 1)
            flat = (torch.arange(U)[:, None] * S * S + src * S + dst).reshape(-1)
            system.view(-1).index_add_(0, flat, -gamma * weight.reshape(-1))
            values.append(torch.linalg.solve(system, r_pi) @ self.start)
        return torch.cat(values)

    def normalized(self, policies: Tensor) -> Tensor:
        """(R,) normalised values of ``policies`` (R, SA), from the cache where seen before."""
        keys = [row.numpy().tobytes() for row in policies.double()]
        missing = sorted({i for i, key in enumerate(keys) if key not in self._cache})
        unique: dict[bytes, int] = {}
        for i in missing:
            unique.setdefault(keys[i], i)
        if unique:
            rows = torch.tensor(list(unique.values()))
            for key, value in zip(unique, self.start_values(policies[rows]).tolist(), strict=True):
                self._cache[key] = (value - self.uniform_start) / self.gap
        return torch.tensor([self._cache[key] for key in keys], dtype=torch.float64)


def _gap(optimal: float, uniform: float) -> float:
    """``optimal - uniform``, floored at ``GAP_FLOOR`` × max(|optimal|, |uniform|) and at the smallest normal
    float: normalised values do not depend on the scale of the rewards."""
    return max(optimal - uniform, GAP_FLOOR * max(abs(optimal), abs(uniform)), sys.float_info.min)
