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

Both bounds propagate their uncertainty through the Bellman backup (unvisited pairs: :math:`+\infty` to
the optimist, :math:`-\hat V_{\max}` to the pessimist). Both planners take the value range
:math:`\hat V_{\max} = \hat r_{\max} / (1 - \gamma)` from the largest reward observed so far, which says
nothing about a pair never tried: its reward could be anything (the far end of a chain, a rare room). So
the guard compares only *explored* pairs, those from which no untried pair can be reached along observed
transitions (:func:`reaches_unvisited`; states seen to end an episode have nothing to try): a value that an
unexplored part of the MDP could still change is never called sure.

As the counts grow every pair is tried and both bounds tend to :math:`Q^*` (bonuses
:math:`\propto \sqrt{\log t / N}`), so every suboptimal choice of the network is eventually overruled by an
optimal action: the guarded policy cannot stay below planning on the data once they are ample. With little
data the bounds are wide, or part of the MDP is untried, and the network's choice stands. The guard changes
only the greedy (exploitation) policy, never how an agent acts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlfm.agents.optimistic import UCBVI
from rlfm.agents.pessimistic import VILCB
from rlfm.agents.planning import EmpiricalModel
from rlfm.counts import Counts
from rlfm.solve import ActionLayout, expectation


def guarded_actions(
    actions: Tensor, counts: list[Counts], layout: ActionLayout, gamma: float, strength: float
) -> Tensor:
    """(R, S) ``actions`` (R, S), the network's greedy actions for the R runs' ``counts``, replaced by the
    pessimist's action wherever its lower bound exceeds their upper bound (module docstring; ``strength``:
    the bonus scale c of both bounds, > 0)."""
    if not strength > 0:
        raise ValueError(f"the guard's strength must be positive, got {strength}")
    model = EmpiricalModel.from_counts(counts, layout)
    unexplored = reaches_unvisited(model)  # (R, SA)
    bounds = []
    for planner in (UCBVI(c=strength, exploit="optimistic"), VILCB(c=strength)):
        planner.start(layout.num_actions, gamma, len(counts), torch.Generator().manual_seed(0))
        bounds.append(planner.solve(model)[0])  # (R, SA)
    upper, lower = bounds
    first = layout.action_ptr[:-1]
    safe, kept = first + layout.greedy_actions(lower), first + actions  # (R, S) pair indices
    sure = lower.gather(1, safe) > upper.gather(1, kept)
    sure &= ~unexplored.gather(1, safe) & ~unexplored.gather(1, kept)
    return torch.where(sure, safe - first, actions)


def reaches_unvisited(model: EmpiricalModel) -> Tensor:
    """(R, SA) the pairs from which an unvisited pair of a state not seen to end an episode can be reached
    along observed transitions (the pair itself included).

    The least fixed point of U(s, a) = [N(s, a) = 0 and s not terminal] or [some observed successor s'
    has a pair in U], found by at most S sparse products."""
    layout = model.layout
    P = model.matrix(torch.ones_like(model.edge_count))  # (R·SA, R·S), 1 on each observed edge
    seed = ~model.visited & ~model.terminal[:, layout.sa_state]  # (R, SA)
    unexplored = seed
    for _ in range(layout.num_states):
        state_open = layout.state_max(unexplored.double())  # (R, S) 1 where a pair of the state is open
        grown = seed | (expectation(P, state_open) > 0)
        if bool((grown == unexplored).all()):
            break
        unexplored = grown
    return unexplored
