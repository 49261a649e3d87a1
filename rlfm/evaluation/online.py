r"""The online protocol, all runs of an (MDP, agent) pair batched together.

Counts start empty. The agent plans once from all data so far, acts for one episode of at most
``horizon`` steps from a start state drawn from μ (ending early on entering an absorbing state, which is
recorded in the counts as an observed termination), then plans again from the grown data; the greedy
policy of that plan is scored exactly (:class:`~rlfm.evaluation.simulate.Scorer`) and serves the next
episode. So ``scores[:, e - 1]`` is the normalised value after e episodes of data (1-based episodes).

Metrics per run:

- **episodes to converge**: the first episode e (1-based) of the first run of ``window`` consecutive
  episodes all scoring ≥ ``threshold``; None if there is none within the episode cap.
- **cumulative regret** over the fixed budget of ``episodes`` episodes (the same for every agent), in
  units of the uniform policy's shortfall per episode:

  .. math::
      \text{Regret} = \sum_{e=1}^{E} \frac{V^*_H(s_0^e) - G_e}{V^*_H(\mu) - V^{unif}_H(\mu)},
      \qquad G_e = \sum_{t=0}^{H_e - 1} \gamma^t r^e_t,

  where :math:`G_e` is the discounted return the agent actually collected in episode e (of
  :math:`H_e \le H` steps) from start state :math:`s_0^e`, and :math:`V^*_H`, :math:`V^{unif}_H` are the
  optimal and uniform expected discounted returns over H steps. Its expectation is ≥ 0; an agent that
  plays uniformly at random accrues about 1 per episode. This is the regret of what was executed
  (exploration included), as in Jaksch et al. (2010), but discounted and episodic.
- **greedy regret**: :math:`\sum_e (1 - \text{score}_e)`, the exact shortfall of the scored policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Generator, Tensor

from rlfm.agents.base import Agent
from rlfm.agents.certainty import CertaintyEquivalence
from rlfm.counts import Counts
from rlfm.evaluation.simulate import Scorer, Simulator
from rlfm.mdp import TabularMDP


class Progress(Protocol):
    """What the protocols need of a progress bar (tqdm's)."""

    def update(self, n: float = 1) -> bool | None: ...


@dataclass(frozen=True)
class OnlineConfig:
    """Protocol settings: episode cap (= regret budget), steps per episode, convergence rule."""

    episodes: int = 1500
    horizon: int = 50
    threshold: float = 0.95
    window: int = 8


@dataclass(frozen=True)
class OnlineRun:
    """Per-run, per-episode results, all (R, E).

    Attributes:
        scores: normalised value of the greedy policy after each episode.
        regret: each episode's normalised regret (its terms of the cumulative regret).
        steps: the episode's length.
        planning_scores: with ``plan_on_data``, the normalised value of certainty equivalence's greedy
            policy on the agent's own counts after each episode (how much better the data alone could
            exploit), else None.
    """

    scores: Tensor
    regret: Tensor
    steps: Tensor
    planning_scores: Tensor | None = None

    def episodes_to_converge(self, config: OnlineConfig) -> list[int | None]:
        return episodes_to_converge(self.scores, config.threshold, config.window)

    @property
    def cumulative_regret(self) -> Tensor:
        """(R,) regret summed over all episodes."""
        return self.regret.sum(dim=1)

    @property
    def greedy_regret(self) -> Tensor:
        """(R,) Σ_e (1 - score_e)."""
        return (1.0 - self.scores).sum(dim=1)

    def select(self, runs: slice) -> OnlineRun:
        planning = None if self.planning_scores is None else self.planning_scores[runs]
        return OnlineRun(self.scores[runs], self.regret[runs], self.steps[runs], planning)


def episodes_to_converge(
    scores: Tensor | Sequence[float], threshold: float = 0.95, window: int = 8
) -> list[int | None]:
    """For each row of ``scores`` (R, E) (or one sequence (E,)): the 1-based first episode of the first
    run of ``window`` consecutive scores ≥ ``threshold``, or None.

    >>> episodes_to_converge([0.9] + [0.96] * 8)
    [2]
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    scores = scores[None] if scores.dim() == 1 else scores
    if scores.shape[1] < window:
        return [None] * scores.shape[0]
    good = (scores >= threshold).unfold(1, window, 1).all(dim=2)  # (R, E - window + 1)
    first = good.to(torch.uint8).argmax(dim=1)
    return [int(f) + 1 if bool(g.any()) else None for f, g in zip(first, good, strict=True)]


def run_online(
    mdp: TabularMDP,
    agent: Agent,
    runs: int,
    config: OnlineConfig,
    generator: Generator,
    scorer: Scorer | None = None,
    progress: Progress | None = None,
    plan_on_data: bool = False,
) -> OnlineRun:
    """Run the online protocol for ``runs`` independent runs of ``agent`` on ``mdp``.

    Args:
        scorer: the MDP's exact scorer (built if not given; pass one to share its cache).
        progress: a tqdm-like bar, advanced by one per episode.
        plan_on_data: also score certainty equivalence's greedy policy on the agent's counts after each
            episode (:attr:`OnlineRun.planning_scores`; the agent's own runs are unchanged).
    """
    scorer = scorer or Scorer(mdp, config.horizon)
    simulator = Simulator(mdp, generator)
    gamma = mdp.gamma
    agent.start(mdp.num_actions, gamma, runs, generator)
    counts = [Counts.empty_like(mdp) for _ in range(runs)]
    if agent.uses_counts:
        agent.plan(counts)
    planner = CertaintyEquivalence() if plan_on_data else None
    if planner is not None:
        planner.start(mdp.num_actions, gamma, runs, torch.Generator().manual_seed(0))
    planning = torch.zeros(runs, config.episodes, dtype=torch.float64)
    scores = torch.zeros(runs, config.episodes, dtype=torch.float64)
    regret = torch.zeros(runs, config.episodes, dtype=torch.float64)
    steps = torch.zeros(runs, config.episodes, dtype=torch.long)
    for episode in range(config.episodes):
        states = simulator.reset(runs)
        start_states = states
        active = torch.ones(runs, dtype=torch.bool)
        discounted = torch.zeros(runs, dtype=torch.float64)
        discount = 1.0
        record: list[tuple[Tensor, ...]] = []
        for _ in range(config.horizon):
            actions = agent.act(states)
            sa, next_states, rewards, terminated = simulator.step(states, actions)
            agent.observe(states, actions, rewards, next_states, terminated, active)
            record.append((sa, next_states, rewards, terminated, active))
            discounted += torch.where(active, discount * rewards, 0.0)
            steps[:, episode] += active.long()
            discount *= gamma
            active = active & ~terminated
            if not bool(active.any()):
                break
            states = next_states
        if agent.uses_counts or planner is not None:
            _add_episode(counts, record)
        if agent.uses_counts:
            agent.plan(counts)
        scores[:, episode] = scorer.normalized(agent.greedy_policy())
        if planner is not None:
            planner.plan(counts)
            planning[:, episode] = scorer.normalized(planner.greedy_policy())
        regret[:, episode] = (scorer.optimal_horizon[start_states] - discounted) / scorer.horizon_gap
        if progress is not None:
            progress.update(1)
    return OnlineRun(scores, regret, steps, None if planner is None else planning)


def _add_episode(counts: list[Counts], record: list[tuple[Tensor, ...]]) -> None:
    """Add one episode's steps (each (R,) tensors) to each run's counts."""
    sa, next_states, rewards, terminated, active = (
        torch.stack(column, dim=1) for column in zip(*record, strict=True)
    )
    for run, run_counts in enumerate(counts):
        keep = active[run]
        run_counts.add(sa[run, keep], next_states[run, keep], rewards[run, keep], terminated[run, keep])
