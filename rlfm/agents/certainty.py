r"""Certainty equivalence: value iteration on the empirical model, no bonus.

.. math::
    Q(s, a) = \hat r(s, a) + \gamma \textstyle\sum_{s'} \hat P(s' \mid s, a) V(s'),
    \qquad Q(s, a) = 0 \text{ if } N(s, a) = 0.

Unvisited pairs are neutral: worth 0, as if the episode ended there (optimistic where rewards are costs,
pessimistic where they are gains). It acts and exploits greedily on Q.
"""

from __future__ import annotations

from torch import Tensor

from rlfm.agents.model_based import ModelBasedAgent
from rlfm.agents.planning import EmpiricalModel


class CertaintyEquivalence(ModelBasedAgent):
    """Plans on (r̂, P̂) as if they were true. No hyperparameters."""

    name = "ce"

    def solve(self, model: EmpiricalModel) -> tuple[Tensor, Tensor]:
        q = self.certainty_equivalent(model)
        return q, q
