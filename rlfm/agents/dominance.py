r"""A dominance switch for a learned greedy policy: take certainty equivalence's whole plan only when its
worst case on the data beats the network's best case.

Planning on the counts (certainty equivalence, CE) is what a greedy readout should match once data are
ample, but comparing the two plans by their values on the same empirical model favours CE: its plan is the
argmax of that model, noise included (the winner's curse on small Q-gaps). So each plan is valued on the
empirical model with an *unseen outcome*: after (s, a), with probability m(s, a) something not yet observed
happens, worth the worst value the data allow to CE's plan and the best to the network's,

.. math::
    Q^\pi_{\pm}(s, a) = (1 - m)\big[\hat r(s, a) + \gamma \textstyle\sum_{s'} \hat P(s' \mid s, a)
        V^\pi_{\pm}(s')\big] + m\, V_{\pm}, \qquad V_- = \frac{\min(0, \hat r_{\min})}{1 - \gamma},
    \quad V_+ = \frac{\max(0, \hat r_{\max})}{1 - \gamma},

and the greedy policy becomes CE's (in every state) if :math:`J(V^{\mathrm{CE}}_-) > J(V^\theta_+)`, with
:math:`J(V) = \sum_s N(s) V(s) / \sum_s N(s)` the visit-weighted mean value, and the network's plan
leads from no visited state to an untried pair along observed transitions (there it bets on its prior,
e.g. on a reward at the unseen far end of a chain, larger than any observed, which no V_+ bounds). Ties
and doubt go to the network.

The unseen mass is a Chinese-restaurant (Dirichlet-process) predictive plus, in a world seen to be
stochastic, the sampling noise of the observed frequencies,

.. math::
    m(s, a) = \min\Big(1, \frac{\alpha}{\alpha + N(s, a)} + \frac{[\alpha > 0]}{\sqrt{N(s, a)}}\Big)

(1 for an untried pair, 0 for a state seen to end an episode), with one concentration α per dataset fitted
by moments to how often revisits revealed something new: the K(s, a) distinct outcomes of each pair tried
twice or more (distinct successors, one more when a single successor came with rewards that varied)
match their expectation :math:`\sum_{i < N} \alpha / (\alpha + i)`. A world whose revisits always repeated
themselves (deterministic, like a cliff) has α = 0, and a path tried once is then trusted; on a slippery
lake α ≈ 1–2 and the switch waits for data far thicker than a plan's small Q-gaps (the handoff to the
planner network covers those). Without any revisit nothing is known about the world: m = 1 and the
network's plan stands.

As data grow, m → 0 on every pair the plans use and both values tend to their values on (r̂, P̂): the
switch then takes CE's plan wherever it is worth more there. With few data it fires only where the
network's plan is worse than CE's by more than all the doubt the data leave (in a deterministic world, a
network that walks in a loop beside a path it has seen). Acting is unchanged: only the greedy (exploitation) policy is selected.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from rlfm.agents.holdout import ce_actions, reaches_untried
from rlfm.agents.planning import RELATIVE_TOLERANCE, EmpiricalModel
from rlfm.counts import Counts
from rlfm.solve import ActionLayout, evaluate_policy

BISECTION_STEPS = 80  # halvings of log α over [-20, 20]: far below any tolerance that matters


def distinct_outcomes(model: EmpiricalModel) -> Tensor:
    """(R, SA) K(s, a): the distinct successors observed after each pair, plus one where a single successor
    came with rewards that varied (a pair's rewards are kept as sums, so only their spread is known)."""
    successors = torch.bincount(model.edge_sa, minlength=model.count.numel()).view_as(model.count).double()
    n = model.count.clamp(min=1)
    spread = model.reward_sq_sum / n - model.mean_reward**2  # (R, SA) the rewards' variance
    varied = spread > 1e-12 * model.scale[:, None] ** 2
    return successors + ((successors == 1) & varied).double()


def novelty_concentration(model: EmpiricalModel) -> Tensor:
    r"""(R,) α per run: the root of :math:`\sum_{N \ge 2} \alpha(\psi(\alpha + N) - \psi(\alpha)) = \sum_{N \ge 2}
    K` over the pairs tried at least twice (not of states seen to end an episode); 0 when every revisit
    repeated itself, +∞ when no pair was revisited or every visit was new."""
    revisited = (model.count >= 2) & ~model.terminal[:, model.layout.sa_state]  # (R, SA)
    n = torch.where(revisited, model.count, 2.0)
    target = torch.where(revisited, distinct_outcomes(model), 0.0).sum(dim=1)  # (R,)
    pairs = revisited.sum(dim=1).double()

    def expected(alpha: Tensor) -> Tensor:  # (R,) Σ E[K | N, α] over the revisited pairs
        a = alpha[:, None]
        per_pair = a * (torch.digamma(a + n) - torch.digamma(a))
        return torch.where(revisited, per_pair, 0.0).sum(dim=1)

    low = torch.full_like(target, -20.0)
    high = torch.full_like(target, 20.0)
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        above = expected(mid.exp()) > target
        high, low = torch.where(above, mid, high), torch.where(above, low, mid)
    alpha = ((low + high) / 2).exp()
    alpha = torch.where(target <= pairs, 0.0, alpha)  # every revisit repeated itself
    total = torch.where(revisited, model.count, 0.0).sum(dim=1)
    return torch.where((pairs == 0) | (target >= total), torch.inf, alpha)


def unseen_mass(model: EmpiricalModel, concentration: Tensor) -> Tensor:
    """(R, SA) m(s, a) = α / (α + N) + [α > 0] / √N for ``concentration`` α (R,), at most 1: 1 where untried
    (or α = +∞), 0 for the pairs of states seen to end an episode."""
    alpha, count = concentration[:, None], model.count
    noise = torch.where(alpha > 0, count.clamp(min=1).rsqrt(), 0.0)  # the seen frequencies' sampling noise
    mass = (alpha / (alpha + count.clamp(min=1)) + noise).clamp(max=1.0)
    mass = torch.where(alpha.isinf() | (count == 0), 1.0, mass)
    return torch.where(model.terminal[:, model.layout.sa_state], 0.0, mass)


def bounded_values(model: EmpiricalModel, actions: Tensor, gamma: float, upper: Tensor) -> Tensor:
    """(U, R, S) V^π_± of the U policies ``actions`` (U, R, S) on ``model`` with the unseen outcome (module
    docstring) worth V_+ where ``upper`` (U,) is True and V_- where it is False."""
    layout = model.layout
    mass = unseen_mass(model, novelty_concentration(model)).reshape(-1)  # (R·SA,)
    visited = model.visited
    reward = model.mean_reward
    low = torch.where(visited, reward, torch.inf).amin(dim=1).clamp(max=0.0)  # (R,)
    high = torch.where(visited, reward, -torch.inf).amax(dim=1).clamp(min=0.0)
    bound = torch.where(upper[:, None], high, low) / (1.0 - gamma)  # (U, R)
    arrays = model.arrays(gamma)
    live = arrays.reward  # (R·SA,) r̂ on live pairs, 0 elsewhere
    U = actions.shape[0]
    flat_bound = bound[:, :, None].expand(U, model.runs, layout.num_pairs).reshape(U, -1)
    rewards = (1.0 - mass) * live + mass * flat_bound  # (U, R·SA)
    arrays = replace(arrays, prob=arrays.prob * (1.0 - mass[arrays.edge_sa]))
    policies = torch.stack([layout.one_hot(a) for a in actions]).reshape(U, -1)
    return evaluate_policy(arrays, policies, reward=rewards).reshape(U, model.runs, layout.num_states)


def dominant_actions(actions: Tensor, counts: list[Counts], layout: ActionLayout, gamma: float) -> Tensor:
    """(R, S) the greedy actions for the R runs' ``counts``: ``actions`` (R, S), the network's, or certainty
    equivalence's in every state of a run where its worst case beats their best case (module docstring)."""
    model = EmpiricalModel.from_counts(counts, layout)
    planned = ce_actions(model, gamma)  # (R, S)
    values = bounded_values(model, torch.stack([planned, actions]), gamma, torch.tensor([False, True]))
    visits = layout.padded(model.count, fill=0.0).sum(dim=-1)  # (R, S) N(s)
    weight = visits / visits.sum(dim=1, keepdim=True).clamp(min=1.0)
    worst_planned, best_network = (values * weight).sum(dim=-1)  # (R,) each
    tolerance = RELATIVE_TOLERANCE * model.scale / (1.0 - gamma)
    hoping = (reaches_untried(model, actions) & (visits > 0)).any(dim=1)  # (R,) its best case is unbounded
    switch = (worst_planned > best_network + tolerance) & ~hoping
    return torch.where(switch[:, None], planned, actions)
