r"""Estimated models: R runs' empirical MDPs as one disjoint union, planned on together.

Run r's state s is union state ``r * S + s`` and its pair sa is union pair ``r * SA + sa``; the observed
successors of every run form one sparse (R·SA, R·S) matrix, so one sparse product per sweep serves all
runs. The agents plan with :func:`rlfm.solve.value_iteration` and an agent-specific backup
``Q = backup(V)`` (R, SA), states seen to end an episode held at 0, until the error of V is at most
ε·V̂_max in every run, :math:`\hat V_{\max} = \hat r_{\max} / (1 - \gamma)` from the largest observed |reward|.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rlfm.counts import Counts
from rlfm.solve import ActionLayout, MDPArrays, expectation, sparse_rows, stopping_threshold, value_iteration

RELATIVE_TOLERANCE = 1e-6  # ε above: the error allowed in V, relative to the value scale


@dataclass(frozen=True)
class EmpiricalModel:
    """The statistics of R runs in union indices.

    Attributes:
        layout: the shared action layout (S states, SA pairs per run).
        count: (R, SA) N(s, a).
        reward_sum: (R, SA) sum of observed rewards of each pair.
        edge_sa: (E,) union pair of each observed (s, a, s'), sorted.
        edge_next: (E,) union successor state.
        edge_count: (E,) N(s, a, s').
        terminal: (R, S) states seen to end an episode.
        scale: (R,) the largest observed |reward| (1 before any non-zero reward).
        reward_sq_sum: (R, SA) sum of the squared observed rewards of each pair.
    """

    layout: ActionLayout
    count: Tensor
    reward_sum: Tensor
    edge_sa: Tensor
    edge_next: Tensor
    edge_count: Tensor
    terminal: Tensor
    scale: Tensor
    reward_sq_sum: Tensor

    @classmethod
    def from_counts(cls, counts: list[Counts], layout: ActionLayout) -> EmpiricalModel:
        S, SA = layout.num_states, layout.num_pairs
        runs = len(counts)
        sizes = torch.tensor([c.transition_key.numel() for c in counts])
        run = torch.repeat_interleave(torch.arange(runs), sizes)
        key = torch.cat([c.transition_key for c in counts])
        return cls(
            layout=layout,
            count=torch.stack([c.sa_count for c in counts]).double(),
            reward_sum=torch.stack([c.reward_sum for c in counts]).double(),
            edge_sa=key // S + run * SA,
            edge_next=key % S + run * S,
            edge_count=torch.cat([c.transition_count for c in counts]).double(),
            terminal=torch.stack([c.terminal for c in counts]),
            scale=torch.tensor([c.reward_scale for c in counts], dtype=torch.float64),
            reward_sq_sum=torch.stack([c.reward_sq_sum for c in counts]).double(),
        )

    @property
    def runs(self) -> int:
        return self.count.shape[0]

    @property
    def visited(self) -> Tensor:
        """(R, SA) pairs tried at least once."""
        return self.count > 0

    @property
    def observed(self) -> Tensor:
        """(R,) transitions observed per run."""
        return self.count.sum(dim=1)

    @property
    def mean_reward(self) -> Tensor:
        """(R, SA) r̂(s, a), 0 where unvisited."""
        return self.reward_sum / self.count.clamp(min=1)

    @property
    def pair_count(self) -> Tensor:
        """(E,) N(s, a) of each edge's pair."""
        return self.count.reshape(-1)[self.edge_sa]

    @property
    def p_hat(self) -> Tensor:
        """(E,) P̂(s' | s, a) = N(s, a, s') / N(s, a)."""
        return self.edge_count / self.pair_count

    def log_term(self, delta: float = 0.1) -> Tensor:
        """(R, 1) the confidence term L = log(2 S A (t + 1) / δ), t the transitions observed so far."""
        SA = self.layout.num_pairs
        return torch.log(2.0 * SA * (self.observed + 1.0) / delta)[:, None]

    def matrix(self, weight: Tensor, copies: int = 1) -> Tensor:
        """Sparse CSR (copies·R·SA, copies·R·S) with ``weight`` on the observed edges.

        With ``copies`` > 1, ``weight`` (copies·E,) gives the weights of each copy of the edges in turn, and
        copy k's runs are union runs k·R .. (k + 1)·R - 1.
        """
        R, S, SA = self.runs, self.layout.num_states, self.layout.num_pairs
        shift = torch.arange(copies).repeat_interleave(self.edge_sa.numel())
        rows = self.edge_sa.repeat(copies) + shift * R * SA
        cols = self.edge_next.repeat(copies) + shift * R * S
        return sparse_rows(rows, cols, weight.double(), (copies * R * SA, copies * R * S))

    def arrays(self, gamma: float) -> MDPArrays:
        """The R empirical MDPs (r̂, P̂) as one disjoint union for the exact solvers of :mod:`rlfm.solve`,
        with certainty equivalence's conventions: an unvisited pair and every pair of a state seen to end an
        episode earn 0 and lead nowhere (the episode ends there)."""
        R, S, SA = self.runs, self.layout.num_states, self.layout.num_pairs
        live = self.visited & ~self.terminal[:, self.layout.sa_state]  # (R, SA)
        edge = live.reshape(-1)[self.edge_sa]
        run = torch.arange(R)
        return MDPArrays(
            sa_state=(run[:, None] * S + self.layout.sa_state).reshape(-1),
            edge_sa=self.edge_sa[edge],
            edge_next=self.edge_next[edge],
            prob=self.p_hat[edge],
            reward=torch.where(live, self.mean_reward, 0.0).reshape(-1),
            gamma=torch.full((R,), gamma, dtype=torch.float64),
            state_graph=run.repeat_interleave(S),
            sa_graph=run.repeat_interleave(SA),
            num_states=R * S,
        )


def untried_reach(model: EmpiricalModel, discount: float, known: int = 1) -> Tensor:
    r"""(R, SA) how near each pair leads to a pair not yet known, along the observed transitions:

    .. math::
        U(s, a) = 1 \text{ if } N(s, a) < m, \qquad
        U(s, a) = \delta \textstyle\sum_{s'} \hat P(s' \mid s, a) \max_b U(s', b) \text{ otherwise},

    0 at states seen to end an episode (nothing is left to try there). It is δ^d for a pair d steps of a
    deterministic path away from the nearest unknown pair (R-max's exploration value with reward 1 on
    pairs tried fewer than m = ``known`` times, its known threshold, and discount δ = ``discount`` ∈
    [0, 1)); δ = 0 marks the unknown pairs alone. m = 1: the untried pairs."""
    if not 0.0 <= discount < 1.0:
        raise ValueError(f"discount must be in [0, 1), got {discount}")
    if known < 1:
        raise ValueError(f"known must be at least 1, got {known}")
    live = ~model.terminal[:, model.layout.sa_state]  # (R, SA)
    is_known = model.count >= known
    unknown = (~is_known & live).double()
    if discount == 0.0:
        return unknown
    P = model.matrix(model.p_hat)

    def backup(values: Tensor) -> Tensor:
        return torch.where(is_known, discount * expectation(P, values), unknown)

    threshold = stopping_threshold(1.0, discount, RELATIVE_TOLERANCE)
    q, _ = value_iteration(backup, model.layout, threshold, terminal=model.terminal)
    return torch.where(live, q, 0.0)


def untried_scores(model: EmpiricalModel, discount: float, relative: bool, known: int = 1) -> Tensor:
    """(R, SA) the untried-pair bonus of the in-context agents before its scale β: :func:`untried_reach`
    U (pairs tried fewer than ``known`` times count as untried), or with ``relative`` U divided by its
    largest value among the state's actions (0 where no untried pair can be reached), so that the action
    on the shortest route to the unexplored gets 1 and one on a route k steps longer δ^k, however far away
    the untried pairs are."""
    reach = untried_reach(model, discount, known)
    if not relative:
        return reach
    largest = model.layout.state_max(reach)[:, model.layout.sa_state]  # (R, SA)
    return torch.where(largest > 0, reach / largest.clamp(min=1e-300), 0.0)
