r"""Posterior sampling for RL (PSRL; Strens, 2000; Osband, Russo & Van Roy, 2013), discounted, re-sampled
before every episode.

Posterior of each pair (s, a), from n = N(s, a), the successor counts N(s, a, ·) and the sums of the
rewards and of their squares, with the reward scale :math:`\hat r_{\max}` (the largest observed |reward|, 1
before any):

- transitions: Dirichlet(:math:`N(s, a, \cdot) + \alpha_0 \mathbf 1_S`). Drawn as Gamma(N(s, a, s')) for
  each observed successor and Gamma(α₀ S) for the prior's lump, normalised per pair, that is

  .. math::
      P = (1 - B)\, q + B\, w, \qquad q \sim \mathrm{Dir}\bigl(N(s, a, \cdot)\bigr) \text{ (observed
      successors)}, \quad B \sim \mathrm{Beta}(\alpha_0 S, n), \quad w \sim \mathrm{Dir}(\alpha_0 \mathbf 1_S),

  all independent. The dense w is replaced by one successor J drawn uniformly from the S states plus a
  uniform spread,

  .. math::
      w' = \lambda\, e_J + (1 - \lambda) \tfrac1S \mathbf 1, \qquad \lambda = 1 / \sqrt{\alpha_0 S + 1},

  which has w's mean :math:`\tfrac1S \mathbf 1` and covariance
  :math:`(\tfrac1S I - \tfrac1{S^2} \mathbf 1 \mathbf 1^\top) / (\alpha_0 S + 1)`; as P is linear in w, the
  sampled P has exactly the posterior's mean and covariance while staying sparse (one extra edge per pair);
- mean reward: in units of the scale, :math:`y = r / \hat r_{\max}`, each pair's rewards are modelled as
  :math:`\mathcal N(\mu, 1/\rho)` with the Normal–Gamma prior

  .. math::
      \rho \sim \mathrm{Gamma}(a_0, \text{rate } b_0), \qquad \mu \mid \rho \sim \mathcal N\bigl(0,
      1 / (\kappa_0 \rho)\bigr), \qquad a_0 = 1, \quad b_0 = \kappa_0 / 4,

  κ₀ the pseudo-count ``reward_prior``. b₀ is chosen so that the prior mean reward, marginally
  :math:`\mu \sim \sqrt{b_0 / (a_0 \kappa_0)}\, t_{2 a_0} = \tfrac12 t_2`, has about the spread of a uniform
  draw on [−1, 1]: quartiles ±0.41 and E|μ| = 0.71 (uniform: ±0.5 and 0.5), whatever κ₀. After n rewards
  with mean ȳ and sum of squared deviations :math:`S_2 = \sum y^2 - n \bar y^2` (clamped at 0 against
  rounding; :math:`\sum y^2` is capped at n, as |y| ≤ 1),

  .. math::
      \kappa_n = \kappa_0 + n, \quad \mu_n = \frac{n \bar y}{\kappa_n}, \quad a_n = a_0 + \frac n2, \quad
      b_n = b_0 + \frac{S_2}2 + \frac{\kappa_0 n \bar y^2}{2 \kappa_n},

  and a draw is :math:`\rho \sim \mathrm{Gamma}(a_n, \text{rate } b_n)`,
  :math:`\mu \sim \mathcal N\bigl(\mu_n, 1 / (\kappa_n \rho)\bigr)`, :math:`r = \mu\, \hat r_{\max}`.
  Marginally :math:`\mu \sim \mu_n + \sqrt{b_n / (a_n \kappa_n)}\, t_{2 a_n}`, of variance
  :math:`b_n / (\kappa_n (a_n - 1))`: for n equal rewards (S₂ = 0) its standard deviation is about
  :math:`\sqrt{2 b_0 + \kappa_0 \bar y^2} / n`, shrinking as 1/n where a bounded-reward (Beta) posterior's
  shrinks as :math:`1/\sqrt n`; observed noise (S₂ > 0) keeps it at the usual
  :math:`\approx \hat\sigma / \sqrt n`.

An unvisited pair is a pure prior draw: reward :math:`\tfrac12 t_2\, \hat r_{\max}`, next state J w.p. λ, else
uniform over all states. The agent acts greedily on the optimal Q of a sampled MDP; its exploitation (greedy)
policy is optimal for the posterior-mean MDP,

.. math::
    \bar P(s' \mid s, a) = \frac{N(s, a, s') + \alpha_0}{n + \alpha_0 S}, \qquad
    \bar r(s, a) = \mu_n \hat r_{\max} = \frac{\sum r}{\kappa_0 + n}.

Both are solved in one value iteration (2R union runs) that jumps to the exact values of its greedy policies
(:func:`union_arrays`, the uniform spread kept exact by :func:`rlfm.solve.evaluate_policy`).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Generator, Tensor

from rlfm.agents.model_based import ModelBasedAgent
from rlfm.agents.planning import EmpiricalModel
from rlfm.prior.distributions import log_gamma_variate
from rlfm.solve import MDPArrays, evaluate_policy, expectation, value_iteration


class Transitions(NamedTuple):
    """A transition law for every pair in sparse pieces: weight ``edges`` (E,) on the model's observed edges,
    ``jump`` (R, SA) on the local successor ``target`` (R, SA), and ``spread`` (R, SA) spread uniformly over
    all S states."""

    edges: Tensor
    jump: Tensor
    target: Tensor
    spread: Tensor


def sample_transitions(model: EmpiricalModel, prior: Tensor, generator: Generator) -> Transitions:
    """One draw of each pair's P from Dirichlet(N(s, a, ·) + α₀ 1) in the sparse form above; ``prior`` (R, 1)
    is α₀."""
    R, S, SA = model.runs, model.layout.num_states, model.layout.num_pairs
    log_edges = log_gamma_variate(model.edge_count, generator)  # (E,)
    log_lump = log_gamma_variate((prior * S).expand(R, SA).contiguous(), generator).reshape(-1)
    shift = log_lump.clone().scatter_reduce_(0, model.edge_sa, log_edges, "amax")  # normalise in log space
    edges = (log_edges - shift[model.edge_sa]).exp()
    lump = (log_lump - shift).exp()
    total = lump.clone().index_add_(0, model.edge_sa, edges)
    lump_share = (lump / total).reshape(R, SA)  # B
    jump = lump_share * torch.rsqrt(prior * S + 1.0)  # λ B
    target = torch.randint(S, (R, SA), generator=generator)
    return Transitions(edges / total[model.edge_sa], jump, target, lump_share - jump)


def mean_transitions(model: EmpiricalModel, prior: Tensor) -> Transitions:
    """The posterior mean (N(s, a, s') + α₀) / (n + α₀ S) in the same form (no jump)."""
    total = model.count + prior * model.layout.num_states  # (R, SA)
    edges = model.edge_count / total.reshape(-1)[model.edge_sa]
    zeros = torch.zeros_like(total)
    return Transitions(edges, zeros, zeros.long(), (prior * model.layout.num_states) / total)


REWARD_PRIOR_SHAPE = 1.0  # a₀
REWARD_PRIOR_RATE = 0.25  # b₀ / κ₀: the prior mean reward is ½ t₂ in units of r̂_max


class RewardPosterior(NamedTuple):
    """The Normal–Gamma posterior of each pair's mean reward in units of r̂_max, (R, SA) each: μₙ, κₙ, aₙ
    and the rate bₙ."""

    mean: Tensor
    count: Tensor
    shape: Tensor
    rate: Tensor


def reward_posterior(model: EmpiricalModel, reward_prior: Tensor) -> RewardPosterior:
    """The posterior above from n, Σy and Σy²; ``reward_prior`` (R, 1) is κ₀."""
    n, scale = model.count, model.scale[:, None]
    total = model.reward_sum / scale  # Σy
    mean = total / n.clamp(min=1.0)  # ȳ, 0 where unvisited
    squares = (model.reward_sq_sum / scale / scale).minimum(n)  # Σy² ≤ n (also when Σr² overflowed)
    deviations = (squares - total * mean).clamp(min=0.0)  # S₂
    count = reward_prior + n
    rate = reward_prior * REWARD_PRIOR_RATE + deviations / 2.0 + reward_prior * n * mean**2 / (2.0 * count)
    return RewardPosterior(total / count, count, REWARD_PRIOR_SHAPE + n / 2.0, rate)


def sample_rewards(model: EmpiricalModel, reward_prior: Tensor, generator: Generator) -> Tensor:
    """(R, SA) one draw of each pair's mean reward μ r̂_max: ρ ~ Gamma(aₙ, rate bₙ), μ ~ N(μₙ, 1 / (κₙ ρ))."""
    post = reward_posterior(model, reward_prior)
    log_precision = log_gamma_variate(post.shape, generator) - post.rate.log() + post.count.log()  # log κₙ ρ
    noise = torch.randn(post.mean.shape, generator=generator, dtype=torch.float64)
    return (post.mean + noise * torch.exp(-0.5 * log_precision)) * model.scale[:, None]


def mean_rewards(model: EmpiricalModel, reward_prior: Tensor) -> Tensor:
    """(R, SA) the posterior mean reward μₙ r̂_max = Σr / (κ₀ + n)."""
    return reward_posterior(model, reward_prior).mean * model.scale[:, None]


class PSRL(ModelBasedAgent):
    """PSRL; ``prior`` is α₀ (Dirichlet pseudo-count per state), ``reward_prior`` κ₀ (the Normal–Gamma prior's
    pseudo-count on the mean reward). Grid: prior ∈ {0.01, 0.1, 1}, reward_prior ∈ {0.1, 1}."""

    name = "psrl"
    grid: ClassVar[dict[str, tuple[float, ...]]] = {"prior": (0.01, 0.1, 1.0), "reward_prior": (0.1, 1.0)}
    defaults: ClassVar[dict[str, float]] = {"prior": 0.1, "reward_prior": 1.0}
    hyperparameter_names = ("prior", "reward_prior")

    def solve(self, model: EmpiricalModel) -> tuple[Tensor, Tensor]:
        R = model.runs
        prior, reward_prior = self.params["prior"], self.params["reward_prior"]
        sample, mean = sample_transitions(model, prior, self.generator), mean_transitions(model, prior)
        # union runs: the samples, then the posterior means
        P = model.matrix(torch.cat([sample.edges, mean.edges]), copies=2)
        jump = torch.cat([sample.jump, mean.jump])
        target = torch.cat([sample.target, mean.target])
        spread = torch.cat([sample.spread, mean.spread])
        reward = torch.cat(
            [sample_rewards(model, reward_prior, self.generator), mean_rewards(model, reward_prior)]
        )
        gamma = self.gamma

        def backup(values: Tensor) -> Tensor:
            prior_part = jump * values.gather(1, target) + spread * values.mean(dim=1, keepdim=True)
            return reward + gamma * (expectation(P, values) + prior_part)

        vmax = self.value_bound(model)
        threshold = self.threshold(torch.cat([vmax, vmax]))
        terminal = torch.cat([model.terminal, model.terminal])
        union = union_arrays(model, P, jump, target, reward, gamma)
        acting = ~terminal[:, self.layout.sa_state]  # (2R, SA) pairs of states not held at 0

        def evaluate(q: Tensor) -> Tensor:  # the exact values of q's greedy policies in the 2R models
            policy = self.layout.greedy_policy(q) * acting
            return evaluate_policy(union, policy.reshape(-1), spread=spread.reshape(-1)).reshape(2 * R, -1)

        q, self.values = value_iteration(
            backup, self.layout, threshold, terminal=terminal, initial=self.values, evaluate=evaluate
        )
        return q[:R], q[R:]


def union_arrays(
    model: EmpiricalModel, matrix: Tensor, jump: Tensor, target: Tensor, reward: Tensor, gamma: float
) -> MDPArrays:
    """The 2R models of :meth:`PSRL.solve` as one disjoint union for :func:`~rlfm.solve.evaluate_policy`:
    the observed edges' weights ``matrix`` (2R·SA, 2R·S, sparse CSR) and one edge of weight ``jump`` (2R, SA)
    from each pair to its ``target`` (2R, SA); the uniform spread is passed to the evaluation separately."""
    copies, (S, SA) = jump.shape[0], (model.layout.num_states, model.layout.num_pairs)
    union = matrix.to_sparse_coo().coalesce()
    edge_sa, edge_next = union.indices()
    run = torch.arange(copies)
    pairs = torch.arange(copies * SA)
    return MDPArrays(
        sa_state=(run[:, None] * S + model.layout.sa_state).reshape(-1),
        edge_sa=torch.cat([edge_sa, pairs]),
        edge_next=torch.cat([edge_next, (target + run[:, None] * S).reshape(-1)]),
        prob=torch.cat([union.values(), jump.reshape(-1)]),
        reward=reward.reshape(-1),
        gamma=torch.full((copies,), gamma, dtype=torch.float64),
        state_graph=run.repeat_interleave(S),
        sa_graph=run.repeat_interleave(SA),
        num_states=copies * S,
    )
