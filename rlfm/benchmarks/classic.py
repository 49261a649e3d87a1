"""Classic tabular benchmarks from the exploration literature, plus random MDP families outside the prior.

Each builder is a pure function returning a :class:`~rlfm.mdp.TabularMDP`; random ones take a ``seed`` and
are fixed by it. Rewards that depend on the outcome are stored as their expectation r(s, a), like the
reference benchmarks. The discount of each is stated in its docstring.
"""

from __future__ import annotations

import torch

from rlfm.mdp import TabularMDP
from rlfm.prior.hubs import hub_and_rooms


def riverswim(gamma: float = 0.95) -> TabularMDP:
    """RiverSwim (Strehl & Littman, 2008): a river of 6 states; actions 0 = left, 1 = right.

    Left always moves one state left (state 0 stays) and pays 5 at state 0. Right, against the current: from
    state 0 it moves right w.p. 0.3 (else stays); from states 1-4 right w.p. 0.3, stays w.p. 0.6, drifts left
    w.p. 0.1; from state 5 stays w.p. 0.3 (paying 10,000) else drifts left. Start: state 1 or 2, each w.p.
    1/2. γ = 0.95 (the paper's). The optimal policy swims right everywhere.
    """
    rows: list[tuple[int, int, int, float, float]] = [
        (s, 0, max(s - 1, 0), 1.0, 5.0 * (s == 0)) for s in range(6)
    ]
    rows += [(0, 1, 0, 0.7, 0.0), (0, 1, 1, 0.3, 0.0)]
    for s in range(1, 5):
        rows += [(s, 1, s - 1, 0.1, 0.0), (s, 1, s, 0.6, 0.0), (s, 1, s + 1, 0.3, 0.0)]
    rows += [(5, 1, 4, 0.7, 0.0), (5, 1, 5, 0.3, 10_000.0)]
    start = torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0, 0.0], dtype=torch.float64)
    return TabularMDP.from_outcomes(6, 2, rows, gamma, start, "riverswim")


SIXARMS_SUCCESS = (1.0, 0.15, 0.1, 0.05, 0.03, 0.01)
SIXARMS_REWARD = (50.0, 133.0, 300.0, 800.0, 1660.0, 6000.0)
SIXARMS_STAY = ((0, 1, 2, 3, 5), (1,), (2,), (3,), (4,), (5,))  # actions that keep the agent in room i


def sixarms(gamma: float = 0.95) -> TabularMDP:
    """SixArms (Strehl & Littman, 2008): a hub (state 0) and six rooms (states 1-6), six actions.

    From the hub, action i enters room i + 1 w.p. ``SIXARMS_SUCCESS[i]`` = (1, .15, .1, .05, .03, .01), else
    stays in the hub. In room i + 1 the actions ``SIXARMS_STAY[i]`` stay there paying
    ``SIXARMS_REWARD[i]`` = (50, 133, 300, 800, 1660, 6000) per step; any other action returns to the hub.
    Start: the hub. γ = 0.95 (the paper's). The best room is the least likely to be entered.
    """
    return hub_and_rooms(SIXARMS_SUCCESS, SIXARMS_STAY, SIXARMS_REWARD, gamma, "sixarms")


def nchain(
    length: int = 5, slip: float = 0.2, small: float = 2.0, large: float = 10.0, gamma: float = 0.99
) -> TabularMDP:
    """n-Chain (Strens, 2000): action 0 ("a") moves forward, action 1 ("b") returns to state 0 paying 2.

    Forward pays nothing except at the last state, where it stays and pays 10. With probability ``slip``
    = 0.2 the other action's effect happens instead. Start: state 0. γ = 0.99 (as usual for this chain).
    """
    rows: list[tuple[int, int, int, float, float]] = []
    last = length - 1
    for s in range(length):
        forward = (min(s + 1, last), large if s == last else 0.0)
        back = (0, small)
        for action, (intended, other) in enumerate(((forward, back), (back, forward))):
            rows += [(s, action, intended[0], 1.0 - slip, intended[1]), (s, action, other[0], slip, other[1])]
    return TabularMDP.from_outcomes(length, 2, rows, gamma, 0, f"nchain_{length}")


def deepsea(size: int = 10, move_cost: float = 0.01, seed: int = 0, gamma: float = 0.99) -> TabularMDP:
    """DeepSea (Osband et al., bsuite), deterministic: an N × N lower triangle descended one row per step.

    States are the cells (row, column ≤ row), numbered row by row, plus one absorbing end entered after
    the last row. Each cell has its own random labelling (from ``seed``) of which action moves "right"
    (column + 1, capped, costing ``move_cost / N``) and which moves "left" (column - 1, floored, free).
    Moving right from the bottom-right cell pays 1 on top. Start: the top cell. γ = 0.99 (bsuite itself is
    undiscounted with episodes of N steps). Only the all-right path of N steps finds the reward.
    """
    N = size
    cells = N * (N + 1) // 2
    end = cells
    right_label = torch.randint(0, 2, (cells,), generator=torch.Generator().manual_seed(seed))

    def index(r: int, c: int) -> int:
        return end if r >= N else r * (r + 1) // 2 + c

    rows: list[tuple[int, int, int, float, float]] = []
    for row in range(N):
        for col in range(row + 1):
            cell = index(row, col)
            right_reward = -move_cost / N + (1.0 if (row == N - 1 and col == N - 1) else 0.0)
            right = (index(row + 1, min(col + 1, row + 1)), right_reward)
            left = (index(row + 1, max(col - 1, 0)), 0.0)
            for action in (0, 1):
                target, reward = right if action == int(right_label[cell]) else left
                rows.append((cell, action, target, 1.0, reward))
    rows += [(end, a, end, 1.0, 0.0) for a in (0, 1)]
    return TabularMDP.from_outcomes(cells + 1, 2, rows, gamma, 0, f"deepsea_{size}", terminal=[end])


WALLS_10X10 = (
    "S...#.....",
    "....#.....",
    "....#..#..",
    ".......#..",
    "##.###.#..",
    "....#..##.",
    "....#.....",
    ".##.#..#..",
    "..#....#..",
    "..#....#.G",
)
WALLS_20X20 = (
    "S....#.........#....",
    ".....#.........#....",
    ".....#...###...#....",
    "...............#....",
    ".....#.....#........",
    "######.#####.###.###",
    ".....#.....#.....#..",
    "..#..#..#..#..#..#..",
    "..#.....#.....#.....",
    "..#..#..#..#..#..#..",
    "######.######.####.#",
    ".........#.........#",
    ".#####...#...#####.#",
    ".....#.......#......",
    ".....#...#...#......",
    "###.#####.#######.##",
    ".......#.......#....",
    "...#...#...#...#....",
    "...#.......#.......G",
    "...#...#...#...#....",
)
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right


def walled_gridworld(
    layout: tuple[str, ...], gamma: float = 0.99, name: str = "gridworld_walls"
) -> TabularMDP:
    """A deterministic grid world from a text map: ``S`` start, ``G`` goal, ``#`` wall, ``.`` free.

    States are the free cells, row by row; actions 0 up, 1 down, 2 left, 3 right; moving into a wall or off
    the grid stays put. Steps pay nothing; entering the goal pays 1 and the goal is absorbing. γ = 0.99.
    """
    H, W = len(layout), len(layout[0])
    if any(len(line) != W for line in layout):
        raise ValueError("every row of the layout must have the same width")
    free = [(r, c) for r in range(H) for c in range(W) if layout[r][c] != "#"]
    state = {cell: i for i, cell in enumerate(free)}
    goal = next(state[cell] for cell in free if layout[cell[0]][cell[1]] == "G")
    start = next(state[cell] for cell in free if layout[cell[0]][cell[1]] == "S")
    rows: list[tuple[int, int, int, float, float]] = []
    for (r, c), s in state.items():
        for a, (dr, dc) in enumerate(MOVES):
            target = state.get((r + dr, c + dc), s)
            rows.append((s, a, target, 1.0, 1.0 if (target == goal and s != goal) else 0.0))
    return TabularMDP.from_outcomes(len(free), 4, rows, gamma, start, name, terminal=[goal])


def cliff_grid(height: int, width: int, gamma: float = 0.99, name: str = "cliff") -> TabularMDP:
    """CliffWalking's rules on a ``height`` × ``width`` grid: start in the bottom-left corner, goal (absorbing)
    in the bottom-right, the cells between them a cliff. Every move costs 1; moving into the cliff costs 100
    and returns to the start; moving off the grid stays put. States are the non-cliff cells, row by row."""
    if height < 2 or width < 3:
        raise ValueError(f"a cliff grid needs height >= 2 and width >= 3, got {height} x {width}")
    cliff = {(height - 1, c) for c in range(1, width - 1)}
    cells = [(r, c) for r in range(height) for c in range(width) if (r, c) not in cliff]
    state = {cell: i for i, cell in enumerate(cells)}
    start, goal = state[(height - 1, 0)], state[(height - 1, width - 1)]
    rows: list[tuple[int, int, int, float, float]] = []
    for (r, c), s in state.items():
        for a, (dr, dc) in enumerate(MOVES):
            target = (r + dr, c + dc)
            if s == goal:
                rows.append((s, a, s, 1.0, 0.0))
            elif target in cliff:
                rows.append((s, a, start, 1.0, -100.0))
            else:
                rows.append((s, a, state.get(target, s), 1.0, -1.0))
    return TabularMDP.from_outcomes(len(cells), 4, rows, gamma, start, name, terminal=[goal])


def walls_10x10() -> TabularMDP:
    """10 × 10 grid with walls (:data:`WALLS_10X10`, 77 states), the goal 18 steps away. γ = 0.99."""
    return walled_gridworld(WALLS_10X10, name="gridworld_walls_10x10")


def walls_20x20() -> TabularMDP:
    """20 × 20 grid of rooms (:data:`WALLS_20X20`, 288 states), the goal 39 steps away. γ = 0.99."""
    return walled_gridworld(WALLS_20X20, name="gridworld_walls_20x20")


def garnet(
    num_states: int = 50, num_actions: int = 4, branching: int = 5, seed: int = 0, gamma: float = 0.95
) -> TabularMDP:
    """Garnet(S, A, b) (Archibald et al., 1995; Bhatnagar et al., 2009) with dense uniform rewards.

    Each pair (s, a) moves to ``branching`` distinct successors drawn uniformly, with probabilities given by
    the gaps between ``branching - 1`` uniform cut points of [0, 1]; r(s, a) ~ U(0, 1) for every pair. No
    latent geometry and no sparse reward, unlike the training prior. Start: state 0. γ = 0.95.
    """
    g = torch.Generator().manual_seed(seed)
    SA = num_states * num_actions
    successors = torch.rand(SA, num_states, generator=g).argsort(dim=1)[:, :branching]  # (SA, b)
    cuts = torch.rand(SA, branching - 1, generator=g, dtype=torch.float64).sort(dim=1).values
    edges = torch.cat(
        [torch.zeros(SA, 1, dtype=torch.float64), cuts, torch.ones(SA, 1, dtype=torch.float64)], 1
    )
    prob = edges.diff(dim=1)  # (SA, b)
    reward = torch.rand(SA, generator=g, dtype=torch.float64)
    return TabularMDP.from_transitions(
        torch.full((num_states,), num_actions),
        torch.arange(SA).repeat_interleave(branching),
        successors.reshape(-1),
        prob.reshape(-1),
        reward,
        gamma=gamma,
        start=0,
        name=f"garnet_{num_states}_{branching}",
    )


def random_dense(
    num_states: int = 20, num_actions: int = 3, seed: int = 0, gamma: float = 0.95
) -> TabularMDP:
    """Fully connected random MDP: P(·|s, a) ~ Dirichlet(1, ..., 1) over all states, r(s, a) ~ N(0, 1).

    Every pair reaches every state (the prior's out-degree is at most 6). Start: state 0. γ = 0.95.
    """
    g = torch.Generator().manual_seed(seed)
    SA = num_states * num_actions
    weights = -torch.rand(SA, num_states, generator=g, dtype=torch.float64).log()  # Exp(1) = Gamma(1)
    prob = weights / weights.sum(dim=1, keepdim=True)
    reward = torch.randn(SA, generator=g, dtype=torch.float64)
    return TabularMDP.from_transitions(
        torch.full((num_states,), num_actions),
        torch.arange(SA).repeat_interleave(num_states),
        torch.arange(num_states).repeat(SA),
        prob.reshape(-1),
        reward,
        gamma=gamma,
        start=0,
        name=f"random_dense_{num_states}",
    )
