r"""UCB-VI (Azar, Osband & Munos, 2017), discounted, with Hoeffding or Bernstein bonuses.

Optimistic value iteration on the empirical model:

.. math::
    Q(s, a) = \hat r(s, a) + b(s, a) + \gamma \textstyle\sum_{s'} \hat P(s' \mid s, a) V(s'), \qquad
    V(s) = \min\bigl(\max_a Q(s, a), \hat V_{\max}\bigr),

with :math:`\hat V_{\max} = \hat r_{\max} / (1 - \gamma)` (largest observed |reward|) and
:math:`L = \log(2 S A (t + 1) / \delta)`, δ = 0.1, t the transitions seen so far:

- Hoeffding: :math:`b = c \, \hat V_{\max} \sqrt{L / N(s, a)}`;
- Bernstein: :math:`b = c \bigl(\sqrt{2 L \operatorname{Var}_{\hat P}(V) / N} + 7 \hat V_{\max} L / (3 N)\bigr)`,
  the empirical variance of the next state's value in place of the range (Azar et al.'s UCB-VI-BF,
  without its correction term for the error in V).

Unvisited pairs are optimistic: b = ∞ at N = 0, so Q = ∞ and every action of a state is tried before any
is repeated (ties at random); V is capped at :math:`\hat V_{\max}`, Q is not, so that among visited
pairs the less-tried one wins. The agent acts greedily on Q. Its exploitation (greedy) policy is, by
default, greedy on the empirical model (no bonus), or the acting policy with ``exploit="optimistic"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from rlfm.agents.base import Hyperparameter
from rlfm.agents.model_based import ModelBasedAgent
from rlfm.agents.planning import EmpiricalModel
from rlfm.solve import expectation, value_iteration

EXPLOIT = ("empirical", "optimistic")
Bonus = Callable[[Tensor, Tensor], Tensor]  # (V (R, S), P̂V (R, SA)) -> b (R, SA)


class UCBVI(ModelBasedAgent):
    """UCB-VI with the Hoeffding bonus; ``c`` scales the bonus. Grid: c ∈ {0.01, 0.03, 0.1, 0.3, 1}.

    Args:
        c: bonus scale (a float, or one value per run).
        exploit: the exploitation (greedy) policy: ``"empirical"``, greedy on the empirical model as
            :class:`~rlfm.agents.certainty.CertaintyEquivalence`, or ``"optimistic"``, the acting policy.
    """

    name = "ucbvi"
    grid: ClassVar[dict[str, tuple[float, ...]]] = {"c": (0.01, 0.03, 0.1, 0.3, 1.0)}
    defaults: ClassVar[dict[str, float]] = {"c": 1.0}
    hyperparameter_names = ("c",)

    def __init__(self, c: Hyperparameter = 1.0, exploit: str = "empirical") -> None:
        if exploit not in EXPLOIT:
            raise ValueError(f"exploit must be one of {EXPLOIT}, got {exploit!r}")
        super().__init__(c=c)
        self.exploit = exploit

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "exploit": self.exploit}

    def solve(self, model: EmpiricalModel) -> tuple[Tensor, Tensor]:
        vmax = self.value_bound(model)  # (R, 1)
        P = model.matrix(model.p_hat)
        bonus = self.bonus(model, P, vmax)
        reward, visited, gamma = model.mean_reward, model.visited, self.gamma

        def backup(values: Tensor) -> Tensor:
            next_value = expectation(P, values)
            return torch.where(visited, reward + bonus(values, next_value) + gamma * next_value, torch.inf)

        q, self.values = value_iteration(
            backup,
            self.layout,
            self.threshold(vmax),
            terminal=model.terminal,
            initial=self.values,
            upper=vmax,
        )
        return q, (q if self.exploit == "optimistic" else self.certainty_equivalent(model))

    def bonus(self, model: EmpiricalModel, P: Tensor, vmax: Tensor) -> Bonus:
        """b = c V̂_max sqrt(L / N)."""
        b = self.params["c"] * vmax * torch.sqrt(model.log_term() / model.count.clamp(min=1.0))
        return lambda values, next_value: b


class UCBVIBernstein(UCBVI):
    """UCB-VI with the Bernstein (empirical-variance) bonus. Grid: c ∈ {0.01, 0.03, 0.1, 0.3, 1}."""

    name = "ucbvi_bernstein"

    def bonus(self, model: EmpiricalModel, P: Tensor, vmax: Tensor) -> Bonus:
        """b = c (sqrt(2 L Var_P̂(V) / N) + 7 V̂_max L / (3 N))."""
        n, log_term, c = model.count.clamp(min=1.0), model.log_term(), self.params["c"]
        range_term = 7.0 * vmax * log_term / (3.0 * n)

        def bonus(values: Tensor, next_value: Tensor) -> Tensor:
            variance = (expectation(P, values.square()) - next_value.square()).clamp(min=0.0)
            return c * (torch.sqrt(2.0 * log_term * variance / n) + range_term)

        return bonus
