r"""Held-out selection of a greedy policy: keep the network's, or take certainty equivalence's where data
held out from each say it is better.

A pretrained network reads the counts through its prior, which helps when data are few and can hold it
below planning on the counts (certainty equivalence, CE) when they are many and the prior is wrong (e.g. a
large reward behind a rarely successful action). Which of the two greedy policies is better on a given
dataset D can be estimated from D itself by cross-fitting: split D into halves D₁ and D₂ (each observed
transition to either half with probability 1/2, :meth:`rlfm.counts.Counts.split`), compute both policies
on one half and value them exactly in the empirical model of the other,

.. math::
    \Delta = \sum_{k=1}^{2} \big[ J_{\bar k}(\pi_{\mathrm{CE}}(D_k)) - J_{\bar k}(\pi_\theta(D_k)) \big],
    \qquad J_j(\pi) = \frac{\sum_s N(s)\, V^\pi_{\hat M_j}(s)}{\sum_s N(s)},

where :math:`V^\pi_{\hat M_j}` is π's value in :math:`D_j`'s empirical MDP (CE's conventions: an untried
pair is worth 0 and ends the episode) and N(s) the visits of s in D. A policy computed on one half has
not seen the other half's noise, so neither is favoured by the data that judge it. The greedy policy is CE's
on all of D if Δ > 0 and both policies *stay on tried pairs* (from no visited state do they lead, along
observed transitions, to a pair never tried): a network that heads for untried pairs is betting on its
prior (the unseen far end of a chain), which no data can check, and there it keeps its choice. Ties go to
the network. The policies are judged at half the data, where CE is relatively weaker than on all of it,
so the test leans to the network.

Acting is unchanged: only the greedy (exploitation) policy is selected.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Generator, Tensor

from rlfm.agents.certainty import CertaintyEquivalence
from rlfm.agents.guard import fewest_visits_ahead
from rlfm.agents.model_based import TIE_TOLERANCE, plan_once
from rlfm.agents.planning import RELATIVE_TOLERANCE, EmpiricalModel
from rlfm.counts import Counts
from rlfm.solve import ActionLayout, evaluate_policy


def holdout_actions(
    network_actions: Callable[[list[Counts]], Tensor],
    actions: Tensor,
    counts: list[Counts],
    layout: ActionLayout,
    gamma: float,
    generator: Generator,
) -> Tensor:
    """(R, S) the greedy actions selected for the R runs' ``counts`` (module docstring): ``actions`` (R, S),
    the network's greedy actions on ``counts``, or CE's where held-out data prefer them.
    ``network_actions`` maps a list of counts to the network's greedy actions (len, S) on them (it is
    called once, on the 2R halves)."""
    runs = len(counts)
    halves = [c.split(generator) for c in counts]
    parts = [h[0] for h in halves] + [h[1] for h in halves]  # fold k = 0, 1 (2R,)
    held_out = [h[1] for h in halves] + [h[0] for h in halves]
    network = network_actions(parts)  # (2R, S)
    model = EmpiricalModel.from_counts(counts, layout)
    ce_full = ce_actions(model, gamma)  # (R, S)
    ce_parts = ce_actions(EmpiricalModel.from_counts(parts, layout), gamma)  # (2R, S)

    judge = EmpiricalModel.from_counts(held_out, layout).arrays(gamma)
    policies = torch.stack([layout.one_hot(network), layout.one_hot(ce_parts)]).reshape(2, -1)
    values = evaluate_policy(judge, policies).reshape(2, 2, runs, layout.num_states)  # (policy, fold, R, S)
    visits = layout.padded(model.count, fill=0.0).sum(dim=-1)  # (R, S) N(s) = Σ_a N(s, a)
    score = (values * (visits / visits.sum(dim=1, keepdim=True).clamp(min=1.0))).sum(dim=-1)  # (2, 2, R)
    gain = (score[1] - score[0]).sum(dim=0)  # (R,)
    tolerance = RELATIVE_TOLERANCE * model.scale / (1.0 - gamma)
    visited = visits > 0
    explored = ~(visited & (reaches_untried(model, actions) | reaches_untried(model, ce_full))).any(dim=1)
    switch = explored & (gain > tolerance)
    return torch.where(switch[:, None], ce_full, actions)


def ce_actions(model: EmpiricalModel, gamma: float) -> Tensor:
    """(R, S) certainty equivalence's greedy actions in each of the R runs of ``model`` (ties, within the CE
    agent's tolerance, to the lowest action index)."""
    return ce_plan(model, gamma)[1]


def ce_plan(model: EmpiricalModel, gamma: float) -> tuple[Tensor, Tensor]:
    """Certainty equivalence's action values (R, SA) and greedy actions (R, S) (as :func:`ce_actions`)."""
    planner = CertaintyEquivalence()
    q = plan_once(planner, model, gamma)
    return q, model.layout.greedy_actions(q, tolerance=TIE_TOLERANCE * planner.value_bound(model))


def reaches_untried(model: EmpiricalModel, actions: Tensor) -> Tensor:
    """(R, S) the states from which following ``actions`` (R, S) along observed transitions reaches a pair
    never tried, of a state not seen to end an episode (the state's own chosen pair included)."""
    pairs = model.layout.action_ptr[:-1] + actions
    return fewest_visits_ahead(model, actions).gather(1, pairs) == 0
