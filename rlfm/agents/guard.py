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

A soft variant, :func:`evidence_scores`, weighs the network's policy by the evidence of the data instead of
waiting for bounds to separate: with certainty equivalence's advantages
:math:`\hat A(s, a) = (\hat Q(s, a) - \max_b \hat Q(s, b)) / \hat V_{\max} \in [-1, 0]` and its greedy
action :math:`\hat a(s)`,

.. math::
    a(s) = \arg\max_a \big[\log \pi_\theta(a \mid s) + \kappa\, n(s, a)\, \hat A(s, a)\big],
    \qquad n(s, a) = \min\big(m(s, a), m(s, \hat a(s))\big),

where :math:`m(s, a)` (:func:`fewest_visits_ahead`) is the fewest visits of any pair reachable from
:math:`(s, a)` along observed transitions, 0 where an untried pair is reachable: a value is only as sure as
the thinnest data it rests on. It is the Boltzmann policy of the empirical model at temperature
:math:`1 / (\kappa n)` with the network's policy as prior: the network decides where the data are few,
planning on the counts where they are many, and as every N grows the argmax tends to certainty
equivalence's (consistent, like the guard). (With the local counts :math:`\min(N(s, a), N(s, \hat a))`
instead of :math:`m` it overrules a network that rightly expects a rarely visited far end of a chain.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlfm.agents.certainty import CertaintyEquivalence
from rlfm.agents.model_based import plan_once
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
    unexplored = reaches_unvisited(model)  # (R, SA)
    upper, lower = (
        plan_once(planner, model, gamma)  # (R, SA)
        for planner in (UCBVI(c=strength, exploit="optimistic"), VILCB(c=strength))
    )
    first = layout.action_ptr[:-1]
    safe, kept = first + layout.greedy_actions(lower), first + actions  # (R, S) pair indices
    sure = lower.gather(1, safe) > upper.gather(1, kept)
    sure &= ~unexplored.gather(1, safe) & ~unexplored.gather(1, kept)
    return torch.where(sure, safe - first, actions)


def evidence_scores(
    logits: Tensor, counts: list[Counts], layout: ActionLayout, gamma: float, strength: float
) -> Tensor:
    """(R, SA) greedy scores log π_θ(a | s) + κ n(s, a) Â(s, a) (module docstring) for the network's policy
    ``logits`` (R, SA) on the R runs' ``counts``; ``strength``: κ > 0. Only their argmax per state is meant
    to be used (the logits' per-state normaliser is left out: it does not move it)."""
    if not strength > 0:
        raise ValueError(f"the evidence strength must be positive, got {strength}")
    model = EmpiricalModel.from_counts(counts, layout)
    planner = CertaintyEquivalence()
    q = plan_once(planner, model, gamma)  # (R, SA)
    v_max = planner.value_bound(model)  # (R, 1)
    advantage = (q - layout.state_max(q)[:, layout.sa_state]) / v_max  # (R, SA), in [-1, 0]
    best = layout.action_ptr[:-1] + layout.greedy_actions(q)  # (R, S) pair indices
    fewest = fewest_visits_ahead(model)  # (R, SA), 0 where unexplored
    weight = torch.minimum(fewest, fewest.gather(1, best)[:, layout.sa_state])
    weight = torch.where(weight.isinf(), 0.0, weight)  # states seen to end an episode: nothing to choose
    return logits.double() + strength * weight * advantage


def reaches_unvisited(model: EmpiricalModel) -> Tensor:
    """(R, SA) the pairs from which an unvisited pair of a state not seen to end an episode can be reached
    along observed transitions (the pair itself included): those whose :func:`fewest_visits_ahead` is 0."""
    return fewest_visits_ahead(model) == 0


def fewest_visits_ahead(model: EmpiricalModel, actions: Tensor | None = None) -> Tensor:
    """(R, SA) the fewest visits N among the pairs that can be reached from each pair along observed
    transitions (itself included; pairs of states seen to end an episode have nothing to try and count as
    +∞). 0 where an untried pair is reachable. With ``actions`` (R, S), only pairs reached by taking those
    actions after the first step count (a policy's own path).

    The fixed point of m(s, a) = min(N(s, a), min over observed successors s' of min_b m(s', b)) (or of
    m(s', π(s')) along a policy), found by at most S rounds of a scatter-min over the observed edges."""
    layout = model.layout
    base = torch.where(model.terminal[:, layout.sa_state], torch.inf, model.count)  # (R, SA)
    pairs = None if actions is None else layout.action_ptr[:-1] + actions  # (R, S)
    fewest = base
    for _ in range(layout.num_states):
        if pairs is None:
            state_fewest = layout.padded(fewest, fill=torch.inf).amin(dim=-1).reshape(-1)  # (R·S,)
        else:
            state_fewest = fewest.gather(1, pairs).reshape(-1)
        ahead = torch.full_like(base.reshape(-1), torch.inf)
        ahead.scatter_reduce_(0, model.edge_sa, state_fewest[model.edge_next], reduce="amin")
        grown = torch.minimum(base, ahead.view_as(base))
        if bool((grown == fewest).all()):
            break
        fewest = grown
    return fewest
