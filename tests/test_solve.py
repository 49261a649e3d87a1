from dataclasses import replace

import pytest
import torch
from torch_geometric.data import Batch

from rlfm.benchmarks.reference import frozenlake_style, gridworld
from rlfm.graph import OF, STATE, mdp_graph
from rlfm.mdp import TabularMDP
from rlfm.solve import (
    ActionLayout,
    NotConvergedError,
    affine_rows,
    evaluate_policy,
    greedy_evaluator,
    mdp_arrays,
    normalized_value,
    optimal_values,
    start_values,
    stopping_threshold,
    uniform_policy,
    value_iteration,
)
from tests.conftest import random_dense_mdp


def brute_force_value_iteration(P, R, gamma, iterations=3000):
    V = torch.zeros(P.shape[0], dtype=torch.float64)
    for _ in range(iterations):
        Q = R + gamma * torch.einsum("sat,t->sa", P, V)
        V = Q.max(dim=1).values
    return Q, V


@pytest.mark.parametrize("seed", range(5))
def test_value_iteration_matches_dense_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    S, A = int(torch.randint(2, 15, (), generator=g)), int(torch.randint(1, 5, (), generator=g))
    P, R = random_dense_mdp(g, S, A)
    mdp = TabularMDP.from_dense(P, R, gamma=0.9)
    q, v = optimal_values(mdp, tol=1e-10)
    q_ref, v_ref = brute_force_value_iteration(P, R, 0.9)
    assert torch.allclose(v, v_ref, atol=1e-8)
    assert torch.allclose(q, q_ref.flatten(), atol=1e-8)


def test_batched_solvers_equal_single_ones(generator):
    mdps = []
    for S, A, gamma in [(3, 2, 0.5), (9, 4, 0.95), (5, 3, 0.8)]:
        P, R = random_dense_mdp(generator, S, A)
        mdps.append(TabularMDP.from_dense(P, R, gamma=gamma, start=torch.full((S,), 1 / S)))
    batch = Batch.from_data_list([mdp_graph(m) for m in mdps])
    q, v = optimal_values(batch, tol=1e-10)
    sa_state, num_states = batch[OF].edge_index[1], batch[STATE].num_nodes
    policy = torch.rand(q.shape, generator=generator, dtype=torch.float64)
    policy = policy / torch.zeros(num_states, dtype=torch.float64).index_add_(0, sa_state, policy)[sa_state]
    v_pi = evaluate_policy(batch, policy)
    offset_s, offset_sa = 0, 0
    for mdp in mdps:
        q1, v1 = optimal_values(mdp, tol=1e-10)
        S, SA = mdp.num_states, mdp.num_state_actions
        assert torch.allclose(v[offset_s : offset_s + S], v1, atol=1e-9)
        assert torch.allclose(q[offset_sa : offset_sa + SA], q1, atol=1e-9)
        assert torch.allclose(
            v_pi[offset_s : offset_s + S], evaluate_policy(mdp, policy[offset_sa : offset_sa + SA])
        )
        offset_s, offset_sa = offset_s + S, offset_sa + SA
    optimal = normalized_value(batch, ActionLayout(torch.bincount(sa_state)).greedy_policy(q))
    assert torch.allclose(optimal, torch.ones(3, dtype=torch.float64))


def test_policy_evaluation_is_exact(generator):
    P, R = random_dense_mdp(generator, 6, 3)
    mdp = TabularMDP.from_dense(P, R, gamma=0.9)
    pi = uniform_policy(mdp)
    P_pi = P.mean(dim=1)
    r_pi = R.mean(dim=1)
    expected = torch.linalg.solve(torch.eye(6, dtype=torch.float64) - 0.9 * P_pi, r_pi)
    assert torch.allclose(evaluate_policy(mdp, pi), expected)


@pytest.mark.parametrize(
    "mdp,v_star,v_uniform",
    [
        (gridworld(3), 4.8639, -8.8005),
        (gridworld(5), 0.2518, -17.4344),
        (frozenlake_style(), 0.3130, -0.7198),
    ],
)
def test_known_values_of_reference_grids(mdp, v_star, v_uniform):
    q, v = optimal_values(mdp)
    assert float(start_values(mdp, v)) == pytest.approx(v_star, abs=1e-4)
    assert float(start_values(mdp, evaluate_policy(mdp, uniform_policy(mdp)))) == pytest.approx(
        v_uniform, abs=1e-4
    )
    greedy = ActionLayout(mdp.num_actions).greedy_policy(q)
    assert float(normalized_value(mdp, greedy)) == pytest.approx(1.0, abs=1e-6)
    assert float(normalized_value(mdp, uniform_policy(mdp))) == pytest.approx(0.0, abs=1e-9)


def test_gridworld_optimal_path_by_hand():
    # 3x3: the goal is 4 moves away; each step -1, entering the goal -1 + 10
    _q, v = optimal_values(gridworld(3))
    assert float(v[0]) == pytest.approx(-1 - 0.95 - 0.95**2 + 9 * 0.95**3)
    assert float(v[8]) == 0.0  # absorbing goal


def test_greedy_policy_breaks_ties_by_lowest_index():
    sa_state = torch.tensor([0, 0, 0, 1, 1])
    policy = ActionLayout(torch.bincount(sa_state)).greedy_policy(torch.tensor([1.0, 3.0, 3.0, -1.0, -2.0]))
    assert policy.tolist() == [0, 1, 0, 1, 0]


def test_policy_evaluation_of_many_policies_on_a_union_of_mdps(generator):
    mdps = [
        TabularMDP.from_dense(*random_dense_mdp(generator, S, 3), gamma=g) for S, g in ((4, 0.5), (7, 0.95))
    ]
    batch = Batch.from_data_list([mdp_graph(m) for m in mdps])
    layout = ActionLayout(torch.bincount(batch[OF].edge_index[1]))
    policies = torch.rand(5, layout.num_pairs, generator=generator, dtype=torch.float64)
    policies /= layout.policy_mean(policies, 1.0)[:, layout.sa_state]  # each state's block sums to 1
    together = evaluate_policy(batch, policies)  # (5, 11)
    assert together.shape == (5, 11)
    for u in range(5):
        torch.testing.assert_close(together[u], evaluate_policy(batch, policies[u]))
        alone = [evaluate_policy(m, p) for m, p in zip(mdps, policies[u].split([12, 21]), strict=True)]
        torch.testing.assert_close(together[u], torch.cat(alone))


def test_policy_evaluation_with_a_uniform_spread_equals_the_dense_solve(generator):
    """Sparse successors plus a per-pair mass spread uniformly over the pair's own MDP (Sherman–Morrison)
    give the values of the dense MDP that mixes both."""
    sizes, gammas = (4, 7), (0.5, 0.95)
    dense = [random_dense_mdp(generator, S, 3) for S in sizes]
    spreads = [torch.rand(S * 3, generator=generator, dtype=torch.float64) / 2 for S in sizes]
    mixed = [
        TabularMDP.from_dense((1 - w.view(S, 3, 1)) * P + w.view(S, 3, 1) / S, R, gamma=g)
        for (P, R), w, S, g in zip(dense, spreads, sizes, gammas, strict=True)
    ]
    sparse = Batch.from_data_list(
        [mdp_graph(TabularMDP.from_dense(P, R, gamma=g)) for (P, R), g in zip(dense, gammas, strict=True)]
    )
    arrays = mdp_arrays(sparse)
    spread = torch.cat(spreads)
    arrays = replace(arrays, prob=arrays.prob * (1 - spread[arrays.edge_sa]))
    policies = torch.rand(3, arrays.reward.numel(), generator=generator, dtype=torch.float64)
    policies /= arrays.layout.policy_mean(policies, 1.0)[:, arrays.layout.sa_state]
    truth = evaluate_policy(Batch.from_data_list([mdp_graph(m) for m in mixed]), policies)
    torch.testing.assert_close(evaluate_policy(arrays, policies, spread=spread), truth)
    torch.testing.assert_close(evaluate_policy(arrays, policies[0], spread=spread), truth[0])


def test_value_iteration_says_when_it_does_not_converge():
    arrays = mdp_arrays(gridworld(5))
    with pytest.raises(NotConvergedError, match="did not converge in 3 sweeps"):
        value_iteration(arrays.bellman_backup, arrays.layout, 1e-12, max_iterations=3)


def test_value_iteration_of_a_policy_converges_to_its_exact_value():
    arrays = mdp_arrays(frozenlake_style())
    uniform = arrays.layout.uniform(1)
    threshold = stopping_threshold(1.0, float(arrays.gamma), 1e-10)
    expected = lambda q: arrays.layout.policy_mean(q, uniform)  # noqa: E731
    _q, v = value_iteration(arrays.bellman_backup, arrays.layout, threshold, reduce=expected)
    torch.testing.assert_close(v[0], evaluate_policy(arrays, uniform[0]), atol=1e-9, rtol=0)


def test_greedy_policy_keeps_the_shape_of_its_input():
    layout = ActionLayout(torch.tensor([2, 1, 3]))
    q = torch.tensor([[0.0, 1.0, 5.0, 2.0, 2.0, 1.0], [1.0, 0.0, 5.0, 0.0, 0.0, 3.0]])
    assert layout.greedy_policy(q).tolist() == [[0, 1, 1, 1, 0, 0], [1, 0, 1, 0, 0, 1]]
    assert layout.greedy_policy(q[1]).tolist() == [1, 0, 1, 0, 0, 1]


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("shared_offset", [True, False])
def test_affine_rows_is_offset_plus_matrix_times_each_row(rows, shared_offset):
    generator = torch.Generator().manual_seed(rows)
    dense = torch.rand(7, 5, generator=generator, dtype=torch.float64)
    dense[dense < 0.5] = 0.0
    values = torch.rand(rows, 5, generator=generator, dtype=torch.float64)
    offset = torch.rand(7 if shared_offset else (rows, 7), generator=generator, dtype=torch.float64)
    expected = offset + values @ dense.T
    torch.testing.assert_close(affine_rows(offset, dense.to_sparse_csr(), values), expected)


@pytest.mark.parametrize("seed", range(3))
def test_policy_evaluation_jumps_reach_the_same_values_in_fewer_sweeps(seed):
    g = torch.Generator().manual_seed(seed)
    P, R = random_dense_mdp(g, 12, 3)
    arrays = mdp_arrays(TabularMDP.from_dense(P, R, gamma=0.995))
    threshold = stopping_threshold(1.0, 0.995, 1e-9)
    sweeps = {"plain": 0, "jumps": 0}

    def counted(name):
        def backup(values):
            sweeps[name] += 1
            return arrays.bellman_backup(values)

        return backup

    q_plain, v_plain = value_iteration(counted("plain"), arrays.layout, threshold)
    evaluate = greedy_evaluator(arrays)
    q_jump, v_jump = value_iteration(counted("jumps"), arrays.layout, threshold, evaluate=evaluate)
    torch.testing.assert_close(v_jump, v_plain, atol=1e-8, rtol=0)
    torch.testing.assert_close(q_jump, q_plain, atol=1e-8, rtol=0)
    assert sweeps["jumps"] < sweeps["plain"] / 5


def test_a_jump_that_does_not_help_is_not_taken():
    arrays = mdp_arrays(frozenlake_style())
    threshold = stopping_threshold(1.0, float(arrays.gamma), 1e-10)
    _, v_plain = value_iteration(arrays.bellman_backup, arrays.layout, threshold)
    wrong = lambda q: torch.full((q.shape[0], arrays.num_states), 1e6, dtype=q.dtype)  # noqa: E731
    _, v = value_iteration(arrays.bellman_backup, arrays.layout, threshold, evaluate=wrong, evaluate_every=1)
    torch.testing.assert_close(v, v_plain, atol=1e-9, rtol=0)
