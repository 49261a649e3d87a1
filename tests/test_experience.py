import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch

from rlfm.benchmarks.reference import gridworld
from rlfm.counts import Counts
from rlfm.experience import ExperienceConfig, sample_experience
from rlfm.graph import mdp_graph
from rlfm.mdp import TabularMDP
from rlfm.prior import Prior, reference_prior
from rlfm.solve import optimal_values


def sample(mdps, config, seed=0):
    batch = Batch.from_data_list([mdp_graph(m) for m in mdps])
    q, _ = optimal_values(batch, tol=1e-6)
    return sample_experience(batch, q, config, torch.Generator().manual_seed(seed))


def test_counts_updates_single_and_batched():
    counts = Counts.empty([2, 1, 3])
    counts.update(0, 1, 2.0, 2)
    counts.update(
        torch.tensor([0, 0, 2]),
        torch.tensor([1, 1, 0]),
        torch.tensor([4.0, -6.0, 1.0]),
        torch.tensor([2, 1, 1]),
        torch.tensor([False, False, True]),
    )
    assert counts.sa_count.tolist() == [0, 3, 0, 1, 0, 0]
    assert counts.mean_reward[1] == pytest.approx(0.0)
    assert counts.transition_sa.tolist() == [1, 1, 3] and counts.transition_next.tolist() == [1, 2, 1]
    assert counts.transition_count.tolist() == [1, 2, 1]
    assert counts.p_hat.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert counts.terminal.tolist() == [False, True, False]
    assert counts.reward_scale == 6.0 and counts.num_observed == 4
    with pytest.raises(ValueError, match="out of range"):
        counts.update(1, 1, 0.0, 0)


def random_experience(test):
    """Run ``test(seed, steps)`` on 25 draws of a seed and a number of transitions (0 to 60)."""
    draws = given(seed=st.integers(0, 2**31 - 1), steps=st.integers(0, 60))
    return settings(max_examples=25, deadline=None)(draws(test))


def random_counts(seed: int, steps: int) -> Counts:
    """``steps`` random transitions of the 3×3 grid's shape, Gaussian rewards, some ending an episode."""
    mdp, g = gridworld(3), torch.Generator().manual_seed(seed)
    states, next_states = (torch.randint(0, mdp.num_states, (steps,), generator=g) for _ in range(2))
    actions = torch.randint(0, 4, (steps,), generator=g)
    rewards = torch.randn(steps, generator=g, dtype=torch.float64)
    return Counts.empty_like(mdp).update(states, actions, rewards, next_states, rewards > 1)


@random_experience
def test_a_bootstrap_of_the_counts_is_consistent_and_keeps_the_mean_rewards(seed, steps):
    counts = random_counts(seed, steps)
    before = counts.copy()
    resampled = counts.bootstrap(torch.Generator().manual_seed(seed))
    resampled.validate()  # every stored successor kept at least once, visits the sum of its successors
    assert torch.equal(counts.sa_count, before.sa_count)  # the original is untouched
    kept = resampled.sa_count > 0
    assert set(resampled.transition_key.tolist()) <= set(counts.transition_key.tolist())
    assert torch.allclose(resampled.mean_reward[kept], counts.mean_reward[kept])
    assert (resampled.reward_sum[~kept] == 0).all() and torch.equal(resampled.terminal, counts.terminal)


def test_a_bootstrap_resamples_around_the_observed_counts():
    counts = Counts.empty_like(gridworld(3)).update([0] * 400, [1] * 400, 1.0, [1] * 300 + [3] * 100)
    draws = [counts.bootstrap(torch.Generator().manual_seed(k)) for k in range(200)]
    visits = torch.tensor([float(d.sa_count[1]) for d in draws])
    assert abs(float(visits.mean()) - 400) < 10 and 10 < float(visits.std()) < 30  # Poisson(400): sd 20
    assert len({int(d.transition_count[0]) for d in draws}) > 20


@random_experience
def test_a_split_of_the_counts_adds_up_to_them_and_keeps_the_mean_rewards(seed, steps):
    counts = random_counts(seed, steps)
    before = counts.copy()
    halves = counts.split(torch.Generator().manual_seed(seed))
    for half in halves:
        half.validate()
        kept = half.sa_count > 0
        assert torch.allclose(half.mean_reward[kept], counts.mean_reward[kept])
        assert torch.equal(half.terminal, counts.terminal) and half.max_abs_reward == counts.max_abs_reward
    assert torch.equal(halves[0].sa_count + halves[1].sa_count, counts.sa_count)
    assert torch.allclose(halves[0].reward_sum + halves[1].reward_sum, counts.reward_sum)
    total = torch.zeros(counts.num_state_actions * counts.num_states, dtype=torch.long)
    for half in halves:
        total.index_add_(0, half.transition_key, half.transition_count)
    assert torch.equal(total[counts.transition_key], counts.transition_count)
    assert torch.equal(counts.sa_count, before.sa_count)  # the original is untouched


def test_a_split_halves_each_count_about_evenly():
    counts = Counts.empty_like(gridworld(3)).update([0] * 400, [1] * 400, 1.0, [1] * 300 + [3] * 100)
    first = torch.tensor(
        [float(counts.split(torch.Generator().manual_seed(k))[0].sa_count[1]) for k in range(200)]
    )
    assert abs(float(first.mean()) - 200) < 3 and 6 < float(first.std()) < 14  # Binomial(400, 1/2): sd 10


def test_generative_sampler_estimates_the_model():
    mdp = reference_prior().sample(torch.Generator().manual_seed(5))
    config = ExperienceConfig(weights={"generative": 1.0}, rate=(2000.0, 2000.0))
    counts = sample([mdp], config)[0]
    assert abs(counts.sa_count.double().mean() - 2000) < 50
    p_true = {
        (int(s), int(n)): float(p)
        for s, n, p in zip(mdp.transition_sa, mdp.transition_next, mdp.transition_prob, strict=True)
    }
    for s, n, p in zip(counts.transition_sa, counts.transition_next, counts.p_hat, strict=True):
        assert abs(float(p) - p_true[(int(s), int(n))]) < 0.06
    assert torch.allclose(counts.mean_reward, mdp.reward)


def test_trajectories_start_at_the_start_and_stop_at_terminal_states():
    grid = gridworld(3)
    config = ExperienceConfig(
        weights={"trajectories": 1.0}, episodes=(40, 40), horizon=50, behaviours={"uniform": 1.0}
    )
    counts = sample([grid], config)[0]
    assert counts.terminal.tolist() == [False] * 8 + [True]  # the goal was entered and seen to end episodes
    assert int(counts.sa_count[grid.action_ptr[8] :].sum()) == 0  # nothing is observed after the end
    assert int(counts.sa_count[:4].sum()) >= 40  # every episode acts from the start state 0
    assert counts.num_observed < 40 * 50  # some episodes ended early


def test_trajectory_budget_without_terminal_states():
    mdp = reference_prior().sample(torch.Generator().manual_seed(2))
    config = ExperienceConfig(weights={"trajectories": 1.0}, episodes=(7, 7), horizon=20)
    counts = sample([mdp], config)[0]
    assert counts.num_observed == 7 * 20


def test_epsilon_greedy_follows_the_optimal_policy_mostly():
    mdp = Prior(weights={"chain": 1.0}).sample(torch.Generator().manual_seed(0))
    config = ExperienceConfig(
        weights={"trajectories": 1.0}, episodes=(30, 30), behaviours={"epsilon_greedy": 1.0}
    )
    counts = sample([mdp], config)[0]
    q, _ = optimal_values(mdp)
    best = q.view(mdp.num_states, -1).argmax(dim=1)
    visits = counts.sa_count.view(mdp.num_states, -1)
    greedy_visits = visits[torch.arange(mdp.num_states), best].sum()
    assert greedy_visits > 0.5 * visits.sum()


def test_explorer_balances_actions():
    bandit = TabularMDP.from_transitions(
        [8], torch.arange(8), torch.zeros(8, dtype=torch.long), torch.ones(8), torch.zeros(8)
    )
    config = ExperienceConfig(
        weights={"trajectories": 1.0}, episodes=(1, 1), horizon=40, behaviours={"explorer": 1.0}
    )
    counts = sample([bandit], config)[0]
    assert counts.sa_count.tolist() == [5] * 8


def test_batch_of_mdps_gives_counts_of_matching_sizes():
    g = torch.Generator().manual_seed(0)
    mdps = [Prior().sample(g) for _ in range(12)]
    for mdp, counts in zip(mdps, sample(mdps, ExperienceConfig()), strict=True):
        assert counts.num_states == mdp.num_states and torch.equal(counts.num_actions, mdp.num_actions)
        assert counts.num_observed > 0
        possible = set((mdp.transition_sa * mdp.num_states + mdp.transition_next).tolist())
        assert set(counts.transition_key.tolist()) <= possible  # only transitions the MDP can make
