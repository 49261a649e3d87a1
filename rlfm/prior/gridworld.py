"""Grid worlds with walls, slip, traps, distractors and goals.

Cells are states (walls are not); four moves (up, down, left, right) that stay in place at the border
or against a wall. With probability ``slip`` a move goes to one of the two perpendicular directions
instead. Each step costs c; entering a goal pays 1 and ends the episode (the goal is absorbing); entering
a trap costs up to 1 and, for absorbing traps, ends it; entering a distractor pays a small reward.

A *shortest-path* grid (drawn with probability ``shortest_path``) pays nothing at its goals and has no
distractor: every step costs, so the only good thing is to end the episode soon, as in CliffWalking. In
reward units normalised by the largest |reward|, a step there costs from a hundredth (beside a trap that
costs 1) to the whole scale (no trap).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Generator, Tensor

from rlfm.mdp import TabularMDP
from rlfm.prior.distributions import bernoulli, randint, uniform

MOVES = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])  # up, down, left, right
PERPENDICULAR = torch.tensor([[2, 3], [2, 3], [0, 1], [0, 1]])


@dataclass
class GridWorldPrior:
    """Random grid worlds.

    Args:
        min_side, max_side: height and width drawn uniformly from this range.
        wall_density: range of the fraction of cells that are walls.
        slip: range of the slip probability (drawn for half of the grids; the rest are deterministic).
        step_cost: range of the cost of every step.
        trap_density: range of the fraction of cells that are traps.
        max_goals: at most this many goals (at least one).
        distractor: probability that a grid has a small-reward distractor cell.
        shortest_path: probability that a grid's goals pay nothing and its step cost is drawn from
            ``shortest_path_cost`` instead (reaching a goal only stops the costs).
        shortest_path_cost: range of the step cost of shortest-path grids (positive).
    """

    min_side: int = 2
    max_side: int = 8
    wall_density: tuple[float, float] = (0.0, 0.25)
    slip: tuple[float, float] = (0.0, 0.4)
    step_cost: tuple[float, float] = (0.0, 0.1)
    trap_density: tuple[float, float] = (0.0, 0.15)
    max_goals: int = 2
    distractor: float = 0.3
    shortest_path: float = 0.0
    shortest_path_cost: tuple[float, float] = (0.01, 0.2)

    def __post_init__(self) -> None:
        if not 0.0 <= self.shortest_path <= 1.0:
            raise ValueError(f"shortest_path must be a probability, got {self.shortest_path}")
        low, high = self.shortest_path_cost
        if not 0.0 < low <= high:
            raise ValueError(
                f"shortest_path_cost must be a range of positive costs, got {self.shortest_path_cost}"
            )

    def sample(self, generator: Generator, gamma: float) -> TabularMDP:
        H, W = (
            randint(self.min_side, self.max_side, generator),
            randint(self.min_side, self.max_side, generator),
        )
        cells = H * W
        order = torch.randperm(cells, generator=generator)
        num_walls = min(int(float(uniform(*self.wall_density, generator)) * cells), cells - 2)
        free = torch.ones(cells, dtype=torch.bool)
        free[order[:num_walls]] = False
        free_cells = order[num_walls:]  # random order: goals, traps, start come first
        num_goals = randint(1, max(1, min(self.max_goals, free_cells.numel() - 1)), generator)
        goals = free_cells[:num_goals]
        rest = free_cells[num_goals:]
        num_traps = min(int(float(uniform(*self.trap_density, generator)) * cells), rest.numel() - 1)
        traps = rest[1 : 1 + num_traps]
        start_cell = rest[0]

        state_of_cell = torch.full((cells,), -1, dtype=torch.long)
        state_of_cell[free] = torch.arange(int(free.sum()))
        S = int(free.sum())
        enter_reward = torch.zeros(S, dtype=torch.float64)
        terminal = torch.zeros(S, dtype=torch.bool)
        shortest_path = self.shortest_path > 0 and bool(bernoulli(self.shortest_path, generator))
        enter_reward[state_of_cell[goals]] = 0.0 if shortest_path else 1.0
        terminal[state_of_cell[goals]] = True
        trap_states = state_of_cell[traps]
        enter_reward[trap_states] = -uniform(0.2, 1.0, generator, (num_traps,))
        terminal[trap_states] = bernoulli(0.5, generator, (num_traps,))
        if num_traps + 1 < rest.numel() and bernoulli(self.distractor, generator):
            bait = uniform(0.02, 0.2, generator)
            if not shortest_path:  # drawn either way, so that later draws do not depend on the kind
                enter_reward[state_of_cell[rest[-1]]] = bait

        cell = torch.nonzero(free).squeeze(1)  # (S,) cell of each state
        target = self._move_targets(cell, H, W, free)  # (S, 4) cell reached by each move
        slip = float(uniform(*self.slip, generator)) if bernoulli(0.5, generator) else 0.0
        outcome = torch.cat([target, target[:, PERPENDICULAR[:, 0]], target[:, PERPENDICULAR[:, 1]]], dim=1)
        prob = torch.tensor([1.0 - slip] * 4 + [slip / 2] * 8, dtype=torch.float64).expand(S, 12)
        sa = (torch.arange(S)[:, None] * 4 + torch.arange(4).repeat(3)[None, :]).expand(S, 12)
        next_state = state_of_cell[outcome]
        cost = float(uniform(*(self.shortest_path_cost if shortest_path else self.step_cost), generator))
        reward = -cost + torch.zeros(S * 4, dtype=torch.float64).index_add_(
            0, sa.reshape(-1), (prob * enter_reward[next_state]).reshape(-1)
        )
        return TabularMDP.from_transitions(
            torch.full((S,), 4),
            sa.reshape(-1),
            next_state.reshape(-1),
            prob.reshape(-1),
            reward,
            gamma=gamma,
            start=int(state_of_cell[start_cell]),
            terminal=terminal,
            name="gridworld",
            check=False,
        )

    @staticmethod
    def _move_targets(cell: Tensor, H: int, W: int, free: Tensor) -> Tensor:
        row, col = cell // W, cell % W
        new_row = row[:, None] + MOVES[:, 0]
        new_col = col[:, None] + MOVES[:, 1]
        inside = (new_row >= 0) & (new_row < H) & (new_col >= 0) & (new_col < W)
        target = new_row.clamp(0, H - 1) * W + new_col.clamp(0, W - 1)
        blocked = ~inside | ~free[target]
        return torch.where(blocked, cell[:, None], target)
