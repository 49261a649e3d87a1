r"""Pessimistic offline planners: VI-LCB and PEVI (tabular case).

Both subtract an uncertainty penalty and keep Q inside :math:`[-\hat V_{\max}, \hat V_{\max}]`, with
:math:`\hat V_{\max} = \hat r_{\max} / (1 - \gamma)` from the largest observed |reward| and
:math:`L = \log(2 S A (t + 1) / \delta)`, δ = 0.1, t the number of transitions.

- **VI-LCB** (Rashidinejad, Zhu, Ma, Jiao & Russell, 2021), Hoeffding penalty:

  .. math::
      Q = \operatorname{clip}\bigl(\hat r + \gamma \hat P V - c \hat V_{\max}\sqrt{L / N}\bigr),
      \qquad Q = -\hat V_{\max} \text{ if } N(s, a) = 0.

- **PEVI** (Jin, Yang & Wang, 2021) with one-hot features: the ridge estimate (λ = 1) shrinks the
  backup toward 0 and the penalty is :math:`\beta \lVert\phi\rVert_{\Lambda^{-1}} = c \hat V_{\max}
  \sqrt{L / (N + \lambda)}`:

  .. math::
      Q = \operatorname{clip}\Bigl(\frac{\sum_i (r_i + \gamma V(s'_i))}{N + \lambda}
      - c \hat V_{\max} \sqrt{\frac{L}{N + \lambda}}\Bigr),

  so an unvisited pair gets :math:`-c \hat V_{\max} \sqrt{L / \lambda}` (pessimistic) without a special case.

Both act and exploit greedily on their pessimistic Q. They do not explore, so they take part in the
offline protocol only.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from rlfm.agents.model_based import ModelBasedAgent
from rlfm.agents.planning import EmpiricalModel
from rlfm.solve import expectation, value_iteration

PESSIMISTIC_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


class VILCB(ModelBasedAgent):
    """VI-LCB; ``c`` scales the penalty. Grid: c ∈ {0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1}."""

    name = "vi_lcb"
    modes: ClassVar[frozenset[str]] = frozenset({"offline"})
    grid: ClassVar[dict[str, tuple[float, ...]]] = {"c": PESSIMISTIC_GRID}
    defaults: ClassVar[dict[str, float]] = {"c": 0.1}
    hyperparameter_names = ("c",)

    def solve(self, model: EmpiricalModel) -> tuple[Tensor, Tensor]:
        vmax = self.value_bound(model)
        P = model.matrix(model.p_hat)
        penalty = self.params["c"] * vmax * torch.sqrt(model.log_term() / model.count.clamp(min=1.0))
        base = model.mean_reward - penalty
        visited, gamma = model.visited, self.gamma

        def backup(values: Tensor) -> Tensor:
            q = (base + gamma * expectation(P, values)).clamp(min=-vmax, max=vmax)
            return torch.where(visited, q, -vmax)

        q, self.values = value_iteration(
            backup, self.layout, self.threshold(vmax), terminal=model.terminal, initial=self.values
        )
        return q, q


class PEVI(ModelBasedAgent):
    """PEVI with one-hot features (ridge λ = 1); ``c`` scales β. Grid: c ∈ {0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1}."""

    name = "pevi"
    modes: ClassVar[frozenset[str]] = frozenset({"offline"})
    grid: ClassVar[dict[str, tuple[float, ...]]] = {"c": PESSIMISTIC_GRID}
    defaults: ClassVar[dict[str, float]] = {"c": 0.1}
    hyperparameter_names = ("c",)
    ridge = 1.0

    def solve(self, model: EmpiricalModel) -> tuple[Tensor, Tensor]:
        vmax = self.value_bound(model)
        regularised = model.count + self.ridge  # (R, SA) N + λ
        P = model.matrix(model.edge_count / regularised.reshape(-1)[model.edge_sa])
        penalty = self.params["c"] * vmax * torch.sqrt(model.log_term() / regularised)
        base = model.reward_sum / regularised - penalty
        gamma = self.gamma

        def backup(values: Tensor) -> Tensor:
            return (base + gamma * expectation(P, values)).clamp(min=-vmax, max=vmax)

        q, self.values = value_iteration(
            backup, self.layout, self.threshold(vmax), terminal=model.terminal, initial=self.values
        )
        return q, q
