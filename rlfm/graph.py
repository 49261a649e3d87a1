r"""The graph schema shared by true MDPs and observed experience.

Every MDP, true or estimated, is a :class:`~torch_geometric.data.HeteroData` with two node types and four
edge types, so PyG's batching shifts every relation:

==============================================  ========  =========================================
edge type                                        edges     meaning
==============================================  ========  =========================================
``(state, has, state_action)``                   SA        a state owns its state-action pairs
``(state_action, of, state)``                    SA        reverse of ``has``; sorted by pair
``(state_action, to, state)``                    E         a (known or observed) successor s' of (s, a)
``(state, from, state_action)``                  E         reverse of ``to``: where attention flows
==============================================  ========  =========================================

An *MDP graph* (:func:`mdp_graph`) holds the true model: ``to.prob`` (E,), ``state_action.reward`` (SA,),
``state.start`` and ``state.terminal`` (S,), and the graph-level ``gamma`` and ``reward_noise`` (1,).

An *observation graph* (:func:`observation_graph`) holds what was observed and is the network's input:
``state_action.x`` (SA, 12), ``state.x`` (S, 8) and ``to.edge_attr`` / ``from.edge_attr`` (E, 2) with
columns ``[P̂(s'|s,a), log(1 + N(s,a,s'))]``. The first six columns of each node type are statistics of
the counts; the rest are what two exact planners make of them (:data:`PLANNER_FEATURES`): certainty
equivalence, value iteration on (r̂, P̂) with unvisited pairs worth 0, and an optimistic planner whose
unvisited pairs are worth the largest value 1 / (1 - γ) and whose visited pairs get a bonus 1 / sqrt(N),

.. math::
    Q^{ce}(s,a) = \hat r(s,a) + \gamma \textstyle\sum_{s'} \hat P(s' \mid s,a) \max_{a'} Q^{ce}(s',a'),
    \qquad Q^{+}(s,a) = \hat r(s,a) + N(s,a)^{-1/2} + \gamma \textstyle\sum_{s'} \hat P(s' \mid s,a)
    \max_{a'} Q^{+}(s',a'),

each given as its value (1 - γ)·Q, its advantage relative to the state's range of action values (0 for the
best action, -1 for the worst) and whether the action is greedy. Exact sparse value iteration carries
values along paths of any length, so the network does not have to rediscover the Bellman backup; its
learned sweeps reason about what the data leave uncertain. It also carries ``to.prob`` = P̂ and ``state_action.reward`` =
r̂ / scale, so the exact solvers plan on it directly (certainty equivalence). With the true MDP at hand it
gets targets: ``state_action.q_star`` (Q* / scale) and ``state_action.target`` = softmax(Q* / (scale·τ)).
Edges grow with observed transitions plus S·A, never with S²·A.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.utils import softmax

from rlfm.counts import Counts
from rlfm.mdp import TabularMDP, offsets, state_of_pairs

STATE = "state"
STATE_ACTION = "state_action"
HAS = (STATE, "has", STATE_ACTION)
OF = (STATE_ACTION, "of", STATE)
TO = (STATE_ACTION, "to", STATE)
FROM = (STATE, "from", STATE_ACTION)

COUNT_FEATURES = 6  # the first columns of both node types: statistics of the counts
PLANNER_FEATURES = (
    "ce_value",
    "ce_advantage",
    "ce_greedy",
    "optimistic_value",
    "optimistic_advantage",
    "optimistic_greedy",
)
STATE_ACTION_FEATURES = (
    "log1p_count",
    "reward",
    "visited",
    "inv_sqrt_count",
    "log1p_successors",
    "horizon",
    *PLANNER_FEATURES,
)
STATE_FEATURES = (
    "log1p_count",
    "log1p_entries",
    "tried_fraction",
    "terminal",
    "log_num_actions",
    "horizon",
    "ce_value",
    "optimistic_value",
)
CE_ADVANTAGE = STATE_ACTION_FEATURES.index("ce_advantage")  # its state-action column
EDGE_FEATURES = ("p_hat", "log1p_count")
MAX_HORIZON = 1000.0  # 1 / (1 - γ) at which the horizon feature reaches 1
PLANNER_TOLERANCE = 1e-6  # accuracy of the planners' values, in units of the largest observed |reward|
# τ of the training target softmax(Q* / τ), on the normalised reward scale. Chosen on the validation MDPs
# over 0.2 (docs/choosing-on-validation.md); a sharper target keeps small Q-gaps (slippery MDPs) visible.
TARGET_TEMPERATURE = 0.05


def _relations(num_actions: Tensor, edge_sa: Tensor, edge_next: Tensor) -> dict:
    """The four edge types (local indices) for states with ``num_actions`` (S,) and E successor edges."""
    sa_state = state_of_pairs(num_actions)
    sa = torch.arange(sa_state.numel())
    return {
        HAS: {"edge_index": torch.stack([sa_state, sa])},
        OF: {"edge_index": torch.stack([sa, sa_state])},
        TO: {"edge_index": torch.stack([edge_sa, edge_next])},
        FROM: {"edge_index": torch.stack([edge_next, edge_sa])},
    }


def horizon_feature(gamma: float | Tensor) -> float | Tensor:
    """log(1 / (1 - γ)) / log(MAX_HORIZON): the effective horizon on a log scale, 1 at 1 / (1 - γ) = 1000."""
    if isinstance(gamma, Tensor):
        return torch.log(1.0 / (1.0 - gamma)) / math.log(MAX_HORIZON)
    return math.log(1.0 / (1.0 - gamma)) / math.log(MAX_HORIZON)


def planner_features(
    reward: Tensor,
    sa_count: Tensor,
    edge_sa: Tensor,
    edge_next: Tensor,
    p_hat: Tensor,
    sa_state: Tensor,
    terminal: Tensor,
    gamma: Tensor,
    state_graph: Tensor,
) -> tuple[Tensor, Tensor]:
    """The planner columns of a disjoint union of observation graphs (see the module docstring).

    Args:
        reward: (SA,) r̂ / scale; sa_count: (SA,) N(s, a); edge_sa, edge_next, p_hat: (E,) observed successors
        (global indices) and P̂; sa_state: (SA,) state of each pair; terminal: (S,) states seen to end an
        episode (worth 0 to both planners); gamma: (B,); state_graph: (S,).
    Returns:
        (SA, 6) state-action columns and (S, 2) state columns, float64.
    """
    from rlfm.solve import (  # rlfm.solve reads this schema
        MDPArrays,
        affine_rows,
        greedy_evaluator,
        stopping_threshold,
        value_iteration,
    )

    S = state_graph.numel()
    sa_graph = state_graph[sa_state]
    horizon = 1.0 / (1.0 - gamma)  # (B,) the largest value, in units of the reward scale
    ended = terminal[sa_state]  # pairs of states seen to end an episode: worth 0, no successors
    keep = ~ended[edge_sa]
    edge_sa, edge_next, p_hat = edge_sa[keep], edge_next[keep], p_hat[keep]
    optimistic_reward = torch.where(sa_count > 0, reward + sa_count.clamp(min=1).rsqrt(), horizon[sa_graph])
    rewards = torch.stack([reward, optimistic_reward]).masked_fill(ended, 0.0)  # (2, SA): CE, optimistic
    arrays = MDPArrays(sa_state, edge_sa, edge_next, p_hat, rewards[0], gamma, state_graph, sa_graph, S)

    def backup(values: Tensor) -> Tensor:  # both planners in one sparse product per sweep
        return affine_rows(rewards, arrays.transition_matrix, values)

    threshold = stopping_threshold(1.0, float(gamma.max()), PLANNER_TOLERANCE)
    initial = torch.zeros(2, S, dtype=torch.float64)
    evaluate = greedy_evaluator(arrays, reward=rewards)  # exact values of both planners' greedy policies
    q_both, v_both = value_iteration(backup, arrays.layout, threshold, initial=initial, evaluate=evaluate)
    columns_sa, columns_state = [], []
    for q, v in zip(q_both, v_both, strict=True):
        best, worst = (scatter_reduce(q, sa_state, S, how) for how in ("amax", "amin"))
        spread = (best - worst)[sa_state]
        advantage = torch.where(spread > PLANNER_TOLERANCE, (q - best[sa_state]) / spread, 0.0)
        greedy = (q >= best[sa_state] - PLANNER_TOLERANCE).double()
        columns_sa += [q / horizon[sa_graph], advantage, greedy]
        columns_state.append(v / horizon[state_graph])
    return torch.stack(columns_sa, dim=1), torch.stack(columns_state, dim=1)


def scatter_reduce(values: Tensor, index: Tensor, size: int, how: str) -> Tensor:
    """(size,) ``how`` ("amax", "amin", "sum", "mean") of ``values`` grouped by ``index``."""
    return values.new_zeros(size).scatter_reduce(0, index, values, how, include_self=False)


def mdp_graph(mdp: TabularMDP) -> HeteroData:
    """The true MDP as a graph (see the module docstring)."""
    S, SA = mdp.num_states, mdp.num_state_actions
    stores = _relations(mdp.num_actions, mdp.transition_sa, mdp.transition_next)
    stores[TO]["prob"] = mdp.transition_prob
    stores[STATE] = {"num_nodes": S, "start": mdp.start, "terminal": mdp.terminal}
    stores[STATE_ACTION] = {"num_nodes": SA, "action": mdp.sa_action, "reward": mdp.reward}
    stores["_global_store"] = {
        "gamma": torch.tensor([mdp.gamma], dtype=torch.float64),
        "reward_noise": torch.tensor([mdp.reward_noise], dtype=torch.float64),
    }
    return HeteroData.from_dict(stores)


def boltzmann_target(q_star: Tensor, sa_state: Tensor, num_states: int, temperature: float) -> Tensor:
    """(SA,) the training target softmax(Q* / τ) over each state's actions (``q_star`` (SA,) on the
    normalised reward scale, ``sa_state`` (SA,) each pair's state)."""
    return softmax(q_star / temperature, sa_state, num_nodes=num_states)


def observation_graph(
    counts: Counts,
    gamma: float,
    q_star: Tensor | None = None,
    temperature: float = TARGET_TEMPERATURE,
    planner: bool = True,
) -> HeteroData:
    """The network's input graph from observed ``counts`` (see the module docstring).

    Rewards are divided by ``counts.reward_scale``, the largest observed |reward| (1 before any is seen).
    With the true ``q_star`` (SA,) the graph also gets the targets at ``temperature``. With ``planner``
    False the node features are the count columns only (what a network without planner inputs reads),
    which skips the two value iterations.
    """
    q = None if q_star is None else [q_star]
    return observation_graphs([counts], [gamma], q, temperature, planner=planner)[0]


def observation_graphs(
    counts: list[Counts],
    gammas: list[float],
    q_star: list[Tensor] | None = None,
    temperature: float = TARGET_TEMPERATURE,
    dtype: torch.dtype = torch.float32,
    planner: bool = True,
) -> list[HeteroData]:
    """:func:`observation_graph` for many experiences at once (features computed in one pass)."""
    B = len(counts)
    num_states = torch.tensor([c.num_states for c in counts])
    num_pairs = torch.tensor([c.num_state_actions for c in counts])
    num_edges = torch.tensor([c.transition_key.numel() for c in counts])
    state_ptr, sa_ptr = offsets(num_states), offsets(num_pairs)
    num_actions = torch.cat([c.num_actions for c in counts])
    S, SA = num_actions.numel(), int(num_pairs.sum())
    sa_state = state_of_pairs(num_actions)  # global indices
    sa_graph = torch.repeat_interleave(torch.arange(B), num_pairs)
    state_graph = torch.repeat_interleave(torch.arange(B), num_states)
    edge_graph = torch.repeat_interleave(torch.arange(B), num_edges)
    key = torch.cat([c.transition_key for c in counts])
    edge_sa_local = key // num_states[edge_graph]
    edge_next_local = key % num_states[edge_graph]
    edge_sa = edge_sa_local + sa_ptr[edge_graph]
    edge_next = edge_next_local + state_ptr[edge_graph]

    sa_count = torch.cat([c.sa_count for c in counts]).to(dtype)
    edge_count = torch.cat([c.transition_count for c in counts]).to(dtype)
    scale = torch.tensor([c.reward_scale for c in counts], dtype=torch.float64)
    reward = (torch.cat([c.mean_reward for c in counts]) / scale[sa_graph]).to(dtype)
    terminal = torch.cat([c.terminal for c in counts])
    visited = (sa_count > 0).to(dtype)
    p_hat = edge_count / sa_count[edge_sa]
    horizon = horizon_feature(torch.tensor(gammas, dtype=torch.float64)).to(dtype)
    successors = torch.zeros(SA, dtype=dtype).index_add_(0, edge_sa, torch.ones_like(edge_count))
    gamma = torch.tensor(gammas, dtype=torch.float64)
    sa_x = torch.stack(
        [sa_count.log1p(), reward, visited, (1 + sa_count).rsqrt(), successors.log1p(), horizon[sa_graph]],
        dim=1,
    )
    state_count = torch.zeros(S, dtype=dtype).index_add_(0, sa_state, sa_count)
    entries = torch.zeros(S, dtype=dtype).index_add_(0, edge_next, edge_count)
    tried = torch.zeros(S, dtype=dtype).index_add_(0, sa_state, visited)
    actions = num_actions.to(dtype)
    state_x = torch.stack(
        [
            state_count.log1p(),
            entries.log1p(),
            tried / actions,
            terminal.to(dtype),
            actions.log(),
            horizon[state_graph],
        ],
        dim=1,
    )
    if planner:
        planner_sa, planner_state = planner_features(
            reward.double(),
            sa_count.double(),
            edge_sa,
            edge_next,
            p_hat.double(),
            sa_state,
            terminal,
            gamma,
            state_graph,
        )
        sa_x = torch.cat([sa_x, planner_sa.to(dtype)], dim=1)
        state_x = torch.cat([state_x, planner_state.to(dtype)], dim=1)
    edge_attr = torch.stack([p_hat, edge_count.log1p()], dim=1)
    sa_state_local = sa_state - state_ptr[sa_graph]
    sa_local = torch.arange(SA) - sa_ptr[sa_graph]
    action = sa_local - (torch.cat([offsets(c.num_actions)[:-1] for c in counts]))[sa_state]
    has_index = torch.stack([sa_state_local, sa_local])
    to_index = torch.stack([edge_sa_local, edge_next_local])
    if q_star is not None:
        q = (torch.cat(q_star).double() / scale[sa_graph]).to(dtype)
        target = boltzmann_target(q, sa_state, S, temperature)

    ns, npairs, nedges = num_states.tolist(), num_pairs.tolist(), num_edges.tolist()
    columns = {
        "state_x": state_x.split(ns),
        "terminal": terminal.split(ns),
        "sa_x": sa_x.split(npairs),
        "action": action.split(npairs),
        "reward": reward.split(npairs),
        "has": has_index.split(npairs, dim=1),
        "to": to_index.split(nedges, dim=1),
        "edge_attr": edge_attr.split(nedges),
        "prob": p_hat.split(nedges),
    }
    if q_star is not None:
        columns["q_star"], columns["target"] = q.split(npairs), target.split(npairs)
    graphs = []
    for b in range(B):
        has, to, edge_attr_b = columns["has"][b], columns["to"][b], columns["edge_attr"][b]
        sa_store = {
            "num_nodes": npairs[b],
            "x": columns["sa_x"][b],
            "action": columns["action"][b],
            "reward": columns["reward"][b],
        }
        if q_star is not None:
            sa_store["q_star"], sa_store["target"] = columns["q_star"][b], columns["target"][b]
        graphs.append(
            HeteroData.from_dict(
                {
                    "_global_store": {
                        "gamma": torch.tensor([gammas[b]], dtype=torch.float64),
                        "reward_scale": scale[b : b + 1],
                    },
                    STATE: {
                        "num_nodes": ns[b],
                        "x": columns["state_x"][b],
                        "terminal": columns["terminal"][b],
                    },
                    STATE_ACTION: sa_store,
                    HAS: {"edge_index": has},
                    OF: {"edge_index": has.flip(0)},
                    TO: {"edge_index": to, "edge_attr": edge_attr_b, "prob": columns["prob"][b]},
                    FROM: {"edge_index": to.flip(0), "edge_attr": edge_attr_b},
                }
            )
        )
    return graphs


def observed_diameters(data: HeteroData, chunk_entries: int = 1 << 22) -> Tensor:
    """(B,) for each MDP of ``data`` (one observation graph or a PyG batch of them): the diameter of its
    observed transition graph, the longest shortest path, in steps, from a state to a state it reaches
    along observed transitions s → s' (0 without transitions). Values carried one step per sweep need
    that many sweeps to cross the MDP. Breadth-first search from every state (scipy), ``chunk_entries``
    distances at a time, so memory stays bounded on large MDPs (time grows as states × transitions)."""
    state_store = data[STATE]
    S = state_store.num_nodes
    ptr = state_store.ptr.cpu() if "ptr" in state_store else torch.tensor([0, S])
    sa_state = data[OF].edge_index[1].cpu()
    edge_sa, edge_next = data[TO].edge_index.cpu()
    source, target = sa_state[edge_sa].numpy(), edge_next.numpy()
    adjacency = csr_matrix((np.ones(source.size, dtype=np.int8), (source, target)), shape=(S, S))
    diameters = []
    for lo, hi in zip(ptr[:-1].tolist(), ptr[1:].tolist(), strict=True):
        graph, n, longest = adjacency[lo:hi, lo:hi], hi - lo, 0
        rows = max(1, chunk_entries // max(n, 1))
        for start in range(0, n, rows):
            distance = shortest_path(graph, unweighted=True, indices=np.arange(start, min(n, start + rows)))
            reached = distance[np.isfinite(distance)]
            longest = max(longest, int(reached.max()) if reached.size else 0)
        diameters.append(longest)
    return torch.tensor(diameters, dtype=torch.long)
