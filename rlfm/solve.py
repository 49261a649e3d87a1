r"""The planning core: value iteration, policy evaluation, greedy policies and normalised values, each once.

Everything that plans or scores uses these functions: the prior's targets, the classical agents, the planner
columns of the network's input, the evaluation scorer and the training metrics.

**Layout.** A pair (s, a) of a state with A_s actions has index ``action_ptr[s] + a``; :class:`ActionLayout`
views the pairs (SA,) as a padded (S, A_max) table, so per-state maxima and argmaxima are one gather. A
disjoint union of MDPs (a PyG batch of graphs, or R runs of one MDP) is again one layout.

**Value iteration** (:func:`value_iteration`) applies a backup ``Q = backup(V)`` (R, SA), e.g. the Bellman
optimality operator of an MDP,

.. math::
    Q(s, a) = r(s, a) + \gamma \sum_{s'} P(s' \mid s, a)\, V(s'), \qquad
    V(s) = \min\bigl(\max_a Q(s, a),\ \text{upper}\bigr), \quad V(s) = 0 \text{ on terminal states},

until :math:`\lVert V_{k+1} - V_k \rVert_\infty \le` ``threshold`` in every run. For a γ-contraction the
error of V is then at most :math:`\frac{\gamma}{1-\gamma}\lVert V_{k+1} - V_k\rVert_\infty`
(:func:`stopping_threshold` turns a tolerance on V into that threshold). Finite horizons run an exact
number of sweeps instead. P is a sparse CSR matrix: nothing is ever S × S dense. Given an exact evaluator
of greedy policies, it also jumps every few sweeps to :math:`V^{\pi}` of the greedy policy π of its current
Q when that has the smaller Bellman residual (a policy-iteration step): at γ 0.99 that ends in tens of
sweeps where plain sweeps need thousands.

**Policy evaluation** (:func:`evaluate_policy`) solves :math:`(I - \gamma P_\pi) V = r_\pi` exactly with a
sparse LU factorisation (SciPy's SuperLU), many policies and many MDPs as one block-diagonal system.

**Normalised value** (:func:`normalize`): :math:`(V^\pi(\mu) - V^{unif}(\mu)) / (V^*(\mu) - V^{unif}(\mu))`,
1 for an optimal policy and 0 for the uniformly random one, μ the start distribution.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import Generator, Tensor
from torch_geometric.data import HeteroData

from rlfm.graph import OF, STATE, STATE_ACTION, TO, mdp_graph, scatter_reduce
from rlfm.mdp import TabularMDP, action_ptr, offsets, state_of_pairs

MAX_ITERATIONS = 100_000
EVALUATE_EVERY = 32  # sweeps between the exact policy-evaluation jumps of value_iteration(evaluate=...)
GAP_FLOOR = 1e-12  # the smallest normaliser V* - V^unif, relative to the size of the values
# V* - V^unif below VALUE_RESOLUTION × max|r| / (1 - γ) is rounding: every policy is worth the same
VALUE_RESOLUTION = 1e-7


class ActionLayout:
    """Each state's block of actions as a padded (S, A_max) table; every method is batched over R rows.

    Attributes:
        num_actions: (S,), action_ptr: (S + 1,), sa_state: (SA,) state of each pair,
        pad: (S, A_max) pair index of each (state, slot), or SA where the state has fewer actions.
    """

    def __init__(self, num_actions: Tensor) -> None:
        self.num_actions = torch.as_tensor(num_actions, dtype=torch.long)
        self.action_ptr = action_ptr(self.num_actions)
        self.num_states = self.num_actions.numel()
        self.num_pairs = int(self.action_ptr[-1])
        self.sa_state = state_of_pairs(self.num_actions)
        A = int(self.num_actions.max()) if self.num_states else 0
        slots = torch.arange(A, device=self.num_actions.device)
        self.valid = slots < self.num_actions[:, None]  # (S, A_max)
        self.pad = torch.where(self.valid, self.action_ptr[:-1, None] + slots, self.num_pairs)
        self.regular = bool(self.valid.all())  # every state has A_max actions: (R, SA) is (R, S, A_max)

    @classmethod
    def from_pairs(cls, sa_state: Tensor, num_states: int) -> ActionLayout:
        """The layout of pairs whose states are ``sa_state`` (SA,), grouped by state."""
        return cls(torch.bincount(sa_state, minlength=num_states))

    def padded(self, q: Tensor, fill: float = -torch.inf) -> Tensor:
        """(R, S, A_max) view of ``q`` (R, SA), ``fill`` in the missing slots."""
        if self.regular:
            return q.reshape(q.shape[0], self.num_states, -1)
        return torch.nn.functional.pad(q, (0, 1), value=fill)[:, self.pad]

    def state_max(self, q: Tensor) -> Tensor:
        """(R, S) max over each state's actions of ``q`` (R, SA)."""
        return self.padded(q).amax(dim=-1)

    def policy_mean(self, q: Tensor, policy: Tensor) -> Tensor:
        """(R, S) Σ_a π(a | s) q(s, a) of ``q`` (R, SA) under ``policy`` (R, SA) or (SA,)."""
        out = q.new_zeros(q.shape[0], self.num_states)
        return out.index_add_(1, self.sa_state, q * policy)

    def greedy_actions(
        self, q: Tensor, priority: Tensor | None = None, tolerance: Tensor | float = 0.0
    ) -> Tensor:
        """(R, S) each state's best action under ``q`` (R, SA): actions within ``tolerance`` (R, 1) of the
        best tie, and ties go to the highest ``priority`` (R, SA) in [0, 1), else to the lowest index."""
        best = self.state_max(q)[:, self.sa_state]  # (R, SA)
        key = torch.where(q >= best - tolerance, 1.0 + (0.0 if priority is None else priority), 0.0)
        return self.padded(key, fill=-1.0).argmax(dim=-1)

    def one_hot(self, actions: Tensor) -> Tensor:
        """(R, SA) the deterministic policies taking ``actions`` (R, S)."""
        policy = torch.zeros(actions.shape[0], self.num_pairs, dtype=torch.float64, device=actions.device)
        return policy.scatter_(1, self.action_ptr[:-1] + actions, 1.0)

    def greedy_policy(self, q: Tensor) -> Tensor:
        """The deterministic greedy policy of ``q``, (SA,) or (R, SA) like ``q``, ties to the lowest index."""
        policy = self.one_hot(self.greedy_actions(q.reshape(-1, self.num_pairs)))
        return policy.reshape(q.shape)

    def uniform(self, runs: int) -> Tensor:
        """(R, SA) the uniformly random policy."""
        return (1.0 / self.num_actions[self.sa_state].double()).expand(runs, -1).clone()

    def random_actions(self, states: Tensor, generator: Generator) -> Tensor:
        """(R,) uniformly random actions in ``states`` (R,)."""
        u = torch.rand(states.shape, generator=generator, dtype=torch.float64)
        return (u * self.num_actions[states]).long().clamp(max=self.num_actions[states] - 1)


class NotConvergedError(RuntimeError):
    """Value iteration reached its sweep limit before its stopping rule held."""


def stopping_threshold(scale: Tensor | float, gamma: Tensor | float, tolerance: float) -> Tensor | float:
    """The change ‖V_{k+1} - V_k‖∞ below which the error of V is at most ``tolerance`` × ``scale``."""
    return tolerance * scale * (1.0 - gamma) / gamma


def value_iteration(
    backup: Callable[[Tensor], Tensor],
    layout: ActionLayout,
    threshold: Tensor | float,
    *,
    terminal: Tensor | None = None,
    initial: Tensor | None = None,
    upper: Tensor | None = None,
    reduce: Callable[[Tensor], Tensor] | None = None,
    sweeps: int | None = None,
    max_iterations: int = MAX_ITERATIONS,
    evaluate: Callable[[Tensor], Tensor] | None = None,
    evaluate_every: int = EVALUATE_EVERY,
) -> tuple[Tensor, Tensor]:
    """Iterate ``V ← reduce(backup(V))`` (see the module docstring); returns Q (R, SA) and V (R, S).

    Args:
        backup: maps V (R, S) to Q (R, SA); a γ-contraction.
        layout: the pairs of each state (shared by the R rows).
        threshold: (R,) or a number: stop once no row's values change by more (see :func:`stopping_threshold`).
        terminal: (R, S) or (S,) states held at value 0.
        initial: (R, S) warm start (default: zeros, as many rows as ``terminal``, else one).
        upper: (R, 1) cap on V (optimistic planners), applied after ``reduce``.
        reduce: Q (R, SA) to V (R, S); default the max over actions (optimal values), a policy's
            expectation (:meth:`ActionLayout.policy_mean`) evaluates that policy.
        sweeps: run exactly this many sweeps from ``initial`` (finite-horizon values), no stopping rule.
        evaluate: maps Q (R, SA) to the exact values (R, S) of its greedy policy (e.g. by
            :func:`evaluate_policy`). Every ``evaluate_every`` sweeps a row jumps to those values when their
            Bellman residual is smaller than the row's last change (policy iteration's step, kept only where
            it helps, so the stopping rule and its error bound are unchanged). On long horizons (γ near 1)
            this ends in a few jumps where plain sweeps need thousands.
    Raises:
        NotConvergedError: the stopping rule did not hold within ``max_iterations`` sweeps.
    """
    reduce = layout.state_max if reduce is None else reduce
    if initial is None:
        rows = terminal.shape[0] if terminal is not None and terminal.dim() == 2 else 1
        initial = torch.zeros(rows, layout.num_states, dtype=torch.float64)

    def sweep(values: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        """The next values from ``q`` = backup(``values``), and each row's change (R,)."""
        new_values = reduce(q)
        if upper is not None:
            new_values = torch.minimum(new_values, upper)
        if terminal is not None:
            new_values = new_values.masked_fill(terminal, 0.0)
        return new_values, (new_values - values).abs().amax(dim=1)

    values = initial
    q = backup(values)
    for iteration in range(max_iterations if sweeps is None else sweeps):
        values, change = sweep(values, q)
        q = backup(values)
        if sweeps is None and bool((change <= threshold).all()):
            return q, values
        if evaluate is not None and sweeps is None and iteration % evaluate_every == evaluate_every - 1:
            jump = evaluate(q)
            if terminal is not None:
                jump = jump.masked_fill(terminal, 0.0)
            jump_q = backup(jump)
            residual = sweep(jump, jump_q)[1]
            better = residual < change
            values = torch.where(better[:, None], jump, values)
            q = torch.where(better[:, None], jump_q, q)
    if sweeps is None:
        raise NotConvergedError(
            f"value iteration did not converge in {max_iterations} sweeps: the values still change by "
            f"{float(change.max()):.3g} (stopping threshold {float(torch.as_tensor(threshold).min()):.3g}); "
            "is gamma close to 1 or are the rewards huge?"
        )
    return q, values


def sparse_rows(rows: Tensor, cols: Tensor, weight: Tensor, shape: tuple[int, int]) -> Tensor:
    """A sparse CSR matrix ``shape`` with ``weight`` at (``rows``, ``cols``) (E,), ``rows`` sorted."""
    crow = offsets(torch.bincount(rows, minlength=shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse CSR support is flagged as beta
        return torch.sparse_csr_tensor(crow, cols, weight, shape, check_invariants=False)


def affine_rows(offset: Tensor, matrix: Tensor, values: Tensor) -> Tensor:
    """(R, M) ``offset`` (R, M) or (M,) + ``matrix`` (M, N) times each row of ``values`` (R, N).

    One fused sparse matrix-vector product per row, written in place: torch's CSR matrix-vector kernel is
    several times faster than its matrix-matrix product with the transposed (non-contiguous) ``values.T``,
    and the rows here are few (planners, policies)."""
    offset = offset.expand(values.shape[0], matrix.shape[0])
    out = offset.new_empty(offset.shape)
    for row in range(values.shape[0]):
        torch.addmv(offset[row], matrix, values[row], out=out[row])
    return out


def expectation(matrix: Tensor, values: Tensor) -> Tensor:
    """(R, SA) Σ_s' W(s' | s, a) V(s') from a union matrix (R·SA, R·S) and ``values`` (R, S)."""
    runs = values.shape[0]
    return (matrix @ values.reshape(-1)).reshape(runs, -1)


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

    @cached_property
    def layout(self) -> ActionLayout:
        return ActionLayout.from_pairs(self.sa_state, self.num_states)

    @cached_property
    def discounted_prob(self) -> Tensor:
        """(E,) γ(s, a) P(s' | s, a) of each edge, γ of its MDP."""
        return self.gamma[self.sa_graph][self.edge_sa] * self.prob

    @cached_property
    def transition_matrix(self) -> Tensor:
        """γ(s, a) P(s' | s, a) as a sparse CSR matrix (SA, S)."""
        shape = (self.reward.numel(), self.num_states)
        return sparse_rows(self.edge_sa, self.edge_next, self.discounted_prob, shape)

    def bellman_backup(self, values: Tensor) -> Tensor:
        """(R, SA) r(s, a) + γ Σ_s' P(s' | s, a) V(s') for ``values`` (R, S)."""
        return affine_rows(self.reward, self.transition_matrix, values)


def as_graph(mdp: TabularMDP | HeteroData) -> HeteroData:
    return mdp_graph(mdp) if isinstance(mdp, TabularMDP) else mdp


def mdp_arrays(mdp: TabularMDP | HeteroData | MDPArrays, dtype: torch.dtype = torch.float64) -> MDPArrays:
    """Extract the solver's tensors from an MDP, a graph or a batch of graphs."""
    if isinstance(mdp, MDPArrays):
        return mdp
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


def optimal_values(
    mdp: TabularMDP | HeteroData | MDPArrays, tol: float = 1e-8, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """Optimal action values Q* (SA,) and state values V* (S,) of an MDP or a union, to within ``tol`` in V."""
    arrays = mdp_arrays(mdp, dtype)
    gamma = float(arrays.gamma.max()) if arrays.num_graphs else 0.5
    threshold = stopping_threshold(1.0, gamma, tol)
    q, v = value_iteration(arrays.bellman_backup, arrays.layout, threshold, evaluate=greedy_evaluator(arrays))
    return q[0], v[0]


def evaluate_policy(
    mdp: TabularMDP | HeteroData | MDPArrays,
    policy: Tensor,
    reward: Tensor | None = None,
    spread: Tensor | None = None,
) -> Tensor:
    r"""V^π by one exact sparse solve of (I - γ P_π) V = r_π: ``policy`` (SA,) gives (S,), (U, SA) gives (U, S).

    ``reward`` (U, SA) replaces the MDP's rewards, one row per policy (e.g. a planner's optimistic rewards).
    ``spread`` (SA,) or (U, SA) adds to each pair's successors (whose probabilities then sum to 1 - spread)
    a uniform draw over the states of its own MDP, as a posterior's prior mass (PSRL): with
    :math:`u = \gamma\, \mathrm{spread}_\pi` and the sparse rest A = I - γ P_π, Sherman–Morrison per MDP
    of n states gives

    .. math::
        V = x + y\, \frac{\bar x}{1 - \bar y}, \qquad A x = r_\pi, \quad A y = u,

    :math:`\bar x, \bar y` the means over the MDP's states: one factorisation, two right-hand sides, nothing
    dense."""
    arrays = mdp_arrays(mdp)
    S, SA = arrays.num_states, arrays.reward.numel()
    pi = policy.detach().to("cpu", torch.float64).reshape(-1, SA)
    U = pi.shape[0]
    reward = (arrays.reward if reward is None else reward).cpu()
    sa_state, edge_sa, edge_next = arrays.sa_state.cpu(), arrays.edge_sa.cpu(), arrays.edge_next.cpu()
    r_pi = torch.zeros(U, S, dtype=torch.float64).index_add_(1, sa_state, pi * reward)
    weight = pi[:, edge_sa] * arrays.discounted_prob.cpu()  # (U, E)
    shift = (torch.arange(U) * S)[:, None]
    rows = (shift + sa_state[edge_sa]).reshape(-1).numpy()
    cols = (shift + edge_next).reshape(-1).numpy()
    transition = scipy.sparse.csc_matrix((weight.reshape(-1).numpy(), (rows, cols)), shape=(U * S, U * S))
    system = scipy.sparse.identity(U * S, format="csc") - transition
    if spread is None:
        values = torch.from_numpy(
            np.atleast_1d(scipy.sparse.linalg.spsolve(system, r_pi.reshape(-1).numpy()))
        )
    else:
        gamma = arrays.gamma.cpu()[arrays.sa_graph.cpu()]  # (SA,)
        u = torch.zeros(U, S, dtype=torch.float64).index_add_(1, sa_state, pi * gamma * spread.cpu())
        right = torch.stack([r_pi.reshape(-1), u.reshape(-1)], dim=1).numpy()
        x, y = torch.from_numpy(scipy.sparse.linalg.splu(system).solve(right)).reshape(U, S, 2).unbind(-1)
        state_graph = arrays.state_graph.cpu()
        size = torch.bincount(state_graph, minlength=arrays.num_graphs).double()  # (B,)

        def graph_mean(z: Tensor) -> Tensor:  # (U, S) -> (U, S), each state's MDP's mean of z
            total = torch.zeros(U, arrays.num_graphs, dtype=torch.float64).index_add_(1, state_graph, z)
            return (total / size)[:, state_graph]

        values = x + y * graph_mean(x) / (1.0 - graph_mean(y))
    values = values.reshape(U, S).to(arrays.reward.device)
    return values.reshape(S) if policy.dim() == 1 else values


def greedy_evaluator(arrays: MDPArrays, reward: Tensor | None = None) -> Callable[[Tensor], Tensor]:
    """The ``evaluate`` of :func:`value_iteration` for ``arrays``: Q (R, SA) to the exact values (R, S) of
    its greedy policies, with ``reward`` (R, SA) in place of the MDP's (one row per planner)."""
    return lambda q: evaluate_policy(arrays, arrays.layout.greedy_policy(q), reward=reward)


def uniform_policy(mdp: TabularMDP | HeteroData | MDPArrays) -> Tensor:
    """(SA,) the uniformly random policy."""
    return mdp_arrays(mdp).layout.uniform(1)[0]


def start_values(mdp: TabularMDP | HeteroData, values: Tensor) -> Tensor:
    """(B,) expected value under each MDP's start distribution, from ``values`` (S,)."""
    graph = as_graph(mdp)
    if "batch" in graph[STATE]:
        state_graph = graph[STATE].batch
    else:
        state_graph = torch.zeros(values.numel(), dtype=torch.long, device=values.device)
    weighted = graph[STATE].start.to(values.dtype) * values
    return values.new_zeros(graph.gamma.numel()).index_add_(0, state_graph, weighted)


def normalizer(optimal: Tensor, uniform: Tensor) -> Tensor:
    """V* - V^unif, floored at ``GAP_FLOOR`` × max(|V*|, |V^unif|) and at the smallest normal float: scores do
    not depend on the scale of the rewards, and an MDP where every policy is worth the same scores 0, not NaN."""
    size = torch.maximum(optimal.abs(), uniform.abs())
    return torch.maximum(optimal - uniform, (GAP_FLOOR * size).clamp(min=torch.finfo(size.dtype).tiny))


def normalize(value: Tensor, optimal: Tensor, uniform: Tensor) -> Tensor:
    """(V^π - V^unif) / (V* - V^unif), broadcast over the arguments (the normaliser floored, :func:`normalizer`);
    0 where V* - V^unif is at that floor (an MDP where every policy is worth the same)."""
    gain, norm = value - uniform, normalizer(optimal, uniform)
    return torch.where(optimal - uniform < norm, torch.zeros_like(gain), gain / norm)


def optimal_and_uniform_start_values(mdp: TabularMDP | HeteroData) -> tuple[Tensor, Tensor]:
    """(B,) V*(μ) and V^unif(μ) of each MDP; V* to 1e-8 relative to the rewards where they are small.

    Where V* - V^unif is below ``VALUE_RESOLUTION`` × max|r| / (1 - γ) of its MDP (rounding, e.g. V* = 0 and
    V^unif = -1e-17 when no reward is reachable), V^unif is set to V*: scores there are 0, not ±10^9."""
    graph = as_graph(mdp)
    arrays = mdp_arrays(graph)
    scale = min(1.0, float(arrays.reward.abs().max())) if arrays.reward.numel() else 1.0
    optimal = start_values(graph, optimal_values(arrays, tol=1e-8 * (scale or 1.0))[1])
    uniform = start_values(graph, evaluate_policy(arrays, uniform_policy(arrays)))
    largest = scatter_reduce(arrays.reward.abs(), arrays.sa_graph, arrays.num_graphs, "amax")
    resolution = VALUE_RESOLUTION * largest / (1.0 - arrays.gamma)
    return optimal, torch.where(optimal - uniform < resolution, optimal, uniform)


def normalized_value(
    mdp: TabularMDP | HeteroData,
    policy: Tensor,
    optimal_start_value: Tensor | None = None,
    uniform_start_value: Tensor | None = None,
) -> Tensor:
    """(B,) the normalised value of ``policy`` (SA,) on each MDP: 1 optimal, 0 uniformly random.

    Needs the true MDP (start distribution included). Pass the optimal and uniform start values to skip
    their computation when scoring many policies on the same MDPs.
    """
    graph = as_graph(mdp)
    if optimal_start_value is None or uniform_start_value is None:
        optimal_start_value, uniform_start_value = optimal_and_uniform_start_values(graph)
    value = start_values(graph, evaluate_policy(graph, policy))
    return normalize(value, optimal_start_value, uniform_start_value)
