r"""A consistency guard for a learned greedy policy: overrule it only where the data are sure it is worse.

A pretrained network reads the counts through its prior; where the prior is wrong it can stay below
planning on the counts however much data arrive. The guard keeps the network's greedy action
:math:`a_\theta(s)` unless the data prove another action better: with the optimistic values
:math:`\overline Q` of UCB-VI (:mod:`rlfm.agents.optimistic`, Hoeffding bonus) and the pessimistic
values :math:`\underline Q` of VI-LCB (:mod:`rlfm.agents.pessimistic`), both with bonus scale ``c``,

.. math::
    a(s) = \begin{cases} \underline a(s) = \arg\max_a \underline Q(s, a)
        & \text{if } \underline Q(s, \underline a(s)) > \overline Q(s, a_\theta(s)), \\
        a_\theta(s) & \text{otherwise.} \end{cases}

Both bounds propagate their uncertainty through the Bellman backup, and an unvisited pair is worth
:math:`+\infty` to the optimist and :math:`-\hat V_{\max}` to the pessimist, so a gap that only looks sure
because part of the MDP was never explored is not enforced. As the counts grow both bounds tend to
:math:`Q^*` (bonuses :math:`\propto \sqrt{\log t / N}`), so every suboptimal choice of the network is
eventually overruled by an optimal action: the guarded policy cannot stay below planning on the data once
they are ample. With little data the bounds are wide and the network's choice stands. The guard changes
only the greedy (exploitation) policy, never how an agent acts.

Its blind spot is the bound :math:`\hat V_{\max} = \hat r_{\max} / (1 - \gamma)` both planners take
from the largest reward observed so far: a reward never seen (the far end of a chain, a rare room) is
outside both bounds, so a small ``c`` can overrule a network that is right to expect it. Measured on the
validation MDPs (README, "Choosing on validation"), no ``c`` helped there; the guard is off by default.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlfm.agents.optimistic import UCBVI
from rlfm.agents.pessimistic import VILCB
from rlfm.agents.planning import EmpiricalModel
from rlfm.counts import Counts
from rlfm.solve import ActionLayout


def guarded_actions(
    actions: Tensor, counts: list[Counts], layout: ActionLayout, gamma: float, strength: float
) -> Tensor:
    """(R, S) ``actions`` (R, S), the network's greedy actions for the R runs' ``counts``, replaced by the
    pessimist's action wherever its lower bound exceeds their upper bound (module docstring; ``strength``:
    the bonus scale c of both bounds, > 0)."""
    if not strength > 0:
        raise ValueError(f"the guard's strength must be positive, got {strength}")
    model = EmpiricalModel.from_counts(counts, layout)
    bounds = []
    for planner in (UCBVI(c=strength, exploit="optimistic"), VILCB(c=strength)):
        planner.start(layout.num_actions, gamma, len(counts), torch.Generator().manual_seed(0))
        bounds.append(planner.solve(model)[0])  # (R, SA)
    upper, lower = bounds
    first = layout.action_ptr[:-1]
    safe, kept = first + layout.greedy_actions(lower), first + actions  # (R, S) pair indices
    sure = lower.gather(1, safe) > upper.gather(1, kept)
    return torch.where(sure, safe - first, actions)
