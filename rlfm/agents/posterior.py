r"""Posterior sampling for RL (PSRL; Strens, 2000; Osband, Russo & Van Roy, 2013), discounted, re-sampled
before every episode.

Posterior of each pair (s, a), with the reward scale :math:`\hat r_{\max}` (largest observed |reward|):

- transitions: Dirichlet(:math:`N(s, a, \cdot) + \alpha_0 \mathbf 1_S`). Sampled sparsely: each observed
  successor gets weight Gamma(N(s, a, s')), the prior mass a weight Gamma(α₀ S) spread uniformly over all
  S states (exact in the total prior mass; its split over states is replaced by its mean);
- mean reward: Normal prior N(0, σ²) with noise variance σ², σ = ``sigma`` · :math:`\hat r_{\max}`:
  posterior :math:`\mathcal N\bigl(\sum r / (N + 1),\ \sigma^2 / (N + 1)\bigr)`.

An unvisited pair is a pure prior draw: reward ~ N(0, σ²) and a next state uniform over all states. The
agent acts greedily on the optimal Q of a sampled MDP; its exploitation (greedy) policy is optimal for the
posterior-mean MDP. Both are solved in one value iteration (2R union runs).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from rlfm.agents.model_based import ModelBasedAgent
from rlfm.agents.planning import EmpiricalModel, expectation, value_iteration
from rlfm.prior.distributions import log_gamma_variate


class PSRL(ModelBasedAgent):
    """PSRL; ``prior`` is α₀ (Dirichlet pseudo-count per state), ``sigma`` the reward prior's width relative
    to the observed reward scale. Grid: prior ∈ {0.01, 0.1}, sigma ∈ {0.1, 0.3, 1}."""

    name = "psrl"
    grid: ClassVar[dict[str, tuple[float, ...]]] = {"prior": (0.01, 0.1), "sigma": (0.1, 0.3, 1.0)}
    defaults: ClassVar[dict[str, float]] = {"prior": 0.1, "sigma": 0.3}
    hyperparameter_names = ("prior", "sigma")

    def solve(self, model: EmpiricalModel) -> tuple[Tensor, Tensor]:
        R, S, SA = model.runs, self.layout.num_states, self.layout.num_pairs
        prior_mass = self.params["prior"] * S  # (R, 1) α₀ S
        n = model.count
        # posterior mean
        mean_total = n + prior_mass  # (R, SA)
        mean_edges = model.edge_count / mean_total.reshape(-1)[model.edge_sa]
        mean_lump = prior_mass / mean_total
        mean_reward = model.reward_sum / (n + 1.0)
        # one posterior sample: Gamma weights normalised per pair, in log space
        log_edges = log_gamma_variate(model.edge_count, self.generator)  # (E,)
        log_lump = log_gamma_variate(prior_mass.expand(R, SA).contiguous(), self.generator)  # (R, SA)
        shift = log_lump.reshape(-1).clone().scatter_reduce_(0, model.edge_sa, log_edges, "amax")
        edge_weight = (log_edges - shift[model.edge_sa]).exp()
        lump_weight = (log_lump.reshape(-1) - shift).exp()
        total = lump_weight.clone().index_add_(0, model.edge_sa, edge_weight)
        sample_edges = edge_weight / total[model.edge_sa]
        sample_lump = (lump_weight / total).reshape(R, SA)
        sigma = self.params["sigma"] * model.scale[:, None]
        noise = torch.randn(R, SA, generator=self.generator, dtype=torch.float64)
        sample_reward = mean_reward + sigma / torch.sqrt(n + 1.0) * noise

        P = model.matrix(torch.cat([sample_edges, mean_edges]), copies=2)  # runs: samples, then means
        reward = torch.cat([sample_reward, mean_reward])
        lump = torch.cat([sample_lump, mean_lump])
        gamma = self.gamma

        def backup(values: Tensor) -> Tensor:
            spread = values.mean(dim=1, keepdim=True)  # the uniform part of the prior
            return reward + gamma * (expectation(P, values) + lump * spread)

        vmax = self.value_bound(model).squeeze(1)
        bound = torch.cat([vmax, vmax])
        terminal = torch.cat([model.terminal, model.terminal])
        q, self.values = value_iteration(backup, self.layout, gamma, terminal, bound, initial=self.values)
        return q[:R], q[R:]
