import pytest
import torch
from torch_geometric.data import Batch

from rlfm.agents.certainty import CertaintyEquivalence
from rlfm.agents.planning import EmpiricalModel
from rlfm.benchmarks.reference import gridworld
from rlfm.counts import Counts
from rlfm.evaluation.offline import OfflineConfig, collect_datasets
from rlfm.examples import ExampleSampler
from rlfm.graph import (
    FROM,
    HAS,
    OF,
    STATE,
    STATE_ACTION,
    STATE_ACTION_FEATURES,
    STATE_FEATURES,
    TO,
    mdp_graph,
    observation_graph,
)
from rlfm.mdp import TabularMDP
from rlfm.prior import Prior
from rlfm.solve import optimal_values


def small_counts() -> Counts:
    counts = Counts.empty([2, 3, 1])
    counts.update(
        torch.tensor([0, 0, 0, 1, 2]),
        torch.tensor([1, 1, 1, 2, 0]),
        torch.tensor([0.5, 0.5, 0.5, -2.0, 0.0]),
        torch.tensor([1, 2, 1, 0, 2]),
        torch.tensor([False, True, False, False, True]),
    )
    return counts


def test_observation_graph_schema_and_features():
    data = observation_graph(small_counts(), gamma=0.9)
    assert set(data.node_types) == {STATE, STATE_ACTION}
    assert set(data.edge_types) == {HAS, OF, TO, FROM}
    assert data[STATE].num_nodes == 3 and data[STATE_ACTION].num_nodes == 6
    assert data[STATE_ACTION].x.shape == (6, len(STATE_ACTION_FEATURES)) == (6, 12)
    assert data[STATE].x.shape == (3, len(STATE_FEATURES)) == (3, 8)
    # observed successors only: (0,1)->1, (0,1)->2, (1,2)->0, (2,0)->2
    assert data[TO].edge_index.tolist() == [[1, 1, 4, 5], [1, 2, 0, 2]]
    assert torch.equal(data[FROM].edge_index, data[TO].edge_index.flip(0))
    assert data[TO].edge_attr[:, 0].tolist() == pytest.approx([2 / 3, 1 / 3, 1.0, 1.0])
    assert data[OF].edge_index[1].tolist() == [0, 0, 1, 1, 1, 2]
    assert data[STATE_ACTION].action.tolist() == [0, 1, 0, 1, 2, 0]
    sa_x = data[STATE_ACTION].x
    assert sa_x[1, 1] == pytest.approx(0.25)  # r̂ = 0.5, scale = largest |r| = 2
    assert sa_x[:, 2].tolist() == [0, 1, 0, 0, 1, 1]  # visited
    assert data[STATE].x[:, 3].tolist() == [0, 0, 1]  # state 2 was seen to end an episode
    assert float(data.reward_scale) == 2.0


def test_planner_columns_are_certainty_equivalence_and_optimism():
    """The certainty-equivalent columns agree with the CE baseline's own planner (rlfm.agents.planning)."""
    from rlfm.benchmarks import get_benchmark

    mdp = get_benchmark("frozenlake_4x4_slip067")
    counts = collect_datasets(mdp, 1, OfflineConfig(sizes=(300,)), torch.Generator().manual_seed(0))[0][0]
    data = observation_graph(counts, mdp.gamma)
    x = data[STATE_ACTION].x.double()
    column = {name: x[:, i] for i, name in enumerate(STATE_ACTION_FEATURES)}
    agent = CertaintyEquivalence()  # the CE baseline's planner, on the same counts
    agent.start(mdp.num_actions, mdp.gamma, 1, torch.Generator())
    q_ce = agent.solve(EmpiricalModel.from_counts([counts], agent.layout))[0][0]
    horizon = 1 / (1 - mdp.gamma)
    torch.testing.assert_close(column["ce_value"], q_ce / counts.reward_scale / horizon, atol=1e-5, rtol=1e-4)
    best = agent.layout.state_max(q_ce[None])[0][counts.sa_state]
    assert torch.equal(column["ce_greedy"] > 0.5, q_ce >= best - 1e-6)
    assert float(column["ce_advantage"].max()) == 0.0 and float(column["ce_advantage"].min()) >= -1.0
    unvisited, ended = counts.sa_count == 0, counts.terminal[counts.sa_state]
    assert (unvisited & ~ended).any() and (unvisited & ended).any()
    assert (column["optimistic_value"][unvisited & ~ended] == 1.0).all()  # worth 1 / (1 - γ)
    assert (column["optimistic_value"][ended] == 0.0).all()  # states seen to end an episode are worth 0
    assert (column["optimistic_value"] >= column["ce_value"] - 1e-6).all()
    state_x = data[STATE].x
    assert state_x[:, STATE_FEATURES.index("ce_value")].max() <= 1.0


def test_edges_grow_with_observations_not_with_the_square_of_states():
    counts = Counts.empty(torch.full((400,), 4))
    data = observation_graph(counts, gamma=0.95)
    assert data[TO].edge_index.shape[1] == 0 and data[HAS].edge_index.shape[1] == 1600
    counts.update(torch.arange(10), torch.zeros(10, dtype=torch.long), torch.zeros(10), torch.arange(1, 11))
    assert observation_graph(counts, gamma=0.95)[TO].edge_index.shape[1] == 10


def test_targets_are_boltzmann_policies_of_q_star():
    grid = gridworld(3)
    q, _ = optimal_values(grid)
    counts = Counts.empty_like(grid)
    counts.update(
        torch.tensor([0, 1]), torch.tensor([3, 3]), torch.tensor([-1.0, -1.0]), torch.tensor([1, 2])
    )
    data = observation_graph(counts, 0.95, q_star=q, temperature=0.2)
    target = data[STATE_ACTION].target.view(9, 4)
    assert torch.allclose(target.sum(1), torch.ones(9))
    assert torch.allclose(data[STATE_ACTION].q_star, (q / 1.0).float())  # scale = largest |r| seen = 1
    expected = torch.softmax(q.view(9, 4) / 0.2, dim=1).float()
    assert torch.allclose(target, expected, atol=1e-6)


def test_features_are_invariant_to_reward_scale():
    counts = small_counts()
    scaled = counts.copy()
    scaled.reward_sum *= 10
    scaled.max_abs_reward *= 10
    a, b = observation_graph(counts, 0.9), observation_graph(scaled, 0.9)
    assert torch.allclose(a[STATE_ACTION].x, b[STATE_ACTION].x)


def check_relations(batch, graphs):
    """Every relation of each graph survives batching: endpoints stay in their graph at the right offset."""
    for b, graph in enumerate(graphs):
        for edge_type in graph.edge_types:
            src_type, _, dst_type = edge_type
            src_offset, dst_offset = int(batch[src_type].ptr[b]), int(batch[dst_type].ptr[b])
            index = batch[edge_type].edge_index
            in_graph = batch[src_type].batch[index[0]] == b
            assert (batch[dst_type].batch[index[1, in_graph]] == b).all()
            local = index[:, in_graph] - torch.tensor([[src_offset], [dst_offset]])
            assert torch.equal(local, graph[edge_type].edge_index)


def test_batching_three_graphs_of_different_sizes_keeps_every_relation():
    g = torch.Generator().manual_seed(0)
    sampler = ExampleSampler(prior=Prior(weights={"reference": 1.0, "gridworld": 1.0}))
    mdps = [sampler.prior.sample(g) for _ in range(3)]
    assert len({m.num_states for m in mdps}) == 3
    examples = sampler.examples_for(mdps, g)
    check_relations(Batch.from_data_list(examples), examples)
    truth = [mdp_graph(m) for m in mdps]
    check_relations(Batch.from_data_list(truth), truth)
    batch = Batch.from_data_list(examples)
    assert batch.num_graphs == 3 and batch.gamma.shape == (3,)
    assert torch.equal(batch[STATE_ACTION].target, torch.cat([e[STATE_ACTION].target for e in examples]))


def test_example_targets_match_each_true_mdp():
    g = torch.Generator().manual_seed(4)
    sampler = ExampleSampler()
    mdps = sampler.sample_mdps(5, g)
    for mdp, example in zip(mdps, sampler.examples_for(mdps, g), strict=True):
        q, _ = optimal_values(mdp, tol=1e-8)
        scale = float(example.reward_scale)
        assert torch.allclose(example[STATE_ACTION].q_star.double(), q / scale, atol=1e-3)
        assert example[STATE_ACTION].num_nodes == mdp.num_state_actions


def test_mdp_graph_holds_the_model():
    mdp = TabularMDP.from_dense(
        torch.eye(3).unsqueeze(1).repeat(1, 2, 1).double(), torch.ones(3, 2), gamma=0.5
    )
    data = mdp_graph(mdp)
    assert data[TO].prob.tolist() == [1.0] * 6 and float(data.gamma) == 0.5
