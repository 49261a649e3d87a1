"""The published reference's three benchmarks, built from their definitions (the grid builders also make
other sizes and layouts, used by the validation set in :mod:`rlfm.benchmarks.validation`).

Actions: 0 up, 1 down, 2 left, 3 right; a move off the grid stays in place. Start state 0, γ = 0.95.
"""

from __future__ import annotations

import torch

from rlfm.mdp import TabularMDP

MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right
PERPENDICULAR = ((2, 3), (2, 3), (0, 1), (0, 1))


def _step(cell: int, move: int, rows: int, cols: int) -> int:
    r, c = divmod(cell, cols)
    dr, dc = MOVES[move]
    nr, nc = r + dr, c + dc
    return nr * cols + nc if 0 <= nr < rows and 0 <= nc < cols else cell


def gridworld(size: int, gamma: float = 0.95) -> TabularMDP:
    """Deterministic size × size grid: each step pays -1, entering the goal (far corner) pays a further +10
    and the goal is absorbing with reward 0."""
    S, goal = size * size, size * size - 1
    P = torch.zeros(S, 4, S, dtype=torch.float64)
    R = torch.zeros(S, 4, dtype=torch.float64)
    for s in range(S):
        for a in range(4):
            if s == goal:
                P[s, a, s] = 1.0
                continue
            nxt = _step(s, a, size, size)
            P[s, a, nxt] = 1.0
            R[s, a] = -1.0 + (10.0 if nxt == goal else 0.0)
    return TabularMDP.from_dense(P, R, gamma=gamma, start=0, terminal=[goal], name=f"gridworld_{size}x{size}")


def frozenlake_style(
    holes: tuple[int, ...] = (5, 7, 11, 12),
    goal: int = 15,
    slip: float = 0.2,
    gamma: float = 0.95,
    size: int = 4,
    name: str = "frozenlake_4x4_slip02",
) -> TabularMDP:
    """size × size lake (default: the reference's 4 × 4): the intended move w.p. 1 - slip, each perpendicular
    move w.p. slip / 2; entering the goal pays +1 and entering a hole -1 (as expected rewards); holes and
    goal are absorbing."""
    S = size * size
    absorbing = (*holes, goal)
    P = torch.zeros(S, 4, S, dtype=torch.float64)
    R = torch.zeros(S, 4, dtype=torch.float64)
    for s in range(S):
        for a in range(4):
            if s in absorbing:
                P[s, a, s] = 1.0
                continue
            outcomes = [(a, 1.0 - slip)] + [(p, slip / 2) for p in PERPENDICULAR[a]]
            for move, prob in outcomes:
                nxt = _step(s, move, size, size)
                P[s, a, nxt] += prob
                R[s, a] += prob * (1.0 if nxt == goal else -1.0 if nxt in holes else 0.0)
    return TabularMDP.from_dense(P, R, gamma=gamma, start=0, terminal=list(absorbing), name=name)
