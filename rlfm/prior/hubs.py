"""Hubs with rooms behind rare-success doors: the best reward is behind the least likely transition.

State 0 is a hub with A actions; action i tries the door of room i and gets through with probability
p_i ~ LogUniform(min_success, 1), else stays in the hub (p_i = 1 for one door in half of the hubs, so a
safe room exists). In room i a random non-empty subset of the actions stays there and pays R_i per step;
every other action leads back to the hub and pays nothing. Room rewards span orders of magnitude,
R_i ∝ LogUniform(1, max_ratio) scaled so that the largest is 1, and in half of the hubs the rarest door
hides the largest reward. An agent learns such an MDP only if it keeps trying the doors that almost never
open and, once it has seen a large reward, goes back for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Generator

from rlfm.mdp import TabularMDP
from rlfm.prior.distributions import bernoulli, log_uniform, randint, uniform


@dataclass
class HubPrior:
    """Random hub-and-rooms MDPs.

    Args:
        min_rooms, max_rooms: number of rooms, which is also the number A of actions of every state.
        min_success: smallest probability of getting through a door.
        max_ratio: largest ratio between two rooms' rewards.
    """

    min_rooms: int = 2
    max_rooms: int = 8
    min_success: float = 0.005
    max_ratio: float = 1000.0

    def sample(self, generator: Generator, gamma: float) -> TabularMDP:
        A = randint(self.min_rooms, self.max_rooms, generator)
        success = log_uniform(self.min_success, 1.0, generator, (A,))
        if bernoulli(0.5, generator):
            success[randint(0, A - 1, generator)] = 1.0
        reward = log_uniform(1.0, self.max_ratio, generator, (A,))
        reward = reward / reward.max()
        if bernoulli(0.5, generator):  # the rarest door hides the largest reward
            reward[success.argsort()] = reward.sort(descending=True).values
        stays = torch.rand(A, A, generator=generator, dtype=torch.float64) < uniform(0.1, 0.5, generator)
        stays[torch.arange(A), torch.randint(A, (A,), generator=generator)] = True  # at least one per room
        stay = tuple(tuple(torch.nonzero(row).flatten().tolist()) for row in stays)
        return hub_and_rooms(tuple(success.tolist()), stay, tuple(reward.tolist()), gamma, "hub")


def hub_and_rooms(
    success: tuple[float, ...],
    stay: tuple[tuple[int, ...], ...],
    reward: tuple[float, ...],
    gamma: float,
    name: str,
) -> TabularMDP:
    """A hub (state 0, the start) and A = ``len(success)`` rooms, A actions everywhere: from the hub,
    action i enters room i + 1 w.p. ``success[i]``, else stays; in room i + 1 the actions ``stay[i]`` stay
    and pay ``reward[i]``, the others return to the hub and pay nothing."""
    A = len(success)
    rows = [(0, i, i + 1, p, 0.0) for i, p in enumerate(success)]
    rows += [(0, i, 0, 1.0 - p, 0.0) for i, p in enumerate(success) if p < 1.0]
    rows += [
        (i + 1, a, i + 1, 1.0, r) if a in kept else (i + 1, a, 0, 1.0, 0.0)
        for i, (kept, r) in enumerate(zip(stay, reward, strict=True))
        for a in range(A)
    ]
    return TabularMDP.from_outcomes(A + 1, A, rows, gamma, start=0, name=name)
