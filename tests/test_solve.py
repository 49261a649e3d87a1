import pytest
import torch
from torch_geometric.data import Batch

from rlfm.benchmarks.reference import frozenlake_style, gridworld
from rlfm.graph import OF, STATE, mdp_graph
from rlfm.mdp import TabularMDP
from rlfm.solve import (
    evaluate_policy,
    greedy_policy,
    normalized_value,
    start_values,
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
    q, v = value_iteration(mdp, tol=1e-10)
    q_ref, v_ref = brute_force_value_iteration(P, R, 0.9)
    assert torch.allclose(v, v_ref, atol=1e-8)
    assert torch.allclose(q, q_ref.flatten(), atol=1e-8)


def test_batched_solvers_equal_single_ones(generator):
    mdps = []
    for S, A, gamma in [(3, 2, 0.5), (9, 4, 0.95), (5, 3, 0.8)]:
        P, R = random_dense_mdp(generator, S, A)
        mdps.append(TabularMDP.from_dense(P, R, gamma=gamma, start=torch.full((S,), 1 / S)))
    batch = Batch.from_data_list([mdp_graph(m) for m in mdps])
    q, v = value_iteration(batch, tol=1e-10)
    sa_state, num_states = batch[OF].edge_index[1], batch[STATE].num_nodes
    policy = torch.rand(q.shape, generator=generator, dtype=torch.float64)
    policy = policy / torch.zeros(num_states, dtype=torch.float64).index_add_(0, sa_state, policy)[sa_state]
    v_pi = evaluate_policy(batch, policy)
    offset_s, offset_sa = 0, 0
    for mdp in mdps:
        q1, v1 = value_iteration(mdp, tol=1e-10)
        S, SA = mdp.num_states, mdp.num_state_actions
        assert torch.allclose(v[offset_s : offset_s + S], v1, atol=1e-9)
        assert torch.allclose(q[offset_sa : offset_sa + SA], q1, atol=1e-9)
        assert torch.allclose(
            v_pi[offset_s : offset_s + S], evaluate_policy(mdp, policy[offset_sa : offset_sa + SA])
        )
        offset_s, offset_sa = offset_s + S, offset_sa + SA
    optimal = normalized_value(batch, greedy_policy(q, sa_state, num_states))
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
    q, v = value_iteration(mdp)
    assert float(start_values(mdp, v)) == pytest.approx(v_star, abs=1e-4)
    assert float(start_values(mdp, evaluate_policy(mdp, uniform_policy(mdp)))) == pytest.approx(
        v_uniform, abs=1e-4
    )
    greedy = greedy_policy(q, mdp.sa_state, mdp.num_states)
    assert float(normalized_value(mdp, greedy)) == pytest.approx(1.0, abs=1e-6)
    assert float(normalized_value(mdp, uniform_policy(mdp))) == pytest.approx(0.0, abs=1e-9)


def test_gridworld_optimal_path_by_hand():
    # 3x3: the goal is 4 moves away; each step -1, entering the goal -1 + 10
    _q, v = value_iteration(gridworld(3))
    assert float(v[0]) == pytest.approx(-1 - 0.95 - 0.95**2 + 9 * 0.95**3)
    assert float(v[8]) == 0.0  # absorbing goal


def test_greedy_policy_breaks_ties_by_lowest_index():
    sa_state = torch.tensor([0, 0, 0, 1, 1])
    policy = greedy_policy(torch.tensor([1.0, 3.0, 3.0, -1.0, -2.0]), sa_state, 2)
    assert policy.tolist() == [0, 1, 0, 1, 0]
