"""The policy network: sparse vs dense reference, symmetries, batch independence, adaptive depth."""

import pytest
import torch
from torch_geometric.data import Batch

from rlfm.benchmarks.reference import gridworld
from rlfm.counts import Counts
from rlfm.dense import DensePolicyNetwork, to_dense
from rlfm.examples import ExampleSampler
from rlfm.graph import FROM, OF, STATE, STATE_ACTION, observation_graph, observed_diameters
from rlfm.network import PolicyNetwork, group_softmax, log_group_softmax
from rlfm.prior import Prior, ReferencePrior
from rlfm.solve import optimal_values

ATOL = 1e-5


def network(width: int = 32, heads: int = 4, num_layers: int = 6, seed: int = 0) -> PolicyNetwork:
    torch.manual_seed(seed)
    net = PolicyNetwork(width=width, heads=heads, num_layers=num_layers, dropout=0.0)
    with torch.no_grad():
        net.block.attention.beta.uniform_(0.5, 1.5)  # heads that differ
    return net


def random_counts(generator: torch.Generator, num_actions: list[int], transitions: int) -> Counts:
    """Counts of ``transitions`` random (s, a, r, s', terminated); with few transitions, many pairs stay
    unvisited."""
    counts = Counts.empty(num_actions)
    counts.update(*random_transitions(generator, torch.tensor(num_actions), transitions))
    return counts


def random_transitions(generator: torch.Generator, num_actions: torch.Tensor, n: int) -> tuple:
    S = num_actions.numel()
    state = torch.randint(0, S, (n,), generator=generator)
    action = (torch.rand(n, generator=generator) * num_actions[state]).long()
    reward = torch.randn(n, generator=generator, dtype=torch.float64).round(decimals=1)
    next_state = torch.randint(0, S, (n,), generator=generator)
    terminated = torch.rand(n, generator=generator) < 0.05
    return state, action, reward, next_state, terminated


def mixed_batch(generator: torch.Generator) -> Batch:
    """MDPs of different sizes and per-state action counts, grid worlds, and graphs with no data."""
    prior = Prior(
        weights={"reference": 2.0, "gridworld": 1.0},
        reference=ReferencePrior(max_states=12, per_state_actions=1.0),
    )
    prior.gridworld.max_side = 4
    graphs = ExampleSampler(prior=prior).sample(6, generator)
    grid = gridworld(3)
    q, _ = optimal_values(grid)
    graphs.append(observation_graph(Counts.empty_like(grid), 0.95, q_star=q))  # no data at all
    counts = random_counts(generator, [1, 3, 2, 4, 2], transitions=4)
    graphs.append(observation_graph(counts, 0.9, q_star=torch.zeros(counts.num_state_actions)))
    return Batch.from_data_list(graphs)


# ------------------------------------------------------------------ sparse vs dense


def test_dense_batch_holds_the_graph(generator):
    data = mixed_batch(generator)
    dense = to_dense(data)
    B, S_max, A_max = dense.shape
    num_actions = torch.bincount(data[OF].edge_index[1])
    assert (
        data.num_graphs == B
        and S_max == int(data[STATE].ptr.diff().max())
        and A_max == int(num_actions.max())
    )
    assert len(set(num_actions.tolist())) > 1  # states with different action counts
    assert int(dense.state_mask.sum()) == data[STATE].num_nodes
    assert int(dense.action_mask.sum()) == data[STATE_ACTION].num_nodes
    assert int(dense.edge_mask.sum()) == data[FROM].num_edges
    assert torch.equal(dense.to_sparse(dense.x_sa), data[STATE_ACTION].x)
    assert torch.equal(dense.x_state[dense.state_mask], data[STATE].x)
    # P̂ rows: sum to 1 for visited pairs, empty for pairs with no observed successor
    rows = dense.p_hat.sum(-1).view(B, S_max, A_max)  # [B, S, A]
    visited = dense.to_sparse(dense.edge_mask.any(-1).view(B, S_max, A_max))  # [SA]
    assert (~visited).any() and visited.any()
    torch.testing.assert_close(dense.to_sparse(rows)[visited], torch.ones(int(visited.sum())))
    assert (dense.to_sparse(rows)[~visited] == 0).all()
    assert (dense.p_hat[~dense.edge_mask] == 0).all()


@pytest.mark.parametrize("training", [False, True])
def test_sparse_and_dense_networks_give_the_same_policy_and_gradients(training, generator):
    data = mixed_batch(generator)
    net = network().train(training)
    dense_net = DensePolicyNetwork(net)
    batch = to_dense(data)

    logits = net(data)
    dense_logits = dense_net(batch)  # [B, S_max, A_max]
    torch.testing.assert_close(batch.to_sparse(dense_logits), logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(batch.to_sparse(dense_net.policy(batch)), net.policy(data), atol=ATOL, rtol=0)
    assert (dense_logits[~batch.action_mask] == 0).all()
    torch.testing.assert_close(dense_net.forward_graph(data), logits, atol=ATOL, rtol=0)

    target = data[STATE_ACTION].target
    sparse_loss = -(target * group_softmax(logits, data).log()).sum() / data[STATE].num_nodes
    sparse_grads = torch.autograd.grad(sparse_loss, list(net.parameters()))
    dense_policy = batch.to_sparse(dense_net.policy(batch))
    dense_loss = -(target * dense_policy.log()).sum() / data[STATE].num_nodes
    dense_grads = torch.autograd.grad(dense_loss, list(net.parameters()))
    for (name, _), g_sparse, g_dense in zip(net.named_parameters(), sparse_grads, dense_grads, strict=True):
        torch.testing.assert_close(g_dense, g_sparse, atol=ATOL, rtol=1e-4, msg=name)


def test_dense_network_shares_parameters_not_copies():
    net = network()
    dense_net = DensePolicyNetwork(net)
    assert {id(p) for p in dense_net.parameters()} == {id(p) for p in net.parameters()}
    assert {id(b) for b in dense_net.buffers()} == {id(b) for b in net.buffers()}
    dense_net.eval()
    assert not net.training and not net.block.attention.training


def test_sparse_and_dense_agree_on_the_reference_benchmarks_at_depth():
    net = network(num_layers=24).eval()
    dense_net = DensePolicyNetwork(net)
    graphs = []
    for size in (3, 5):
        grid = gridworld(size)
        generator = torch.Generator().manual_seed(size)
        counts = Counts.empty_like(grid)
        state = torch.randint(0, grid.num_states, (40,), generator=generator)
        action = torch.randint(0, 4, (40,), generator=generator)
        sa = grid.sa_index(state, action)
        next_state = grid.transition_next[torch.searchsorted(grid.transition_sa, sa)]  # deterministic grid
        counts.update(state, action, grid.reward[sa], next_state)
        graphs.append(observation_graph(counts, grid.gamma))
    data = Batch.from_data_list(graphs)
    torch.testing.assert_close(dense_net.forward_graph(data), net(data), atol=ATOL, rtol=0)


# ------------------------------------------------------------------ symmetries and batching


def permuted_counts(
    counts: Counts, transitions: tuple, generator: torch.Generator
) -> tuple[Counts, torch.Tensor]:
    """The same experience with states and each state's actions relabelled. Returns the new counts and the
    new index of every old state-action pair (SA,)."""
    num_actions = counts.num_actions
    S = num_actions.numel()
    new_state = torch.randperm(S, generator=generator)  # new label of old state s
    new_num_actions = torch.empty_like(num_actions)
    new_num_actions[new_state] = num_actions
    new_action = [torch.randperm(int(n), generator=generator) for n in num_actions]  # per old state
    permuted = Counts.empty(new_num_actions)
    state, action, reward, next_state, terminated = transitions
    moved_action = torch.stack(
        [new_action[s][a] for s, a in zip(state.tolist(), action.tolist(), strict=True)]
    )
    permuted.update(new_state[state], moved_action, reward, new_state[next_state], terminated)
    new_ptr = permuted.action_ptr
    new_pair = torch.cat([new_ptr[new_state[s]] + new_action[s] for s in range(S)])  # [SA]
    return permuted, new_pair


def test_relabelling_states_and_actions_relabels_the_output(generator):
    num_actions = torch.tensor([3, 1, 4, 2, 2, 3, 1, 4, 2])
    transitions = random_transitions(generator, num_actions, 30)
    counts = Counts.empty(num_actions)
    counts.update(*transitions)
    assert (counts.sa_count == 0).any()  # some pairs without data
    permuted, new_pair = permuted_counts(counts, transitions, generator)
    assert not torch.equal(new_pair, torch.arange(new_pair.numel()))
    net = network().eval()
    dense_net = DensePolicyNetwork(net)
    data, data_p = observation_graph(counts, 0.9), observation_graph(permuted, 0.9)
    for model in (net, dense_net.forward_graph):
        logits, logits_p = model(data), model(data_p)
        torch.testing.assert_close(logits_p[new_pair], logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(net.policy(data_p)[new_pair], net.policy(data), atol=ATOL, rtol=0)


def test_a_graphs_output_does_not_depend_on_its_batch(generator):
    data = mixed_batch(generator)
    graphs = data.to_data_list()
    net = network().eval()
    dense_net = DensePolicyNetwork(net)
    together = net(data).split(data[STATE_ACTION].ptr.diff().tolist())
    dense_together = dense_net.forward_graph(data).split(data[STATE_ACTION].ptr.diff().tolist())
    reordered = net(Batch.from_data_list([graphs[3], graphs[0]]))
    for i, graph in enumerate(graphs):
        alone = net(graph)
        torch.testing.assert_close(together[i], alone, atol=ATOL, rtol=0)
        torch.testing.assert_close(dense_together[i], alone, atol=ATOL, rtol=0)
        torch.testing.assert_close(dense_net.forward_graph(graph), alone, atol=ATOL, rtol=0)
    n3 = graphs[3][STATE_ACTION].num_nodes
    torch.testing.assert_close(reordered[:n3], together[3], atol=ATOL, rtol=0)
    torch.testing.assert_close(reordered[n3:], together[0], atol=ATOL, rtol=0)


# ------------------------------------------------------------------ depth


def test_depth_is_settable_at_inference(generator):
    data = mixed_batch(generator)
    net = network(num_layers=4).eval()
    dense_net = DensePolicyNetwork(net)
    shallow, deep = net(data), net(data, num_layers=9)
    assert not torch.allclose(shallow, deep)
    net.num_layers = 9
    torch.testing.assert_close(net(data), deep, atol=0, rtol=0)
    torch.testing.assert_close(dense_net.forward_graph(data), deep, atol=ATOL, rtol=0)
    torch.testing.assert_close(dense_net.forward_graph(data, num_layers=4), shallow, atol=ATOL, rtol=0)


def converged_network() -> PolicyNetwork:
    """A network whose block is h ↦ LayerNorm(h): after one sweep the embeddings no longer change."""
    net = network().eval()
    with torch.no_grad():
        for layer in (net.block.update_state_action[-1], net.block.update_state[-1]):
            layer.weight.zero_()
            layer.bias.zero_()
    return net


def test_settle_stops_early_on_a_converged_input_and_respects_max_layers(generator):
    data = mixed_batch(generator)
    net = converged_network()
    logits, used = net.settle(data, min_layers=3, max_layers=50)
    assert used.tolist() == [4] * data.num_graphs  # first comparison possible after min_layers + 1 sweeps
    torch.testing.assert_close(logits, net(data, num_layers=4), atol=0, rtol=0)

    net = network().eval()  # an untrained block that has not converged after 5 sweeps
    logits, used = net.settle(data, min_layers=2, max_layers=5, tol=0.0)
    assert used.tolist() == [5] * data.num_graphs
    torch.testing.assert_close(logits, net(data, num_layers=5), atol=0, rtol=0)
    _, used = net.settle(data, min_layers=8, max_layers=5)
    assert used.tolist() == [5] * data.num_graphs


def test_settle_stops_per_mdp_so_an_mdp_gets_the_same_policy_alone_and_in_a_batch(generator):
    data = mixed_batch(generator)
    net = network().eval()
    batch = net.settle_from(data, None, min_layers=2, max_layers=60, tol=1e-3)
    logits, used = batch.logits, batch.sweeps
    assert used.min() < used.max()  # the MDPs settle at different depths (and leave the batch early)
    state_graph = data["state"].batch
    sa_graph = state_graph[data["state_action", "of", "state"].edge_index[1]]
    for b, graph in enumerate(data.to_data_list()):
        alone, used_alone = net.settle(graph, min_layers=2, max_layers=60, tol=1e-3)
        assert used_alone.tolist() == [int(used[b])]
        torch.testing.assert_close(logits[sa_graph == b], alone, atol=1e-5, rtol=1e-5)
        h_state, h_sa = net.settle_from(graph, None, min_layers=2, max_layers=60, tol=1e-3).embeddings
        torch.testing.assert_close(batch.embeddings[0][state_graph == b], h_state, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batch.embeddings[1][sa_graph == b], h_sa, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alone, net(graph, num_layers=int(used[b])), atol=1e-5, rtol=1e-5)


def test_settle_from_its_own_fixed_point_stops_at_once(generator):
    """A warm start from where a settle ended keeps the policy and needs only the two sweeps of one check."""
    data = mixed_batch(generator)
    net = network().eval()
    cold = net.settle_from(data, None, min_layers=2, max_layers=200, tol=1e-4)
    logits, used = net.settle(data, min_layers=2, max_layers=200, tol=1e-4)
    torch.testing.assert_close(cold.logits, logits, atol=0, rtol=0)
    assert torch.equal(cold.sweeps, used) and bool((used > 2).all())
    warm = net.settle_from(data, cold.embeddings, min_layers=1, max_layers=200, tol=1e-2)
    assert warm.sweeps.tolist() == [2] * data.num_graphs
    sa_state, S = data["state_action", "of", "state"].edge_index[1], data["state"].num_nodes
    torch.testing.assert_close(  # the policy stays where it settled, within the warm settle's tolerance
        log_group_softmax(warm.logits, sa_state, S),
        log_group_softmax(cold.logits, sa_state, S),
        atol=1e-2,
        rtol=0,
    )
    with pytest.raises(ValueError, match="do not fit"):
        net.settle_from(data, (cold.embeddings[0][:-1], cold.embeddings[1]))


def test_settle_raises_on_non_finite_policies(generator):
    data = mixed_batch(generator)
    data["state_action"].x[0, 1] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        network().eval().settle(data, min_layers=2, max_layers=50)


def test_settle_stops_on_a_converged_input_with_confident_logits(generator):
    data = mixed_batch(generator)
    net = converged_network()
    with torch.no_grad():
        net.head[-1].weight.mul_(1e4)  # logit gaps of hundreds: some probabilities underflow to 0
    _, used = net.settle(data, min_layers=3, max_layers=50)
    assert used.tolist() == [4] * data.num_graphs


def test_unroll_returns_every_supervised_sweep_and_matches_forward(generator):
    data, net = mixed_batch(generator), network(num_layers=6)
    sweeps = net.unroll(data, 6, first=3)
    assert len(sweeps) == 4
    for k, readout in zip(range(3, 7), sweeps, strict=True):
        torch.testing.assert_close(readout.logits, net(data, k))
        assert readout.values is None  # no value head
    # a no-gradient prefix changes nothing but where gradients stop
    truncated = net.unroll(data, 6, first=5, no_grad_layers=4)
    torch.testing.assert_close(truncated[-1].logits, sweeps[-1].logits)
    truncated[-1].logits.sum().backward()
    assert all(p.grad is not None for p in net.block.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="no_grad_layers"):
        net.unroll(data, 6, first=3, no_grad_layers=3)


def test_default_inference_runs_the_planner_networks_depth_and_settles_count_only_networks(generator):
    data = mixed_batch(generator)
    planner = network(num_layers=5).eval()
    logits, sweeps, _, greedy_scores, acting_logits = planner.infer(data)
    torch.testing.assert_close(logits, planner(data, 5), atol=0, rtol=0)
    assert greedy_scores is logits  # no value head: the greedy policy is the policy's argmax
    assert acting_logits is logits  # no acting head: agents sample the policy
    assert sweeps.tolist() == [5] * data.num_graphs
    torch.manual_seed(0)
    counts_only = PolicyNetwork(width=16, heads=2, num_layers=3, planner_inputs=False).eval()
    logits, sweeps, *_ = counts_only.infer(data, max_layers=40)
    settled, settled_sweeps = counts_only.settle(data, max_layers=40)
    torch.testing.assert_close(logits, settled, atol=0, rtol=0)
    assert torch.equal(sweeps, settled_sweeps)


def test_the_diameter_depth_rule_runs_each_mdp_max_of_its_depth_and_its_diameter_sweeps(generator):
    data = mixed_batch(generator)
    diameters = observed_diameters(data)
    torch.manual_seed(0)
    counts_only = PolicyNetwork(width=16, heads=2, num_layers=3, planner_inputs=False).eval()
    settled = counts_only.infer(data, max_layers=40, depth_rule="diameter")
    expected = diameters.clamp(min=3, max=40)
    assert torch.equal(settled.sweeps, expected) and expected.max() > 3  # some MDP is wider than 3 steps
    sa_graph = data["state"].batch[data["state_action", "of", "state"].edge_index[1]]
    for b, graph in enumerate(data.to_data_list()):
        alone = counts_only(graph, num_layers=int(expected[b]))  # the same policy alone as in the batch
        torch.testing.assert_close(settled.logits[sa_graph == b], alone, atol=1e-5, rtol=1e-5)
    capped = counts_only.infer(data, max_layers=4, depth_rule="diameter")
    assert capped.sweeps.max() == 4
    with pytest.raises(ValueError, match="depth rule"):
        counts_only.infer(data, depth_rule="deepest")


def test_observed_diameters_are_the_longest_shortest_paths_along_observed_transitions():
    chain = Counts.empty([1, 1, 1, 1])  # 0 -> 1 -> 2 -> 3, and 3 -> 0 observed later
    step = torch.tensor
    chain.add(
        step([0, 1, 2]),
        step([1, 2, 3]),
        torch.zeros(3, dtype=torch.float64),
        torch.zeros(3, dtype=torch.bool),
    )
    graphs = [observation_graph(chain, 0.9, planner=False)]
    chain.add(step([3]), step([0]), torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.bool))
    graphs += [
        observation_graph(chain, 0.9, planner=False),
        observation_graph(Counts.empty([2, 2]), 0.9, planner=False),
    ]
    assert observed_diameters(graphs[0]).tolist() == [3]
    # with the loop closed, 1 reaches 0 in 3 steps and 0 reaches 3 in 3: still 3; in a batch, one per MDP
    assert observed_diameters(Batch.from_data_list(graphs)).tolist() == [3, 3, 0]
    assert observed_diameters(Batch.from_data_list(graphs), chunk_entries=1).tolist() == [3, 3, 0]


def test_a_count_only_network_needs_no_planner_columns_and_a_planner_network_says_it_does():
    counts = random_counts(torch.Generator().manual_seed(3), [2, 3, 1, 2], 30)
    full, counts_only = observation_graph(counts, 0.9), observation_graph(counts, 0.9, planner=False)
    assert counts_only[STATE].x.shape[1] < full[STATE].x.shape[1]
    torch.manual_seed(0)
    reader = PolicyNetwork(width=16, heads=2, num_layers=3, planner_inputs=False).eval()
    torch.testing.assert_close(reader(counts_only), reader(full))
    planner_reader = PolicyNetwork(width=16, heads=2, num_layers=3, planner_inputs=True).eval()
    with pytest.raises(ValueError, match="planner=True"):
        planner_reader(counts_only)
