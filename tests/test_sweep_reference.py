"""An independent NumPy reference of the network's inputs, one propagation sweep and the policy head.

The reference below is written from the documented maths only (the feature lists and the
``observation_graphs`` docstrings of :mod:`rlfm.graph`, :class:`rlfm.nn.block.PropagationBlock`,
:class:`rlfm.nn.attention.EdgeBiasedAttention`, :mod:`rlfm.network`), straight from a
:class:`~rlfm.counts.Counts`, with plain loops. It reads nothing from ``rlfm.graph``, ``rlfm.nn``,
``rlfm.network`` or ``rlfm.dense``: only the tests at the bottom use the real graph builder and network,
and only to compare with it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlfm.counts import Counts

# The real implementation, used only by the tests at the bottom, never by the reference.
from rlfm.graph import (
    COUNT_FEATURES,
    EDGE_FEATURES,
    FROM,
    STATE,
    STATE_ACTION,
    STATE_ACTION_FEATURES,
    STATE_FEATURES,
    TO,
    observation_graph,
    observation_graphs,
)
from rlfm.network import PolicyNetwork

# ====================================================================== the reference (NumPy only)
REF_MAX_HORIZON = 1000.0  # the horizon feature is log(1 / (1 - γ)) / log(1000): 1 at 1 / (1 - γ) = 1000
REF_LOG_EPS = 1e-12  # log p is taken of max(p, 1e-12)
REF_LN_EPS = 1e-5  # LayerNorm epsilon


class Observed:
    """The raw statistics of a Counts, as plain NumPy arrays and per-pair successor lists."""

    def __init__(self, counts: Counts) -> None:
        self.num_actions = counts.num_actions.numpy().astype(int)
        self.S = len(self.num_actions)
        self.sa_count = counts.sa_count.numpy().astype(np.float64)
        self.SA = len(self.sa_count)
        self.reward_sum = counts.reward_sum.numpy().astype(np.float64)
        self.terminal = counts.terminal.numpy().astype(bool)
        self.scale = counts.max_abs_reward if counts.max_abs_reward > 0 else 1.0
        # state of each pair: state s owns the next num_actions[s] pairs
        self.sa_state = [s for s in range(self.S) for _ in range(self.num_actions[s])]
        # actions of each state
        self.state_pairs = [[] for _ in range(self.S)]
        for sa, s in enumerate(self.sa_state):
            self.state_pairs[s].append(sa)
        # successors of each pair: key = sa * S + s'
        self.successors = [[] for _ in range(self.SA)]  # list of (s', N(s, a, s'))
        for key, n in zip(counts.transition_key.tolist(), counts.transition_count.tolist(), strict=True):
            self.successors[key // self.S].append((key % self.S, float(n)))


def ref_horizon(gamma: float) -> float:
    return math.log(1.0 / (1.0 - gamma)) / math.log(REF_MAX_HORIZON)


def ref_plan(obs: Observed, gamma: float, optimistic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Q (SA,) and V (S,) in units of the reward scale, by plain-loop value iteration to 1e-12.

    Certainty equivalence: Q = r̂ + γ Σ P̂ V on visited pairs, 0 on unvisited ones. Optimistic: visited pairs
    get + 1/sqrt(N), unvisited ones are worth 1 / (1 - γ). States seen to end an episode are worth 0."""
    reward = [r / max(n, 1.0) / obs.scale for r, n in zip(obs.reward_sum, obs.sa_count, strict=True)]
    v = np.zeros(obs.S)
    for _ in range(100_000):
        q = np.zeros(obs.SA)
        for sa in range(obs.SA):
            n = obs.sa_count[sa]
            if obs.terminal[obs.sa_state[sa]]:
                q[sa] = 0.0
            elif n == 0:
                q[sa] = 1.0 / (1.0 - gamma) if optimistic else 0.0
            else:
                bonus = 1.0 / math.sqrt(n) if optimistic else 0.0
                q[sa] = reward[sa] + bonus + gamma * sum(c / n * v[s2] for s2, c in obs.successors[sa])
        new_v = np.array([max(q[sa] for sa in obs.state_pairs[s]) for s in range(obs.S)])
        if np.abs(new_v - v).max() < 1e-12:
            break
        v = new_v
    return q, new_v


def ref_planner_columns(obs: Observed, gamma: float) -> dict[str, list[float]]:
    """Per planner: (1 - γ) Q, the advantage over the state's range of Q, and the greedy flag."""
    columns = {}
    for name, optimistic in (("ce", False), ("optimistic", True)):
        q, _ = ref_plan(obs, gamma, optimistic)
        best = [max(q[p] for p in obs.state_pairs[obs.sa_state[sa]]) for sa in range(obs.SA)]
        worst = [min(q[p] for p in obs.state_pairs[obs.sa_state[sa]]) for sa in range(obs.SA)]
        columns[f"{name}_value"] = list(q * (1.0 - gamma))
        columns[f"{name}_advantage"] = [
            (q[sa] - best[sa]) / (best[sa] - worst[sa]) if best[sa] - worst[sa] > 1e-6 else 0.0
            for sa in range(obs.SA)
        ]
        columns[f"{name}_greedy"] = [1.0 if q[sa] >= best[sa] - 1e-6 else 0.0 for sa in range(obs.SA)]
    order = ("value", "advantage", "greedy")
    return {f"{n}_{c}": columns[f"{n}_{c}"] for n in ("ce", "optimistic") for c in order}


def ref_state_action_features(obs: Observed, gamma: float) -> tuple[tuple[str, ...], np.ndarray]:
    """Columns (names, (SA, F)) in the documented order of ``STATE_ACTION_FEATURES``; extend here."""
    columns = {
        "log1p_count": [math.log1p(n) for n in obs.sa_count],
        "reward": [(r / max(n, 1.0)) / obs.scale for r, n in zip(obs.reward_sum, obs.sa_count, strict=True)],
        "visited": [1.0 if n > 0 else 0.0 for n in obs.sa_count],
        "inv_sqrt_count": [1.0 / math.sqrt(1.0 + n) for n in obs.sa_count],
        "log1p_successors": [math.log1p(len(succ)) for succ in obs.successors],
        "horizon": [ref_horizon(gamma)] * obs.SA,
        **ref_planner_columns(obs, gamma),
    }
    return tuple(columns), np.array(list(columns.values()), dtype=np.float64).T.reshape(obs.SA, -1)


def ref_state_features(obs: Observed, gamma: float) -> tuple[tuple[str, ...], np.ndarray]:
    """Columns (names, (S, F)) in the documented order of ``STATE_FEATURES``; extend here."""
    visits = [sum(obs.sa_count[sa] for sa in obs.state_pairs[s]) for s in range(obs.S)]
    entries = [0.0] * obs.S  # N of observed transitions into each state
    for succ in obs.successors:
        for s_next, n in succ:
            entries[s_next] += n
    tried = [sum(obs.sa_count[sa] > 0 for sa in obs.state_pairs[s]) for s in range(obs.S)]
    columns = {
        "log1p_count": [math.log1p(v) for v in visits],
        "log1p_entries": [math.log1p(e) for e in entries],
        "tried_fraction": [t / obs.num_actions[s] for s, t in enumerate(tried)],
        "terminal": [1.0 if t else 0.0 for t in obs.terminal],
        "log_num_actions": [math.log(a) for a in obs.num_actions],
        "horizon": [ref_horizon(gamma)] * obs.S,
        "ce_value": list(ref_plan(obs, gamma, optimistic=False)[1] * (1.0 - gamma)),
        "optimistic_value": list(ref_plan(obs, gamma, optimistic=True)[1] * (1.0 - gamma)),
    }
    return tuple(columns), np.array(list(columns.values()), dtype=np.float64).T.reshape(obs.S, -1)


def ref_edge_features(obs: Observed) -> tuple[tuple[str, ...], list[list[np.ndarray]]]:
    """Per pair, per observed successor (in ``obs.successors`` order): the edge features, in the
    documented order of ``EDGE_FEATURES``; extend here."""
    names = ("p_hat", "log1p_count")
    features = [
        [np.array([n / obs.sa_count[sa], math.log1p(n)]) for _, n in obs.successors[sa]]
        for sa in range(obs.SA)
    ]
    return names, features


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    y = x @ weight.T
    return y if bias is None else y + bias


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact GELU x·Φ(x) = x/2 · (1 + erf(x / √2))."""
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def two_layer(x: np.ndarray, w: dict, prefix: str) -> np.ndarray:
    """Linear → GELU → (dropout off) → Linear; the state dict keys are ``prefix.0`` and ``prefix.3``."""
    hidden = gelu(linear(x, w[f"{prefix}.0.weight"], w[f"{prefix}.0.bias"]))
    return linear(hidden, w[f"{prefix}.3.weight"], w[f"{prefix}.3.bias"])


def layer_norm(x: np.ndarray, gain: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased variance
    return (x - mean) / np.sqrt(var + REF_LN_EPS) * gain + bias


def ref_attention(
    h_state: np.ndarray, h_sa: np.ndarray, obs: Observed, edges: list[list[np.ndarray]], w: dict, heads: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """m_sa = ‖_h Σ_s' α^h W_v^h h_s', α^h = softmax_s'(q^h·k^h / √C + β_h log max(P̂, 1e-12) + w_h·e).

    Returns the messages (SA, d) and, per pair, the attention weights (successors, heads)."""
    prefix = "block.attention"
    q = linear(h_sa, w[f"{prefix}.lin_query.weight"], w[f"{prefix}.lin_query.bias"])
    k = linear(h_state, w[f"{prefix}.lin_key.weight"], w[f"{prefix}.lin_key.bias"])
    v = linear(h_state, w[f"{prefix}.lin_value.weight"], w[f"{prefix}.lin_value.bias"])
    beta, w_edge = w[f"{prefix}.beta"], w[f"{prefix}.lin_edge.weight"]  # (H,), (H, edge_dim)
    C = q.shape[1] // heads
    message = np.zeros((obs.SA, heads * C))
    alphas = []
    for sa in range(obs.SA):
        successors = [s_next for s_next, _ in obs.successors[sa]]
        alpha_sa = np.zeros((len(successors), heads))
        for h in range(heads):
            cols = slice(h * C, (h + 1) * C)
            logits = []
            for s_next, e in zip(successors, edges[sa], strict=True):
                logit = float(q[sa, cols] @ k[s_next, cols]) / math.sqrt(C)
                logit += beta[h] * math.log(max(e[0], REF_LOG_EPS))
                logit += float(w_edge[h] @ e)
                logits.append(logit)
            if not logits:
                continue  # no observed successor: a zero message
            logits = np.array(logits)
            weights = np.exp(logits - logits.max())
            alpha_sa[:, h] = weights / weights.sum()
            for j, s_next in enumerate(successors):
                message[sa, cols] += alpha_sa[j, h] * v[s_next, cols]
        alphas.append(alpha_sa)
    return message, alphas


def ref_logits(counts: Counts, gamma: float, w: dict, heads: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Policy logits (SA,) after one sweep, and the sweep's attention weights."""
    obs = Observed(counts)
    _, sa_features = ref_state_action_features(obs, gamma)
    _, state_features = ref_state_features(obs, gamma)
    _, edges = ref_edge_features(obs)
    x_state = two_layer(state_features, w, "encode_state")
    x_sa = two_layer(sa_features, w, "encode_state_action")
    h_state, h_sa = x_state, x_sa

    # state-actions read their successors, the MDP's mean state embedding and their inputs
    message, alphas = ref_attention(h_state, h_sa, obs, edges, w, heads)
    context = h_state.mean(axis=0)
    new_sa = np.zeros_like(h_sa)
    for sa in range(obs.SA):
        update = two_layer(
            np.concatenate([h_sa[sa], message[sa], context, x_sa[sa]]), w, "block.update_state_action"
        )
        new_sa[sa] = layer_norm(
            h_sa[sa] + update, w["block.norm_state_action.weight"], w["block.norm_state_action.bias"]
        )
    h_sa = new_sa

    # states read the max and mean of their (updated) actions and their inputs
    new_state = np.zeros_like(h_state)
    for s in range(obs.S):
        own = h_sa[obs.state_pairs[s]]
        update = two_layer(
            np.concatenate([h_state[s], own.max(axis=0), own.mean(axis=0), x_state[s]]),
            w,
            "block.update_state",
        )
        new_state[s] = layer_norm(
            h_state[s] + update, w["block.norm_state.weight"], w["block.norm_state.bias"]
        )
    h_state = new_state

    logits = np.array(
        [
            two_layer(np.concatenate([h_sa[sa], h_state[obs.sa_state[sa]]]), w, "head")[0]
            for sa in range(obs.SA)
        ]
    )
    return logits, alphas


# ====================================================================== the comparison with the real network
WIDTH, HEADS = 8, 1
BETA = 0.7


def small_counts() -> Counts:
    """4 states with 2, 3, 1 and 2 actions; pairs (1, 2), (3, 0) and (3, 1) unvisited; several successors
    for (0, 0) and (1, 0); non-zero rewards; state 3 seen to end an episode (and never left)."""
    counts = Counts.empty([2, 3, 1, 2])
    transitions = [  # (s, a, r, s', terminated)
        (0, 0, 1.0, 1, False),
        (0, 0, 0.5, 1, False),
        (0, 0, -0.5, 2, False),
        (0, 1, 0.0, 0, False),
        (1, 0, 2.0, 2, False),
        (1, 0, -2.5, 3, True),
        (1, 0, 2.0, 2, False),
        (1, 0, 0.3, 0, False),
        (1, 1, -1.0, 1, False),
        (2, 0, 0.25, 3, True),
        (2, 0, 0.25, 3, True),
    ]
    for s, a, r, s_next, done in transitions:
        counts.update(s, a, r, s_next, done)
    return counts


def random_counts(seed: int, num_states: int = 12, num_actions: int = 3, transitions: int = 40) -> Counts:
    generator = torch.Generator().manual_seed(seed)
    n = transitions
    counts = Counts.empty([num_actions] * num_states)
    state = torch.randint(0, num_states, (n,), generator=generator)
    action = torch.randint(0, num_actions, (n,), generator=generator)
    reward = torch.randn(n, generator=generator, dtype=torch.float64)
    next_state = torch.randint(0, num_states, (n,), generator=generator)
    terminated = torch.rand(n, generator=generator) < 0.1
    return counts.update(state, action, reward, next_state, terminated)


def random_network(seed: int = 0) -> PolicyNetwork:
    """Random weights everywhere: default Linear init, larger random query, key and edge maps, random
    LayerNorm gains and biases, β = 0.7."""
    torch.manual_seed(seed)
    network = PolicyNetwork(width=WIDTH, heads=HEADS, num_layers=1, dropout=0.0)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if "norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                parameter.copy_(base + 0.3 * torch.randn(parameter.shape, generator=generator))
            elif "lin_query" in name or "lin_key" in name or "lin_edge" in name:
                # large enough that q·k and w·e move the attention well away from P̂
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        network.block.attention.beta.fill_(BETA)
    return network.double().eval()


def weights(network: PolicyNetwork) -> dict[str, np.ndarray]:
    return {name: value.detach().cpu().double().numpy() for name, value in network.state_dict().items()}


def real_logits(network: PolicyNetwork, graph) -> np.ndarray:
    """The real network's logits after one sweep, run in float64."""
    graph[STATE].x = graph[STATE].x.double()
    graph[STATE_ACTION].x = graph[STATE_ACTION].x.double()
    graph[TO].edge_attr = graph[TO].edge_attr.double()
    graph[FROM].edge_attr = graph[FROM].edge_attr.double()
    with torch.no_grad():
        return network.unroll(graph, 1)[-1].logits.numpy()


def graph_edge_features(obs: Observed, graph) -> list[list[np.ndarray]]:
    """The graph's ``from`` edge features regrouped like ``ref_edge_features`` (per pair, per successor)."""
    index, attr = graph[FROM].edge_index, graph[FROM].edge_attr.double().numpy()
    by_pair = {(int(sa), int(s_next)): attr[e] for e, (s_next, sa) in enumerate(index.T.tolist())}
    assert len(by_pair) == sum(len(succ) for succ in obs.successors)
    return [[by_pair[(sa, s_next)] for s_next, _ in obs.successors[sa]] for sa in range(obs.SA)]


CASES = {
    "small": lambda: (small_counts(), 0.9),
    "random-0": lambda: (random_counts(0), 0.95),
    "random-1": lambda: (random_counts(1), 0.9),
    "random-2": lambda: (random_counts(2, transitions=80), 0.99),
}


def test_reference_computes_the_documented_feature_columns():
    """Fails loudly when the graph's documented features change: the reference must follow them."""
    obs = Observed(small_counts())
    sa_names, sa_x = ref_state_action_features(obs, 0.9)
    state_names, state_x = ref_state_features(obs, 0.9)
    edge_names, _ = ref_edge_features(obs)
    assert sa_x.shape[1] == len(sa_names) and state_x.shape[1] == len(state_names)
    assert len(STATE_ACTION_FEATURES) == len(sa_names), (
        f"rlfm.graph.STATE_ACTION_FEATURES has {len(STATE_ACTION_FEATURES)} columns {STATE_ACTION_FEATURES}, "
        f"but the reference in {__file__} computes {len(sa_names)} {sa_names}: "
        "add the new columns to ref_state_action_features"
    )
    assert len(STATE_FEATURES) == len(state_names), (
        f"rlfm.graph.STATE_FEATURES has {len(STATE_FEATURES)} columns {STATE_FEATURES}, "
        f"but the reference computes {len(state_names)} {state_names}: add them to ref_state_features"
    )
    assert len(EDGE_FEATURES) == len(edge_names), (
        f"rlfm.graph.EDGE_FEATURES has {len(EDGE_FEATURES)} columns {EDGE_FEATURES}, "
        f"but the reference computes {len(edge_names)} {edge_names}: add them to ref_edge_features"
    )
    assert sa_names == STATE_ACTION_FEATURES, "the reference's state-action columns are out of order"
    assert state_names == STATE_FEATURES, "the reference's state columns are out of order"
    assert edge_names == EDGE_FEATURES, "the reference's edge columns are out of order"


@pytest.mark.parametrize("case", CASES)
def test_features_match_the_reference(case):
    counts, gamma = CASES[case]()
    obs = Observed(counts)
    _, sa_x = ref_state_action_features(obs, gamma)
    _, state_x = ref_state_features(obs, gamma)
    _, edges = ref_edge_features(obs)
    assert sa_x.shape[1] == len(STATE_ACTION_FEATURES), (
        "see test_reference_computes_the_documented_feature_columns"
    )
    # float64 features: the count statistics agree to rounding, the planners' columns to their tolerance
    graph = observation_graphs([counts], [gamma], dtype=torch.float64)[0]
    for got, want in ((graph[STATE_ACTION].x.numpy(), sa_x), (graph[STATE].x.numpy(), state_x)):
        np.testing.assert_allclose(got[:, :COUNT_FEATURES], want[:, :COUNT_FEATURES], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got[:, COUNT_FEATURES:], want[:, COUNT_FEATURES:], rtol=0, atol=1e-6)
    for got, want in zip(graph_edge_features(obs, graph), edges, strict=True):
        np.testing.assert_allclose(np.array(got).reshape(-1), np.array(want).reshape(-1), rtol=0, atol=1e-12)
    # the default float32 graph: agree to float32 rounding
    graph = observation_graph(counts, gamma)
    np.testing.assert_allclose(graph[STATE_ACTION].x.double().numpy(), sa_x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(graph[STATE].x.double().numpy(), state_x, rtol=1e-6, atol=1e-6)
    for got, want in zip(graph_edge_features(obs, graph), edges, strict=True):
        np.testing.assert_allclose(
            np.array(got).reshape(-1), np.array(want).reshape(-1), rtol=1e-6, atol=1e-6
        )


@pytest.mark.parametrize("case", CASES)
def test_one_sweep_matches_the_reference(case):
    counts, gamma = CASES[case]()
    network = random_network()
    want, alphas = ref_logits(counts, gamma, weights(network), HEADS)
    # the attention is not trivial: some pair has several successors, and its weights are neither P̂ nor uniform
    obs = Observed(counts)
    _, edges = ref_edge_features(obs)
    several = [sa for sa in range(obs.SA) if len(obs.successors[sa]) > 1]
    assert several, "the case should have a pair with several successors"
    from_p_hat = max(np.abs(alphas[sa][:, 0] - [e[0] for e in edges[sa]]).max() for sa in several)
    from_uniform = max(np.abs(alphas[sa][:, 0] - 1 / len(edges[sa])).max() for sa in several)
    assert from_p_hat > 0.05 and from_uniform > 0.05, (from_p_hat, from_uniform)
    assert any(not obs.successors[sa] for sa in range(obs.SA)), "the case should have an unvisited pair"

    # features built in float64: the one-sweep logits agree to float64 rounding
    got = real_logits(network, observation_graphs([counts], [gamma], dtype=torch.float64)[0])
    np.testing.assert_allclose(
        got, want, rtol=0, atol=1e-6
    )  # the planners' tolerance bounds the inputs' error
    # the default float32 graph, cast to float64: agree up to the features' float32 rounding
    got = real_logits(network, observation_graph(counts, gamma))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
