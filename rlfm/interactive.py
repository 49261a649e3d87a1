r"""Agents for your own environment, driven one step at a time through its ``reset`` / ``step`` loop.

>>> agent = rlfm.InContextAgent(num_states=16, num_actions=4, gamma=0.99)  # doctest: +SKIP
>>> state, _ = env.reset(seed=0)
>>> while True:
...     action = agent.act(state)
...     next_state, reward, terminated, truncated, _ = env.step(action)
...     agent.observe(state, action, reward, next_state, terminated, truncated)  # ends the episode if done
...     if terminated or truncated:
...         state, _ = env.reset()
...     else:
...         state = next_state

States are integers 0 .. S-1 and actions 0 .. num_actions[state]-1 (``num_actions`` one int, or one per
state). Every agent learns only from what ``observe`` passes it. :class:`InContextAgent` keeps the
:class:`~rlfm.counts.Counts` and re-plans with :func:`rlfm.predict_policy` (no weights change);
:class:`QLearningAgent` is tabular Q-learning for comparison and :class:`RandomAgent` the uniform floor.
The batched agents of ``rlfm benchmark`` (:mod:`rlfm.agents`) serve the evaluation protocols instead.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from rlfm.agents.planning import EmpiricalModel, untried_scores
from rlfm.counts import Counts
from rlfm.mdp import check_gamma, check_num_actions
from rlfm.network import PolicyNetwork, checked_untried
from rlfm.pretrained import load_network, network_label, packaged_name, packaged_network, predict
from rlfm.solve import ActionLayout


class InteractiveAgent(ABC):
    """Base class: one environment, one step at a time.

    Args:
        num_states: S, the size of the ``Discrete`` observation space.
        num_actions: actions per state, one int for all states or a sequence of S ints.
        gamma: the discount the agent plans with, 0 < gamma < 1.
        seed: seed of the agent's own random numbers (None: fresh entropy).

    Attributes:
        num_actions: (S,) actions in each state; ``action_ptr`` (S + 1,) each state's first pair index.
        episodes: episodes ended so far; ``steps``: transitions observed so far.
    """

    name: ClassVar[str] = "agent"

    def __init__(
        self, num_states: int, num_actions: int | Sequence[int], gamma: float = 0.99, seed: int | None = None
    ) -> None:
        if isinstance(num_states, bool) or not isinstance(num_states, int | np.integer) or num_states < 1:
            raise ValueError(f"num_states must be a positive integer, got {num_states!r}")
        if isinstance(num_actions, int | np.integer) and not isinstance(num_actions, bool):
            num_actions = [int(num_actions)] * int(num_states)
        self.num_actions = check_num_actions(num_actions, int(num_states))
        self.action_ptr = [0, *np.cumsum(self.num_actions.tolist()).tolist()]
        self.gamma = check_gamma(gamma)
        self.rng = np.random.default_rng(seed)
        self.episodes = 0
        self.steps = 0
        self._episode_steps = 0

    @property
    def num_states(self) -> int:
        return self.num_actions.numel()

    @abstractmethod
    def act(self, state: int) -> int:
        """The action to take in ``state`` now (exploring)."""

    @abstractmethod
    def greedy_action(self, state: int) -> int:
        """The action the agent believes best in ``state`` (exploiting)."""

    def observe(
        self,
        state: int,
        action: int,
        reward: float,
        next_state: int,
        terminated: bool = False,
        truncated: bool = False,
    ) -> None:
        """Learn from one transition; ``terminated`` or ``truncated`` also ends the episode."""
        state, next_state = self._state("state", state), self._state("next_state", next_state)
        if isinstance(action, bool) or not isinstance(action, int | np.integer):
            raise ValueError(f"action must be an integer, got {action!r}")
        block = self._block(state)
        if not 0 <= action < block.stop - block.start:
            raise ValueError(
                f"action {action} is out of range in state {state}, which has actions"
                f" 0 .. {block.stop - block.start - 1}"
            )
        if (
            isinstance(reward, bool)
            or not isinstance(reward, int | float | np.number)
            or not math.isfinite(reward)
        ):
            raise ValueError(f"reward must be a finite real number, got {reward!r}")
        self._learn(state, int(action), float(reward), next_state, bool(terminated))
        self.steps += 1
        self._episode_steps += 1
        if terminated or truncated:
            self.end_episode()

    def end_episode(self) -> None:
        """Close the current episode (does nothing if no step was observed since the last one closed)."""
        if self._episode_steps:
            self._episode_steps = 0
            self.episodes += 1
            self._episode_ended()

    def hyperparameters(self) -> dict[str, Any]:
        """The agent's settings, for reports."""
        return {"gamma": self.gamma}

    def _learn(  # noqa: B027
        self, state: int, action: int, reward: float, next_state: int, terminated: bool
    ) -> None:
        """Use one checked transition (optional hook)."""

    def _episode_ended(self) -> None:  # noqa: B027
        """React to the end of an episode (optional hook)."""

    def _state(self, name: str, state: Any) -> int:
        if (
            isinstance(state, bool)
            or not isinstance(state, int | np.integer)
            or not 0 <= state < self.num_states
        ):
            raise ValueError(f"{name} must be an integer in [0, {self.num_states}), got {state!r}")
        return int(state)

    def _block(self, state: Any) -> slice:
        """The pair indices of ``state``'s actions."""
        state = self._state("state", state)
        return slice(self.action_ptr[state], self.action_ptr[state + 1])

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}(states={self.num_states}, {settings})"


class InContextAgent(InteractiveAgent):
    """The pretrained network as an agent: it keeps the counts of all it has seen and re-plans from them.

    Each plan is one call of :func:`rlfm.predict_policy` on all data so far, at the end of every episode
    (and every ``replan_every`` steps if set); between plans it samples actions from the policy (the acting
    head's, for a network with one) raised to 1/``temperature``. Before the first plan the policy is uniform. Nothing trains.

    Cost: stepping only appends to a buffer (microseconds); a plan builds the observation graph (two exact
    sparse value iterations on the counts) and runs the network's sweeps, so it grows with S·A plus the
    distinct successors observed (and, for the value iterations, with the horizon 1 / (1 - γ)).
    ``num_layers`` sets the number of sweeps (default: the network's own rule).

    Args:
        temperature: T > 0; actions are drawn from π^(1/T) (1: the network's posterior; small: greedier;
            None: the network's ``acting_temperature``, chosen for it on the validation MDPs).
        replan_every: also re-plan after this many steps without a plan (None: only at episode ends).
        checkpoint: a network file or training checkpoint, or a shipped network's name (``"default"`` or
            ``"planner"``); None: :func:`rlfm.pretrained.packaged_network` for this many states (the
            count-only network up to 256 states, the planner network above).
        network: an already loaded :class:`~rlfm.network.PolicyNetwork` (instead of ``checkpoint``).
        num_layers: tied sweeps per plan (None: the network's own rule, see ``PolicyNetwork.infer``).
        untried_bonus, untried_discount, untried_relative: the bonus β U(s, a) added to the sampling logits
            toward pairs not yet tried (:class:`rlfm.agents.incontext.BatchedInContextAgent` explains them;
            U from :func:`rlfm.agents.planning.untried_scores` at each plan); None: the network's own
            defaults (the shipped network's: β 3, δ 0.5, relative); β = 0: none.

    Attributes:
        policy: (SA,) π(a | s, data) of the last plan (its argmax is :meth:`greedy_action`, unless the
            network reads its greedy policy from a value head).
        acting_policy: (SA,) the policy actions are sampled from: the network's acting head's, or
            :attr:`policy` for a network without one.
        plans: network calls so far.
    """

    name: ClassVar[str] = "rlfm"

    def __init__(
        self,
        num_states: int,
        num_actions: int | Sequence[int],
        gamma: float = 0.99,
        *,
        temperature: float | None = None,
        replan_every: int | None = None,
        checkpoint: str | Path | None = None,
        network: PolicyNetwork | None = None,
        num_layers: int | None = None,
        untried_bonus: float | None = None,
        untried_discount: float | None = None,
        untried_relative: bool | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(num_states, num_actions, gamma, seed)
        untried_bonus, untried_discount = checked_untried(untried_bonus, untried_discount)
        if temperature is not None and not (
            isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0
        ):
            raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
        if replan_every is not None and (
            isinstance(replan_every, bool) or not isinstance(replan_every, int) or replan_every < 1
        ):
            raise ValueError(f"replan_every must be a positive integer or None, got {replan_every!r}")
        if num_layers is not None and (
            isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1
        ):
            raise ValueError(f"num_layers must be a positive integer or None, got {num_layers!r}")
        self.replan_every = replan_every
        self.checkpoint = checkpoint
        self.packaged = network is None and checkpoint is None
        if network is None:
            network = packaged_network(num_states) if checkpoint is None else load_network(checkpoint)
        self.network = network
        if temperature is None:
            temperature = self.network.acting_temperature
        self.temperature = float(temperature)
        self.num_layers = num_layers
        net = self.network
        self.untried_bonus = net.acting_untried_bonus if untried_bonus is None else untried_bonus
        self.untried_discount = net.acting_untried_discount if untried_discount is None else untried_discount
        self.untried_relative = net.acting_untried_relative if untried_relative is None else untried_relative
        self._untried: torch.Tensor | None = None  # (SA,) U of the last plan, with a bonus
        self._counts = Counts.empty(self.num_actions)
        self._pending: list[tuple[int, int, float, int, bool]] = []
        self._since_plan = 0
        self.plans = 0
        self.policy = (1.0 / self.num_actions.double()).repeat_interleave(self.num_actions)
        self.acting_policy = self.policy
        self._greedy_scores: torch.Tensor | None = None  # a value head's greedy scores, if it has one

    @property
    def counts(self) -> Counts:
        """All transitions observed so far (:class:`~rlfm.counts.Counts`)."""
        if self._pending:
            state, action, reward, next_state, terminated = zip(*self._pending, strict=True)
            self._counts.update(
                torch.tensor(state),
                torch.tensor(action),
                torch.tensor(reward, dtype=torch.float64),
                torch.tensor(next_state),
                torch.tensor(terminated),
            )
            self._pending.clear()
        return self._counts

    def plan(self) -> None:
        """Refresh :attr:`policy`: one network call on all data so far."""
        prediction = predict(self.counts, self.gamma, self.network, self.num_layers)
        self.policy, self._greedy_scores = prediction.policy.double(), prediction.greedy_scores
        self.acting_policy = prediction.acting_policy.double()
        if self.untried_bonus > 0:
            layout = ActionLayout(self.num_actions)
            model = EmpiricalModel.from_counts([self.counts], layout)
            self._untried = untried_scores(model, self.untried_discount, self.untried_relative)[0]
        self._since_plan = 0
        self.plans += 1

    def act(self, state: int) -> int:
        block = self._block(state)
        p = self.acting_policy.numpy()[block]
        if self.temperature != 1.0:
            p = (p / p.max()) ** (1.0 / self.temperature)
        if self._untried is not None:  # π^(1/T) e^(β U), U in [0, 1]
            p = p * np.exp(self.untried_bonus * self._untried.numpy()[block])
        return int(self.rng.choice(p.size, p=p / p.sum()))

    def greedy_action(self, state: int) -> int:
        scores = self.policy if self._greedy_scores is None else self._greedy_scores
        return int(scores[self._block(state)].argmax())

    def _learn(self, state: int, action: int, reward: float, next_state: int, terminated: bool) -> None:
        self._pending.append((state, action, reward, next_state, terminated))
        self._since_plan += 1
        if self.replan_every is not None and self._since_plan >= self.replan_every:
            self.plan()

    def _episode_ended(self) -> None:
        if self._since_plan:
            self.plan()

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "gamma": self.gamma,
            "temperature": self.temperature,
            "replan_every": self.replan_every,
            "checkpoint": network_label(
                self.checkpoint, packaged_name(self.num_states) if self.packaged else None
            ),
            "num_layers": self.num_layers if self.num_layers is not None else "default",
            "untried_bonus": self.untried_bonus,
            "untried_discount": self.untried_discount,
            "untried_relative": self.untried_relative,
        }


class QLearningAgent(InteractiveAgent):
    r"""Tabular Q-learning, ε-greedy with optimistic initial values, for comparison.

    :math:`Q(s, a) \leftarrow Q(s, a) + \alpha (r + \gamma (1 - d) \max_{a'} Q(s', a') - Q(s, a))`; a pair
    not yet updated is worth :math:`\kappa \hat r_{\max} / (1 - \gamma)`, with :math:`\hat r_{\max}` the
    largest |reward| observed (1 before any), as in the benchmarks' batched ``qlearning``. Ties go at random.

    Args:
        epsilon: probability of a uniformly random action, in [0, 1].
        alpha: step size, in (0, 1].
        optimism: κ ≥ 0 (0: pessimistic zeros).
    """

    name: ClassVar[str] = "qlearning"

    def __init__(
        self,
        num_states: int,
        num_actions: int | Sequence[int],
        gamma: float = 0.99,
        *,
        epsilon: float = 0.1,
        alpha: float = 0.1,
        optimism: float = 1.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(num_states, num_actions, gamma, seed)
        if not (isinstance(epsilon, int | float) and 0 <= epsilon <= 1):
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon!r}")
        if not (isinstance(alpha, int | float) and 0 < alpha <= 1):
            raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
        if not (isinstance(optimism, int | float) and math.isfinite(optimism) and optimism >= 0):
            raise ValueError(f"optimism must be a finite number ≥ 0, got {optimism!r}")
        self.epsilon, self.alpha, self.optimism = float(epsilon), float(alpha), float(optimism)
        self.table = np.zeros(int(self.num_actions.sum()))
        self.updated = np.zeros(self.table.size, dtype=bool)
        self.max_abs_reward = 0.0

    @property
    def q(self) -> np.ndarray:
        """(SA,) Q, with the optimistic value in pairs not yet updated."""
        return np.where(self.updated, self.table, self._initial())

    def _initial(self) -> float:
        return self.optimism * (self.max_abs_reward or 1.0) / (1.0 - self.gamma)

    def _values(self, state: int) -> np.ndarray:
        """(A_s,) Q of ``state``'s actions."""
        block = self._block(state)
        return np.where(self.updated[block], self.table[block], self._initial())

    def act(self, state: int) -> int:
        values = self._values(state)
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(values.size))
        return int(self.rng.choice(np.flatnonzero(values == values.max())))

    def greedy_action(self, state: int) -> int:
        return int(self._values(state).argmax())

    def _learn(self, state: int, action: int, reward: float, next_state: int, terminated: bool) -> None:
        self.max_abs_reward = max(self.max_abs_reward, abs(reward))
        future = 0.0 if terminated else float(self._values(next_state).max())
        current = float(self._values(state)[action])
        sa = self.action_ptr[state] + action
        self.table[sa] = current + self.alpha * (reward + self.gamma * future - current)
        self.updated[sa] = True

    def hyperparameters(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "epsilon": self.epsilon, "alpha": self.alpha, "optimism": self.optimism}


class RandomAgent(InteractiveAgent):
    """Uniformly random actions: the floor any learner should clear."""

    name: ClassVar[str] = "random"

    def act(self, state: int) -> int:
        block = self._block(state)
        return int(self.rng.integers(block.stop - block.start))

    def greedy_action(self, state: int) -> int:
        return self.act(state)


AGENTS: dict[str, type[InteractiveAgent]] = {
    cls.name: cls for cls in (InContextAgent, QLearningAgent, RandomAgent)
}
"""The interactive agents by name (``rlfm solve --agents``)."""
