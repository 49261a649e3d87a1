"""Multi-armed bandits: one state, several arms with noisy rewards."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Generator

from rlfm.mdp import TabularMDP
from rlfm.prior.distributions import randint, uniform


@dataclass
class BanditPrior:
    """Bandits with arm means ~ U(-1, 1) and Gaussian reward noise.

    Args:
        min_arms, max_arms: number of arms (actions of the single state).
        noise: range of the reward noise's standard deviation.
    """

    min_arms: int = 2
    max_arms: int = 8
    noise: tuple[float, float] = (0.0, 1.0)

    def sample(self, generator: Generator, gamma: float) -> TabularMDP:
        A = randint(self.min_arms, self.max_arms, generator)
        means = uniform(-1.0, 1.0, generator, (A,))
        return TabularMDP.from_transitions(
            torch.tensor([A]),
            torch.arange(A),
            torch.zeros(A, dtype=torch.long),
            torch.ones(A, dtype=torch.float64),
            means,
            gamma=gamma,
            start=0,
            reward_noise=float(uniform(*self.noise, generator)),
            name="bandit",
            check=False,
        )
