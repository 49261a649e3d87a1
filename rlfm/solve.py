r"""Exact solvers on the sparse form, batched over a PyG batch of many MDPs.

Every function takes a :class:`~rlfm.mdp.TabularMDP`, an MDP or observation graph (:mod:`rlfm.graph`), or a
PyG ``Batch`` of such graphs, whose MDPs are solved together as one disjoint union (each with its own γ).
Policies are (SA,) tensors of action probabilities, each state's block summing to 1.

Value iteration applies the Bellman optimality operator

.. math::
    Q(s, a) \leftarrow r(s, a) + \gamma \sum_{s'} P(s' \mid s, a) \max_{a'} Q(s', a')

until :math:`\frac{\gamma}{1-\gamma} \lVert V_{k+1} - V_k \rVert_\infty <` ``tol``, a bound on the error of V.
Policy evaluation solves :math:`(I - \gamma P_\pi) V = r_\pi` exactly, one dense solve per MDP.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from rlfm.graph import OF, STATE, STATE_ACTION, TO, mdp_graph
from rlfm.mdp import TabularMDP, offsets


@dataclass(frozen=True)
class MDPArrays:
    """The flat tensors the solvers need, for one MDP or a disjoint union of many.

    ``sa_state`` (SA,), ``edge_sa``/``edge_next``/``prob`` (E,), ``reward`` (SA,), ``gamma`` (B,),
    ``state_graph`` (S,) and ``sa_graph`` (SA,) map nodes to their MDP in the batch.
    """

    sa_state: Tensor
    edge_sa: Tensor
    edge_next: Tensor
    prob: Tensor
    reward: Tensor
    gamma: Tensor
    state_graph: Tensor
    sa_graph: Tensor
    num_states: int

    @property
    def num_graphs(self) -> int:
        return self.gamma.numel()

    @property
    def gamma_sa(self) -> Tensor:
        return self.gamma[self.sa_graph]

    @property
    def num_actions(self) -> Tensor:
        return torch.bincount(self.sa_state, minlength=self.num_states)

    def transition_matrix(self) -> Tensor:
        """P as a sparse CSR matrix (SA, S)."""
        crow = offsets(torch.bincount(self.edge_sa, minlength=self.reward.numel()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.sparse_csr_tensor(
                crow,
                self.edge_next,
                self.prob,
                (self.reward.numel(), self.num_states),
                check_invariants=False,
            )


def as_graph(mdp: TabularMDP | HeteroData) -> HeteroData:
    return mdp_graph(mdp) if isinstance(mdp, TabularMDP) else mdp


def mdp_arrays(mdp: TabularMDP | HeteroData, dtype: torch.dtype = torch.float64) -> MDPArrays:
    """Extract the solver's tensors from an MDP, a graph or a batch of graphs."""
    graph = as_graph(mdp)
    S, SA = graph[STATE].num_nodes, graph[STATE_ACTION].num_nodes
    batched = "batch" in graph[STATE]
    edge_sa, edge_next = graph[TO].edge_index
    return MDPArrays(
        sa_state=graph[OF].edge_index[1],
        edge_sa=edge_sa,
        edge_next=edge_next,
        prob=graph[TO].prob.to(dtype),
        reward=graph[STATE_ACTION].reward.to(dtype),
        gamma=graph.gamma.to(dtype).reshape(-1),
        state_graph=graph[STATE].batch if batched else edge_sa.new_zeros(S),
        sa_graph=graph[STATE_ACTION].batch if batched else edge_sa.new_zeros(SA),
        num_states=S,
    )


def state_max(q: Tensor, num_actions: Tensor) -> Tensor:
    """max over each state's actions of ``q`` (SA,), pairs grouped by state; returns (S,)."""
    return torch.segment_reduce(q, "max", lengths=num_actions)


def value_iteration(
    mdp: TabularMDP | HeteroData | MDPArrays,
    tol: float = 1e-8,
    max_iterations: int = 100_000,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """Optimal action values Q* (SA,) and state values V* (S,), to within ``tol`` in V."""
    arrays = mdp if isinstance(mdp, MDPArrays) else mdp_arrays(mdp, dtype)
    P = arrays.transition_matrix()
    gamma_sa, num_actions = arrays.gamma_sa, arrays.num_actions
    gamma_max = float(arrays.gamma.max())
    threshold = tol * (1 - gamma_max) / gamma_max
    v = arrays.reward.new_zeros(arrays.num_states)
    for _ in range(max_iterations):
        q = torch.addcmul(arrays.reward, gamma_sa, P @ v)
        v_next = state_max(q, num_actions)
        delta = float((v_next - v).abs().max())
        v = v_next
        if delta < threshold:
            break
    return q, v


def policy_matrices(arrays: MDPArrays, policy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Edges of P_π as (state, next state, weight) lists and r_π (S,)."""
    pi = policy.to(arrays.reward.dtype)
    r_pi = pi.new_zeros(arrays.num_states)
    r_pi.index_add_(0, arrays.sa_state, pi * arrays.reward)
    weight = pi[arrays.edge_sa] * arrays.prob
    return arrays.sa_state[arrays.edge_sa], arrays.edge_next, weight, r_pi


def evaluate_policy(
    mdp: TabularMDP | HeteroData | MDPArrays, policy: Tensor, dtype: torch.dtype = torch.float64
) -> Tensor:
    """V^π (S,) by one exact linear solve (I - γ P_π) V = r_π per MDP."""
    arrays = mdp if isinstance(mdp, MDPArrays) else mdp_arrays(mdp, dtype)
    src, dst, weight, r_pi = policy_matrices(arrays, policy)
    state_ptr = offsets(torch.bincount(arrays.state_graph, minlength=arrays.num_graphs)).tolist()
    edge_ptr = offsets(torch.bincount(arrays.state_graph[src], minlength=arrays.num_graphs)).tolist()
    values = torch.empty_like(r_pi)
    for b in range(arrays.num_graphs):
        lo, hi = state_ptr[b], state_ptr[b + 1]
        e0, e1 = edge_ptr[b], edge_ptr[b + 1]
        system = torch.eye(hi - lo, dtype=r_pi.dtype, device=r_pi.device)
        system.index_put_(
            (src[e0:e1] - lo, dst[e0:e1] - lo), -arrays.gamma[b] * weight[e0:e1], accumulate=True
        )
        values[lo:hi] = torch.linalg.solve(system, r_pi[lo:hi])
    return values


def uniform_policy(mdp: TabularMDP | HeteroData | MDPArrays) -> Tensor:
    """(SA,) the uniformly random policy."""
    arrays = mdp if isinstance(mdp, MDPArrays) else mdp_arrays(mdp)
    return 1.0 / arrays.num_actions[arrays.sa_state].to(arrays.reward.dtype)


def greedy_policy(scores: Tensor, sa_state: Tensor, num_states: int) -> Tensor:
    """(SA,) the deterministic policy taking each state's highest-scoring action (lowest index on ties)."""
    num_actions = torch.bincount(sa_state, minlength=num_states)
    best = state_max(scores, num_actions)
    index = torch.arange(scores.numel(), device=scores.device, dtype=torch.float64)
    candidate = torch.where(scores == best[sa_state], index, float(scores.numel()))
    first = torch.segment_reduce(candidate, "min", lengths=num_actions).long()
    policy = torch.zeros(scores.numel(), dtype=torch.float64, device=scores.device)
    policy[first] = 1.0
    return policy


def start_values(mdp: TabularMDP | HeteroData, values: Tensor) -> Tensor:
    """(B,) expected value under each MDP's start distribution, from ``values`` (S,)."""
    graph = as_graph(mdp)
    if "batch" in graph[STATE]:
        state_graph = graph[STATE].batch
    else:
        state_graph = torch.zeros(values.numel(), dtype=torch.long, device=values.device)
    weighted = graph[STATE].start.to(values.dtype) * values
    return values.new_zeros(graph.gamma.numel()).index_add_(0, state_graph, weighted)


def normalized_value(
    mdp: TabularMDP | HeteroData,
    policy: Tensor,
    optimal_start_value: Tensor | None = None,
    uniform_start_value: Tensor | None = None,
) -> Tensor:
    r"""(B,) :math:`(V^\pi(s_0) - V^{unif}(s_0)) / (V^*(s_0) - V^{unif}(s_0))`: 1 optimal, 0 uniform random.

    Needs the true MDP (start distribution included). Pass the optimal and uniform start values to skip
    their computation when scoring many policies on the same MDPs.
    """
    graph = as_graph(mdp)
    arrays = mdp_arrays(graph)
    if optimal_start_value is None:  # to 1e-8 relative to the rewards where they are small
        scale = min(1.0, float(arrays.reward.abs().max())) or 1.0
        optimal_start_value = start_values(graph, value_iteration(arrays, tol=1e-8 * scale)[1])
    if uniform_start_value is None:
        uniform_start_value = start_values(graph, evaluate_policy(arrays, uniform_policy(arrays)))
    value = start_values(graph, evaluate_policy(arrays, policy))
    # floored relative to the values' size (and at the smallest normal float): scores do not depend on the
    # reward scale, and an MDP where every policy is worth the same gets scores near 0, not NaN
    size = torch.maximum(optimal_start_value.abs(), uniform_start_value.abs())
    floor = (1e-12 * size).clamp(min=torch.finfo(size.dtype).tiny)
    return (value - uniform_start_value) / torch.maximum(optimal_start_value - uniform_start_value, floor)
