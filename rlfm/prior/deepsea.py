"""Deep-sea-like exploration problems: a triangle of depth N with one rewarding corner.

The agent starts at the top-left cell (row 0, column 0) and descends one row per step. "Right" moves a
column right at a small cost; "left" moves a column left (or stays at the edge) for free. Taking "right"
at the bottom-right cell pays 1; every move from the bottom row ends the episode in an absorbing state.
Which label means "right" is drawn per state, and with probability ``flip`` an action does the other
move. Only one of the 2^N action sequences finds the reward, and every step toward it costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Generator

from rlfm.mdp import TabularMDP
from rlfm.prior.distributions import bernoulli, randint, uniform


@dataclass
class DeepSeaPrior:
    """Random deep-sea problems.

    Args:
        min_depth, max_depth: depth N; the MDP has N (N + 1) / 2 + 1 states.
        flip: range of the probability that an action does the other move (drawn for half of them).
        cost: range of the total cost of going right all the way, relative to the reward 1.
    """

    min_depth: int = 3
    max_depth: int = 12
    flip: tuple[float, float] = (0.0, 0.2)
    cost: tuple[float, float] = (0.0, 0.1)

    def sample(self, generator: Generator, gamma: float) -> TabularMDP:
        N = randint(self.min_depth, self.max_depth, generator)
        row = torch.repeat_interleave(torch.arange(N), torch.arange(1, N + 1))
        col = torch.arange(row.numel()) - row * (row + 1) // 2
        S = row.numel() + 1  # the last state is the absorbing end
        end = S - 1

        def index(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return torch.where(r >= N, torch.full_like(r, end), r * (r + 1) // 2 + c)

        go_right = index(row + 1, col + 1)
        go_left = index(row + 1, (col - 1).clamp(min=0))
        flip = float(uniform(*self.flip, generator)) if bernoulli(0.5, generator) else 0.0
        step_cost = float(uniform(*self.cost, generator)) / N
        right_label = torch.randint(0, 2, (S - 1,), generator=generator)  # which action means "right"
        cells = torch.arange(S - 1)
        states, actions, nexts, probs = [], [], [], []
        for label in (0, 1):
            intended_right = right_label == label
            main = torch.where(intended_right, go_right, go_left)
            other = torch.where(intended_right, go_left, go_right)
            for target, p in ((main, 1 - flip), (other, flip)):
                if p > 0:
                    states.append(cells)
                    actions.append(torch.full_like(cells, label))
                    nexts.append(target)
                    probs.append(torch.full((S - 1,), p, dtype=torch.float64))
        state, action, next_state, prob = (torch.cat(x) for x in (states, actions, nexts, probs))
        goes_right = (next_state == go_right[state]) & (row[state] < N - 1) | (
            (row[state] == N - 1) & (action == right_label[state])
        )
        treasure = (row[state] == N - 1) & (col[state] == N - 1) & (action == right_label[state])
        step_reward = -step_cost * goes_right + 1.0 * treasure
        sa = state * 2 + action
        reward = torch.zeros(2 * S, dtype=torch.float64).index_add_(0, sa, prob * step_reward)
        return TabularMDP.from_transitions(
            torch.full((S,), 2),
            sa,
            next_state,
            prob,
            reward,
            gamma=gamma,
            start=0,
            terminal=torch.arange(S) == end,
            name="deepsea",
            check=False,
        )
