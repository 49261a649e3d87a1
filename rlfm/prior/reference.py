"""The published reference's random-MDP family, generalised in size, action counts and γ.

Each state has a position in a random latent geometry (a chain, the unit square or cube, or none). Each
state-action pair aims at a random point near its state and moves to one of the k states nearest that
point, k ∈ {1 .. k_max} with P(k) ∝ 1/k, with probabilities ~ Dirichlet(α), α ~ LogUniform per MDP.
Rewards are deterministic per pair: non-zero with probability p ~ Beta(2, 4), magnitude ~ Beta(2, 5),
positive with a per-MDP probability ~ U(0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Generator

from rlfm.mdp import TabularMDP, state_of_pairs
from rlfm.prior.distributions import bernoulli, beta, choice, dirichlet, log_uniform, log_uniform_int, randint

GEOMETRIES = ("chain", "plane", "space", "none")


@dataclass
class ReferencePrior:
    """Random MDPs of the reference family.

    Args:
        min_states, max_states: S ~ LogUniform(min_states, max_states) (reference: 2 and 32).
        min_actions, max_actions: actions drawn uniformly from this range (reference: 2 and 4).
        per_state_actions: probability that an MDP draws each state's action count separately.
        max_out_degree: k_max (reference: 6).
        alpha: range of the Dirichlet concentration α (reference: 0.05 to 5).
        locality: spread of an action's aim point around its state, in units of the typical spacing.
    """

    min_states: int = 2
    max_states: int = 32
    min_actions: int = 2
    max_actions: int = 4
    per_state_actions: float = 0.0
    max_out_degree: int = 6
    alpha: tuple[float, float] = (0.05, 5.0)
    locality: float = 1.0

    def sample(self, generator: Generator, gamma: float) -> TabularMDP:
        S = log_uniform_int(self.min_states, self.max_states, generator)
        if bernoulli(self.per_state_actions, generator):
            num_actions = torch.randint(self.min_actions, self.max_actions + 1, (S,), generator=generator)
        else:
            num_actions = torch.full((S,), randint(self.min_actions, self.max_actions, generator))
        SA = int(num_actions.sum())
        sa_state = state_of_pairs(num_actions)
        k_max = min(self.max_out_degree, S)
        degree_probs = 1.0 / torch.arange(1, k_max + 1, dtype=torch.float64)
        degree = torch.multinomial(degree_probs, SA, replacement=True, generator=generator) + 1  # (SA,)
        nearest = self._nearest(S, sa_state, k_max, generator)  # (SA, k_max)
        # keep the `degree` nearest, sorted by state so the transitions come out in canonical order
        successors = nearest.masked_fill(torch.arange(k_max) >= degree[:, None], S).sort(dim=1).values
        mask = successors < S
        prob = dirichlet(log_uniform(*self.alpha, generator), mask, generator)  # (SA, k_max)
        keep = bernoulli(beta(2, 4, generator), generator, (SA,))
        magnitude = beta(2, 5, generator, (SA,))
        positive = bernoulli(torch.rand((), generator=generator, dtype=torch.float64), generator, (SA,))
        reward = torch.where(positive, magnitude, -magnitude) * keep
        mask &= prob > 0  # a Dirichlet draw with tiny α can underflow to 0
        start = torch.zeros(S, dtype=torch.float64)
        start[0] = 1.0
        return TabularMDP(
            num_actions=num_actions,
            transition_sa=torch.arange(SA)[:, None].expand(SA, k_max)[mask],
            transition_next=successors[mask],
            transition_prob=prob[mask],
            reward=reward,
            start=start,
            gamma=gamma,
            terminal=torch.zeros(S, dtype=torch.bool),
            name="reference",
            check=False,
        )

    def _nearest(self, S: int, sa_state: torch.Tensor, k: int, generator: Generator) -> torch.Tensor:
        """(SA, k) the k states nearest each pair's aim point, nearest first (random order for 'none')."""
        geometry = choice(dict.fromkeys(GEOMETRIES, 1.0), generator)
        SA = sa_state.numel()
        if geometry == "none":
            return torch.rand(SA, S, generator=generator).argsort(dim=1)[:, :k]
        dim = {"chain": 1, "plane": 2, "space": 3}[geometry]
        if geometry == "chain":
            position = torch.arange(S, dtype=torch.float32)[:, None] / S
        else:
            position = torch.rand(S, dim, generator=generator)
        spacing = S ** (-1.0 / dim)
        aim = position[sa_state] + self.locality * spacing * torch.randn(SA, dim, generator=generator)
        distance = torch.cdist(aim, position)  # (SA, S)
        return distance.topk(k, dim=1, largest=False).indices
