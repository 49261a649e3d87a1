r"""A dominance switch for a learned greedy policy: take certainty equivalence's whole plan only when its
worst case on the data beats the network's best case.

Planning on the counts (certainty equivalence, CE) is what a greedy readout should match once data are
ample, but comparing the two plans by their values on the same empirical model favours CE: its plan is the
argmax of that model, noise included (the winner's curse on small Q-gaps). So each plan is valued on the
empirical model with an *unseen outcome*: after (s, a), with probability m(s, a) something not yet observed
happens, worth the worst value the data allow to CE's plan and the best to the network's,

.. math::
    Q^\pi_{\pm}(s, a) = (1 - m)\big[\hat r(s, a) + \gamma \textstyle\sum_{s'} \hat P(s' \mid s, a)
        V^\pi_{\pm}(s')\big] + m\, B_{\pm}(s, a).

After a tried pair the unseen outcome is a known state: :math:`B_\pm` is the lowest / highest of CE's
values :math:`\hat V(s)` over the visited states (and 0, an episode's end). After an untried pair (m = 1)
even the reward is unknown: :math:`B_\pm = \min(0, \hat r_{\min}) / (1 - \gamma)` /
:math:`\max(0, \hat r_{\max}) / (1 - \gamma)`, the worst / best observed reward earned forever. The greedy
policy becomes CE's (in every state) if :math:`J(V^{\mathrm{CE}}_-) > J(V^\theta_+)`, with
:math:`J(V) = \sum_{s \in D} N(s) V(s) / \sum_{s \in D} N(s)` the visit-weighted mean value over the visited
states D where the two plans choose differently (elsewhere both are charged the same doubt, which only
blurs the comparison), and the network's plan leads
from no visited state to an untried pair along observed transitions (there it bets on its prior, e.g. on a
reward at the unseen far end of a chain, larger than any observed, which no bound from the data covers).
Ties and doubt go to the network.

The unseen mass is a Chinese-restaurant (Dirichlet-process) predictive plus the sampling noise of the
observed frequencies,

.. math::
    m(s, a) = \min\Big(1, \frac{\alpha}{\alpha + N(s, a)}
        + \sum_{s'} \sqrt{\hat P(s' \mid s, a)\,(1 - \hat P(s' \mid s, a)) / N(s, a)}\Big)

(1 for an untried pair, 0 for a state seen to end an episode; the noise is 0 for a pair with a single
observed successor). One concentration α per dataset, at the upper end of what the data allow: the K(s, a)
distinct outcomes of each pair tried twice or more (distinct successors, one more when a single successor
came with rewards that varied) reveal k = Σ (K − 1) novelties in Σ (N − 1) revisits, and α is the root of
:math:`\sum (\sum_{i < N} \alpha / (\alpha + i) - 1) = k + 2\sqrt k + 3`, about the 95 % upper bound of a
Poisson count of k. A world whose many revisits always repeated themselves (a deterministic one, like a
cliff) gets a small α, and a path tried once is then nearly trusted; a handful of revisits proves nothing
(α = +∞ while the bound reaches every revisit: m = 1 and the network's plan stands).

As data grow, m → 0 on every pair the plans use and both values tend to their values on (r̂, P̂): the
switch then takes CE's plan wherever it is worth more there. With few data it fires only where the
network's plan is worse than CE's by more than all the doubt the data leave (in a deterministic world, a
network that walks in a loop beside a path it has seen). Acting is unchanged: only the greedy
(exploitation) policy is selected."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from rlfm.agents.holdout import ce_plan, reaches_untried
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
    r"""(R,) α per run, at the upper end of what the data allow: the root of
    :math:`\sum_{N \ge 2} \alpha(\psi(\alpha + N) - \psi(\alpha)) - 1 = k + 2\sqrt k + 3` over the pairs tried
    at least twice (not of states seen to end an episode), k = Σ (K − 1) the revisits that revealed a new
    outcome (k + 2√k + 3: about the 95 % upper bound of a Poisson count of k); +∞ when no pair was revisited
    or the bound reaches every revisit."""
    revisited = (model.count >= 2) & ~model.terminal[:, model.layout.sa_state]  # (R, SA)
    n = torch.where(revisited, model.count, 2.0)
    novel = torch.where(revisited, distinct_outcomes(model) - 1.0, 0.0).sum(dim=1)  # (R,) k
    bound = novel + 2.0 * novel.sqrt() + 3.0
    revisits = torch.where(revisited, model.count - 1.0, 0.0).sum(dim=1)  # (R,) Σ (N − 1)

    def expected(alpha: Tensor) -> Tensor:  # (R,) Σ E[K − 1 | N, α] over the revisited pairs
        a = alpha[:, None]
        per_pair = a * (torch.digamma(a + n) - torch.digamma(a)) - 1.0
        return torch.where(revisited, per_pair, 0.0).sum(dim=1)

    low = torch.full_like(bound, -20.0)
    high = torch.full_like(bound, 20.0)
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        above = expected(mid.exp()) > bound
        high, low = torch.where(above, mid, high), torch.where(above, low, mid)
    alpha = ((low + high) / 2).exp()
    return torch.where(bound >= revisits, torch.inf, alpha)


def unseen_mass(model: EmpiricalModel, concentration: Tensor) -> Tensor:
    r"""(R, SA) m(s, a) = min(1, α / (α + N) + Σ_s' √(P̂(1 − P̂) / N)) for ``concentration`` α (R,): 1 where
    untried (or α = +∞), 0 for the pairs of states seen to end an episode."""
    alpha, count = concentration[:, None], model.count
    p = model.p_hat
    spread = (p * (1.0 - p) / model.pair_count).sqrt()  # (E,) each seen frequency's sampling noise
    noise = torch.zeros(count.numel(), dtype=torch.float64).index_add_(0, model.edge_sa, spread)
    mass = (alpha / (alpha + count.clamp(min=1)) + noise.view_as(count)).clamp(max=1.0)
    mass = torch.where(alpha.isinf() | (count == 0), 1.0, mass)
    return torch.where(model.terminal[:, model.layout.sa_state], 0.0, mass)


def bounded_values(
    model: EmpiricalModel, actions: Tensor, gamma: float, upper: Tensor, values: Tensor
) -> Tensor:
    """(U, R, S) V^π_± of the U policies ``actions`` (U, R, S) on ``model`` with the unseen outcome (module
    docstring) worth V_+ where ``upper`` (U,) is True and V_- where it is False: after a tried pair the
    extremes of certainty equivalence's ``values`` (R, S) over the visited states (and 0), after an untried
    one those of the observed rewards earned forever, r / (1 − γ)."""
    layout = model.layout
    mass = unseen_mass(model, novelty_concentration(model))  # (R, SA)
    visited = layout.padded(model.count, fill=0.0).sum(dim=-1) > 0  # (R, S)
    reward = torch.where(model.visited, model.mean_reward, torch.nan)  # (R, SA)
    landing = torch.stack(  # (2, R): the worst and best known state, for a tried pair's unseen successor
        [
            torch.where(visited, values, torch.inf).amin(dim=1).clamp(max=0.0),
            torch.where(visited, values, -torch.inf).amax(dim=1).clamp(min=0.0),
        ]
    )
    forever = torch.stack(  # (2, R): the worst and best observed reward forever, for an untried pair
        [
            torch.nan_to_num(reward, nan=torch.inf).amin(dim=1).clamp(max=0.0),
            torch.nan_to_num(reward, nan=-torch.inf).amax(dim=1).clamp(min=0.0),
        ]
    ) / (1.0 - gamma)
    side = upper.long()  # (U,)
    bound = torch.where(model.visited, landing[side][:, :, None], forever[side][:, :, None])  # (U, R, SA)
    arrays = model.arrays(gamma)
    live = arrays.reward  # (R·SA,) r̂ on live pairs, 0 elsewhere
    U = actions.shape[0]
    mass = mass.reshape(-1)
    rewards = (1.0 - mass) * live + mass * bound.reshape(U, -1)  # (U, R·SA)
    arrays = replace(arrays, prob=arrays.prob * (1.0 - mass[arrays.edge_sa]))
    policies = torch.stack([layout.one_hot(a) for a in actions]).reshape(U, -1)
    return evaluate_policy(arrays, policies, reward=rewards).reshape(U, model.runs, layout.num_states)


def dominant_actions(actions: Tensor, counts: list[Counts], layout: ActionLayout, gamma: float) -> Tensor:
    """(R, S) the greedy actions for the R runs' ``counts``: ``actions`` (R, S), the network's, or certainty
    equivalence's in every state of a run where its worst case beats their best case (module docstring)."""
    model = EmpiricalModel.from_counts(counts, layout)
    q, planned = ce_plan(model, gamma)  # (R, SA), (R, S)
    both = torch.stack([planned, actions])
    values = bounded_values(model, both, gamma, torch.tensor([False, True]), layout.state_max(q))
    visits = layout.padded(model.count, fill=0.0).sum(dim=-1)  # (R, S) N(s)
    weight = visits * (planned != actions)  # the states where the plans disagree
    weight = weight / weight.sum(dim=1, keepdim=True).clamp(min=1.0)
    worst_planned, best_network = (values * weight).sum(dim=-1)  # (R,) each
    tolerance = RELATIVE_TOLERANCE * model.scale / (1.0 - gamma)
    hoping = (reaches_untried(model, actions) & (visits > 0)).any(dim=1)  # (R,) its best case is unbounded
    switch = (worst_planned > best_network + tolerance) & ~hoping
    return torch.where(switch[:, None], planned, actions)
