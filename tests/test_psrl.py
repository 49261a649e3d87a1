"""PSRL's posterior: Monte-Carlo checks of the sampled transitions and rewards against the closed forms of the
dense Dirichlet and Normal–Gamma posteriors, and the agent in the online protocol."""

import math

import pytest
import torch

from rlfm.agents import make_agent
from rlfm.agents.planning import EmpiricalModel
from rlfm.agents.posterior import (
    Transitions,
    mean_rewards,
    mean_transitions,
    reward_posterior,
    sample_rewards,
    sample_transitions,
    union_arrays,
)
from rlfm.benchmarks import get_benchmark
from rlfm.counts import Counts
from rlfm.evaluation.online import OnlineConfig, run_online
from rlfm.mdp import TabularMDP
from rlfm.solve import ActionLayout, evaluate_policy

SAMPLES = 20_000
S = 5
ALPHA = 0.5  # α₀
OBSERVED = [3, 0, 1, 0, 0]  # N(0, 0, ·); pair 1 (state 1) is unvisited


def chain_counts(rewards: list[float] | None = None) -> Counts:
    """5 states of one action each; pair 0 saw the successors OBSERVED with ``rewards``."""
    nexts = [s for s, n in enumerate(OBSERVED) for _ in range(n)]
    rewards = [0.0] * len(nexts) if rewards is None else rewards
    return Counts.empty([1] * S).update([0] * len(nexts), 0, torch.tensor(rewards), nexts)


def model_of(counts: Counts, runs: int = SAMPLES) -> EmpiricalModel:
    """``runs`` runs that share ``counts``: one posterior draw per run."""
    return EmpiricalModel.from_counts([counts] * runs, ActionLayout(counts.num_actions))


def densify(model: EmpiricalModel, law: Transitions) -> torch.Tensor:
    """(R, SA, S) the transition law's dense vectors."""
    R, S, SA = model.runs, model.layout.num_states, model.layout.num_pairs
    dense = torch.zeros(R * SA, S, dtype=torch.float64)
    dense.index_put_((model.edge_sa, model.edge_next % S), law.edges, accumulate=True)
    dense = dense.reshape(R, SA, S).scatter_add(2, law.target[..., None], law.jump[..., None])
    return dense + law.spread[..., None] / S


def assert_moments(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, sigmas: float = 4.0) -> None:
    """The sample mean and covariance of the rows of ``x`` (n, K) match ``mean``, ``cov`` within ``sigmas``
    Monte-Carlo standard errors (entrywise)."""
    n = x.shape[0]
    centred = x - x.mean(dim=0)
    products = centred[:, :, None] * centred[:, None, :]  # (n, K, K)
    mean_error = (x.mean(dim=0) - mean).abs() / (x.std(dim=0) / n**0.5)
    cov_error = (products.mean(dim=0) - cov).abs() / (products.std(dim=0) / n**0.5)
    assert mean_error.max() < sigmas, mean_error
    assert cov_error.max() < sigmas, cov_error


def test_sampled_transitions_have_the_dense_dirichlet_mean_and_covariance():
    model = model_of(chain_counts())
    prior = torch.full((SAMPLES, 1), ALPHA, dtype=torch.float64)
    law = sample_transitions(model, prior, torch.Generator().manual_seed(0))
    dense = densify(model, law)
    assert torch.allclose(dense.sum(dim=2), torch.ones(SAMPLES, S, dtype=torch.float64))
    for pair, counts in ((0, OBSERVED), (1, [0] * S)):  # visited and unvisited
        alpha = torch.tensor(counts, dtype=torch.float64) + ALPHA
        mean = alpha / alpha.sum()
        cov = (torch.diag(mean) - mean[:, None] * mean[None, :]) / (alpha.sum() + 1.0)
        assert_moments(dense[:, pair], mean, cov)
        assert torch.allclose(densify(model, mean_transitions(model, prior))[0, pair], mean)
    # the jump is what carries the prior's variance: without it (all prior mass spread uniformly, as a
    # mean-field draw would do) the unobserved successors' variance is far too small
    spread_only = law._replace(jump=torch.zeros_like(law.jump), spread=law.spread + law.jump)
    alpha = torch.tensor(OBSERVED, dtype=torch.float64) + ALPHA
    mean = alpha / alpha.sum()
    assert densify(model, spread_only)[:, 0, 1].var() < 0.5 * mean[1] * (1 - mean[1]) / (alpha.sum() + 1)


def reward_counts(rewards: list[float]) -> Counts:
    """2 states of one action each; pair 0 saw ``rewards`` (each back to state 0), pair 1 is unvisited."""
    return Counts.empty([1, 1]).update(0, 0, torch.tensor(rewards), 0)


def test_counts_accumulate_squared_rewards():
    counts = reward_counts([2.0, -1.0]).update(1, 0, 0.5, 0)
    assert counts.reward_sq_sum.tolist() == [5.0, 0.25]
    copy = counts.copy()
    counts.update(0, 0, 3.0, 1)
    assert counts.reward_sq_sum.tolist() == [14.0, 0.25] and copy.reward_sq_sum.tolist() == [5.0, 0.25]
    assert Counts.empty([2, 1]).reward_sq_sum.tolist() == [0.0] * 3
    built = Counts(counts.num_actions, counts.sa_count, counts.reward_sum)  # without it: zeros
    assert built.reward_sq_sum.tolist() == [0.0, 0.0]
    model = EmpiricalModel.from_counts([counts, copy], ActionLayout(counts.num_actions))
    assert model.reward_sq_sum.tolist() == [[14.0, 0.25], [5.0, 0.25]]
    counts.validate()
    counts.reward_sq_sum = torch.tensor([1.0, -1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="reward_sq_sum must hold non-negative numbers"):
        counts.validate()


def test_sampled_rewards_have_the_normal_gamma_posterior_mean_and_variance():
    rewards = [2.0, -1.0, 0.5, 2.0, 1.5, 0.0, -0.5, 1.0]  # pair 0; scale r̂_max = 2
    model = model_of(reward_counts(rewards))
    kappa0 = 0.5
    reward_prior = torch.full((SAMPLES, 1), kappa0, dtype=torch.float64)
    draws = sample_rewards(model, reward_prior, torch.Generator().manual_seed(1))
    # the closed forms, in units of r̂_max: y = r / 2, prior μ₀ = 0, a₀ = 1, b₀ = κ₀ / 4
    y = torch.tensor(rewards, dtype=torch.float64) / 2.0
    n, y_bar = len(rewards), y.mean().item()
    kappa = kappa0 + n
    mu = n * y_bar / kappa
    a = 1.0 + n / 2
    b = kappa0 / 4 + ((y - y_bar) ** 2).sum().item() / 2 + kappa0 * n * y_bar**2 / (2 * kappa)
    post = reward_posterior(model, reward_prior)
    assert [p[0, 0].item() for p in post] == pytest.approx([mu, kappa, a, b])
    # μ is Student-t with 2 aₙ = 10 degrees of freedom: E[μ] = μₙ, Var[μ] = bₙ / (κₙ (aₙ − 1))
    mean, var = mu * 2.0, b / (kappa * (a - 1)) * 4.0
    assert_moments(draws[:, 0, None], torch.tensor([mean]), torch.tensor([[var]]))
    assert mean_rewards(model, reward_prior)[0, 0].item() == pytest.approx(mean)
    assert mean_rewards(model, reward_prior)[0, 1].item() == 0.0
    # the unvisited pair is ½ t₂ r̂_max (infinite variance): centred at 0, median |μ| = ½ √(2/3) r̂_max
    unvisited = draws[:, 1]
    assert unvisited.median().abs() < 0.03
    assert unvisited.abs().median().item() == pytest.approx(0.5 * math.sqrt(2 / 3) * 2.0, rel=0.05)


@pytest.mark.parametrize("kappa0", [1.0, 0.1])
@pytest.mark.parametrize("y", [0.0, -0.5, -1.0])
def test_deterministic_rewards_stop_being_sampled_widely(kappa0, y):
    """After 20 equal rewards y r̂_max the draws' std is √(bₙ / (κₙ (aₙ − 1))) r̂_max ≈ √(κ₀ (½ + y²)) / 20 r̂_max:
    at most 0.059 r̂_max (κ₀ = 1, y = ±1), against 0.21 r̂_max under the Beta posterior for y = 0 (a coin flip
    between ±r̂_max); an unvisited pair's draws are spread over about r̂_max."""
    scale, n = 2.0, 20
    counts = Counts.empty([1, 1, 1]).update(0, 0, torch.full((n,), y * scale), 0).update(2, 0, scale, 0)
    model = model_of(counts)
    reward_prior = torch.full((SAMPLES, 1), kappa0, dtype=torch.float64)
    draws = sample_rewards(model, reward_prior, torch.Generator().manual_seed(4))
    kappa, a = kappa0 + n, 1.0 + n / 2
    b = kappa0 / 4 + kappa0 * n * y**2 / (2 * kappa)
    std = math.sqrt(b / (kappa * (a - 1)))
    assert draws[:, 0].std().item() == pytest.approx(std * scale, rel=0.05)
    assert draws[:, 0].mean().item() == pytest.approx(y * scale * n / kappa, abs=0.01 * scale)
    assert std < (0.05 if abs(y) <= 0.5 else 0.07)
    quartiles = torch.quantile(draws[:, 1], torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert 0.6 * scale < (quartiles[1] - quartiles[0]).item() < 1.2 * scale  # ½ t₂: 0.82 r̂_max


def test_an_unvisited_pair_leads_to_a_random_value_with_the_mean_value_as_mean():
    model = model_of(chain_counts())
    prior = torch.full((SAMPLES, 1), ALPHA, dtype=torch.float64)
    law = sample_transitions(model, prior, torch.Generator().manual_seed(2))
    values = torch.tensor([0.0, 1.0, -2.0, 5.0, 3.0], dtype=torch.float64)
    next_value = densify(model, law)[:, 1] @ values  # pair 1 is unvisited
    expected_var = values.var(correction=0) / (ALPHA * S + 1)  # Vᵀ Cov(Dir(α₀ 1)) V
    assert next_value.var() > 0.5 * expected_var
    assert_moments(next_value[:, None], values.mean()[None], expected_var[None, None])


def test_the_agent_plans_on_the_sampled_mdp():
    """The sampled Q is the optimal Q of the densified draw (the same generator state gives the same draw)."""
    mdp = get_benchmark("gridworld_3x3")
    counts = Counts.empty_like(mdp).update([0, 0, 1, 3, 3], [3, 3, 1, 3, 0], -1.0, [1, 1, 4, 4, 0])
    runs = 4
    generator = torch.Generator().manual_seed(3)
    agent = make_agent("psrl", prior=[0.01, 0.1, 1.0, 1.0], reward_prior=[1.0, 1.0, 0.5, 1.0])
    agent.start(mdp.num_actions, mdp.gamma, runs, generator)
    model = model_of(counts, runs)
    state = generator.get_state()
    q_sample, _ = agent.solve(model)
    generator.set_state(state)
    law = sample_transitions(model, agent.params["prior"], generator)
    reward = sample_rewards(model, agent.params["reward_prior"], generator)
    P = densify(model, law)
    values = torch.zeros(runs, mdp.num_states, dtype=torch.float64)
    for _ in range(700):  # 0.95^700 < 1e-15
        q = reward + mdp.gamma * (P @ values[:, :, None]).squeeze(2)
        values = agent.layout.state_max(q).masked_fill(model.terminal, 0.0)
    assert torch.allclose(q_sample, q, atol=1e-4)


def test_the_sampled_models_evaluate_policies_exactly():
    """The sparse union of the sampled models (edges, jump, uniform spread) evaluates a policy as the dense
    draw does: the exact values that the value iteration's policy-evaluation jumps use."""
    mdp = get_benchmark("gridworld_3x3")
    counts = Counts.empty_like(mdp).update([0, 0, 1, 3, 3], [3, 3, 1, 3, 0], -1.0, [1, 1, 4, 4, 0])
    runs, gamma = 3, 0.99
    generator = torch.Generator().manual_seed(5)
    model = model_of(counts, runs)
    law = sample_transitions(model, torch.tensor([[0.01], [0.1], [1.0]]), generator)
    reward = torch.randn(runs, model.layout.num_pairs, generator=generator, dtype=torch.float64)
    union = union_arrays(model, model.matrix(law.edges), law.jump, law.target, reward, gamma)
    policy = model.layout.uniform(runs)
    values = evaluate_policy(union, policy.reshape(-1), spread=law.spread.reshape(-1)).reshape(runs, -1)
    P = densify(model, law)  # (R, SA, S)
    for run in range(runs):
        P_pi = torch.zeros(mdp.num_states, mdp.num_states, dtype=torch.float64).index_add_(
            0, model.layout.sa_state, policy[run, :, None] * P[run]
        )
        r_pi = model.layout.policy_mean(reward[run : run + 1], policy[run])[0]
        exact = torch.linalg.solve(torch.eye(mdp.num_states, dtype=torch.float64) - gamma * P_pi, r_pi)
        torch.testing.assert_close(values[run], exact)


def test_psrl_runs_online_reproducibly_on_a_tiny_mdp():
    P = torch.zeros(2, 2, 2, dtype=torch.float64)
    P[0, 0, 0] = P[0, 1, 1] = P[1, :, 1] = 1.0  # state 0: stay (0.05) or end (1)
    R = torch.tensor([[0.05, 1.0], [0.0, 0.0]], dtype=torch.float64)
    mdp = TabularMDP.from_dense(P, R, gamma=0.9, terminal=[1])
    runs = [
        run_online(
            mdp, make_agent("psrl"), 3, OnlineConfig(episodes=12, horizon=5), torch.Generator().manual_seed(0)
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0].scores, runs[1].scores) and torch.equal(runs[0].regret, runs[1].regret)
    assert (runs[0].scores[:, -1] > 0.999).all()


def test_psrl_converges_on_gridworld_with_the_default_setting():
    """Measured: every seed converged by episode 20 (seeds 1, 2: by 19, 24); bound 32."""
    mdp = get_benchmark("gridworld_3x3")
    run = run_online(mdp, make_agent("psrl"), 8, OnlineConfig(episodes=40), torch.Generator().manual_seed(0))
    episodes = run.episodes_to_converge(OnlineConfig())
    assert all(e is not None and e <= 32 for e in episodes), episodes
    assert (run.scores[:, -1] > 0.99).all()
