r"""Planning on estimated models: R runs' empirical MDPs as one disjoint union, solved together.

Run r's state s is union state ``r * S + s`` and its pair sa is union pair ``r * SA + sa``; the observed
successors of every run form one sparse (R·SA, R·S) matrix, so one sparse product per sweep serves all
runs. Value iteration applies an agent-specific backup ``Q = backup(V)`` (R, SA), then

.. math::
    V(s) = \min\bigl(\max_a Q(s, a), \text{upper}\bigr), \qquad V(s) = 0 \text{ for states seen to end an episode},

until :math:`\frac{\gamma}{1-\gamma}\lVert V_{k+1} - V_k\rVert_\infty \le \epsilon\,\hat V_{\max}` in every
run, where :math:`\hat V_{\max} = \hat r_{\max} / (1 - \gamma)` from the largest observed |reward|.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rlfm.agents.base import ActionLayout
from rlfm.counts import Counts

RELATIVE_TOLERANCE = 1e-6  # ε above: the error allowed in V, relative to the value scale
MAX_ITERATIONS = 20_000


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
        crow = torch.zeros(copies * R * SA + 1, dtype=torch.long)
        torch.cumsum(torch.bincount(rows, minlength=copies * R * SA), 0, out=crow[1:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sparse CSR support is flagged as beta
            return torch.sparse_csr_tensor(
                crow, cols, weight.double(), (copies * R * SA, copies * R * S), check_invariants=False
            )


def expectation(matrix: Tensor, values: Tensor) -> Tensor:
    """(R, SA) Σ_s' W(s' | s, a) V(s') from a union matrix (R·SA, R·S) and ``values`` (R, S)."""
    runs = values.shape[0]
    return (matrix @ values.reshape(-1)).reshape(runs, -1)


def value_iteration(
    backup: Callable[[Tensor], Tensor],
    layout: ActionLayout,
    gamma: float,
    terminal: Tensor,
    value_scale: Tensor,
    initial: Tensor | None = None,
    upper: Tensor | None = None,
    relative_tolerance: float = RELATIVE_TOLERANCE,
    max_iterations: int = MAX_ITERATIONS,
) -> tuple[Tensor, Tensor]:
    """Iterate ``V ← max_a backup(V)`` to its fixed point; returns Q (R, SA) and V (R, S).

    Args:
        backup: maps V (R, S) to Q (R, SA); must be a γ-contraction.
        terminal: (R, S) states held at value 0.
        value_scale: (R,) the scale V̂_max of each run's values, for the stopping rule.
        initial: (R, S) warm start (default zeros), e.g. the previous plan's values.
        upper: (R, 1) a cap on V (optimistic planners: V̂_max), applied after the max over actions.
    """
    runs = terminal.shape[0]
    values = torch.zeros(runs, layout.num_states, dtype=torch.float64) if initial is None else initial
    threshold = relative_tolerance * value_scale * (1.0 - gamma) / gamma  # (R,)
    q = backup(values)
    for _ in range(max_iterations):
        new_values = layout.state_max(q)
        if upper is not None:
            new_values = torch.minimum(new_values, upper)
        new_values = new_values.masked_fill(terminal, 0.0)
        converged = bool(((new_values - values).abs().amax(dim=1) <= threshold).all())
        values = new_values
        q = backup(values)
        if converged:
            break
    return q, values
