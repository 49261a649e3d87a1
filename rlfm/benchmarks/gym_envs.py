"""Gymnasium's tabular environments as exact MDPs (through :func:`rlfm.environments.mdp_from_gymnasium`).

Rewards become their expectation per (s, a); terminating outcomes become absorbing states. γ = 0.99 for all
of them, as is customary in the gymnasium literature.
"""

from __future__ import annotations

import gymnasium as gym

from rlfm.environments import mdp_from_gymnasium
from rlfm.mdp import TabularMDP

GYM_GAMMA = 0.99


def frozenlake(map_name: str = "4x4", gamma: float = GYM_GAMMA) -> TabularMDP:
    """``FrozenLake-v1``, slippery: the intended move w.p. 1/3, each perpendicular one w.p. 1/3 (slip 2/3).

    Reaching the goal pays 1; holes and the goal end the episode. Start: the top-left cell. γ = 0.99.
    ``map_name`` is ``"4x4"`` (16 states) or ``"8x8"`` (64 states).
    """
    env = gym.make("FrozenLake-v1", map_name=map_name, is_slippery=True)
    return mdp_from_gymnasium(env, gamma=gamma, name=f"frozenlake_{map_name}_slip067")


def cliffwalking(gamma: float = GYM_GAMMA) -> TabularMDP:
    """``CliffWalking-v1``: 4 × 12 grid, -1 per step, -100 and back to the start for stepping into the cliff;
    the goal ends the episode. 48 states, 4 actions. γ = 0.99."""
    return mdp_from_gymnasium(gym.make("CliffWalking-v1"), gamma=gamma, name="cliffwalking")


def taxi(gamma: float = GYM_GAMMA) -> TabularMDP:
    """``Taxi-v4``: 500 states, 6 actions; -1 per step, -10 for an illegal pick-up or drop-off, +20 for a
    delivery, which ends the episode. Start: uniform over gymnasium's 300 initial states. γ = 0.99."""
    return mdp_from_gymnasium(gym.make("Taxi-v4"), gamma=gamma, name="taxi")
