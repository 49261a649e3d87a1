"""Chains that hide a large reward behind a run of unrewarded steps: the classic exploration traps.

Three variants on states 0 .. N-1 (the start is 0), each with its action labels shuffled per state:

- ``riverswim``: swimming left always works and pays a small reward at the bank (state 0); swimming right
  against the current succeeds with probability p, stays with probability q, else drifts left; the far
  end pays 1.
- ``chain``: "forward" moves right and "back" returns to 0 with a small reward; each slips to the other
  with a small probability; staying at the end pays 1.
- ``lock``: a combination lock; one action per state moves right, every other returns to 0 (optionally
  with a small reward); the end pays 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Generator, Tensor

from rlfm.mdp import TabularMDP
from rlfm.prior.distributions import choice, log_uniform, randint, uniform

VARIANTS = ("riverswim", "chain", "lock")


@dataclass
class ChainPrior:
    """Random river-swim-like chains, n-chains and combination locks.

    Args:
        min_length, max_length: number of states N.
        max_actions: at most this many actions in a lock (chains and river swims have 2).
        small_reward: range of the distracting small reward, relative to the final reward 1.
    """

    min_length: int = 3
    max_length: int = 20
    max_actions: int = 4
    small_reward: tuple[float, float] = (0.001, 0.2)

    def sample(self, generator: Generator, gamma: float) -> TabularMDP:
        variant = choice(dict.fromkeys(VARIANTS, 1.0), generator)
        N = randint(self.min_length, self.max_length, generator)
        small = float(log_uniform(*self.small_reward, generator))
        # Each builder returns lists over (state, action, outcome): next state, probability, reward.
        if variant == "riverswim":
            A, transitions = self._riverswim(N, small, generator)
        elif variant == "chain":
            A, transitions = self._chain(N, small, generator)
        else:
            A, transitions = self._lock(N, small, generator)
        state, action, next_state, prob, reward = transitions
        action = _shuffle_labels(N, A, generator)[state, action]
        sa = state * A + action
        expected = torch.zeros(N * A, dtype=torch.float64).index_add_(0, sa, prob * reward)
        return TabularMDP.from_transitions(
            torch.full((N,), A),
            sa,
            next_state,
            prob,
            expected,
            gamma=gamma,
            start=0,
            name=variant,
            check=False,
        )

    @staticmethod
    def _riverswim(N: int, small: float, generator: Generator) -> tuple[int, tuple[Tensor, ...]]:
        p = float(uniform(0.3, 0.7, generator))
        q = float(uniform(0.05, 0.9 * (1 - p), generator))
        s = torch.arange(N)
        left, right, stay = (s - 1).clamp(min=0), (s + 1).clamp(max=N - 1), s
        rows = [
            (s, 0, left, torch.ones(N), (s == 0) * small),  # swim left
            (s, 1, right, torch.full((N,), p), (s == N - 1) * 1.0),  # swim right: succeed
            (s, 1, stay, torch.full((N,), q), (s == N - 1) * 1.0),  # stay
            (s, 1, left, torch.full((N,), 1 - p - q), torch.zeros(N)),  # drift back
        ]
        return 2, _stack(rows)

    @staticmethod
    def _chain(N: int, small: float, generator: Generator) -> tuple[int, tuple[Tensor, ...]]:
        slip = float(uniform(0.0, 0.2, generator))
        s = torch.arange(N)
        right, zero = (s + 1).clamp(max=N - 1), torch.zeros(N, dtype=torch.long)
        end = (s == N - 1) * 1.0
        rows = [
            (s, 0, right, torch.full((N,), 1 - slip), end),  # forward
            (s, 0, zero, torch.full((N,), slip), torch.full((N,), small)),  # forward slips back
            (s, 1, zero, torch.full((N,), 1 - slip), torch.full((N,), small)),  # back
            (s, 1, right, torch.full((N,), slip), end),  # back slips forward
        ]
        return 2, _stack(rows)

    def _lock(self, N: int, small: float, generator: Generator) -> tuple[int, tuple[Tensor, ...]]:
        A = randint(2, self.max_actions, generator)
        reset_reward = small if bool(torch.rand((), generator=generator) < 0.5) else 0.0
        s = torch.arange(N)
        right = (s + 1).clamp(max=N - 1)
        rows = [(s, 0, right, torch.ones(N), (s == N - 1) * 1.0)]
        rows += [
            (s, a, torch.zeros(N, dtype=torch.long), torch.ones(N), torch.full((N,), reset_reward))
            for a in range(1, A)
        ]
        return A, _stack(rows)


def _stack(rows: list[tuple]) -> tuple[Tensor, ...]:
    """Concatenate (state, action, next, prob, reward) rows into flat tensors, dropping zero probabilities."""
    state = torch.cat([r[0] for r in rows])
    action = torch.cat([torch.full_like(r[0], r[1]) for r in rows])
    next_state = torch.cat([r[2] for r in rows])
    prob = torch.cat([r[3].double() for r in rows])
    reward = torch.cat([r[4].double() for r in rows])
    keep = prob > 0
    return state[keep], action[keep], next_state[keep], prob[keep], reward[keep]


def _shuffle_labels(num_states: int, num_actions: int, generator: Generator) -> Tensor:
    """(S, A) a random relabelling of each state's actions."""
    return torch.rand(num_states, num_actions, generator=generator).argsort(dim=1)
