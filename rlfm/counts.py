"""Observed experience as its sufficient statistic.

For planning, a stream of transitions (s, a, r, s', terminated) compresses without loss into visit counts
N(s, a), transition counts N(s, a, s') (so P̂(s'|s,a) = N(s,a,s') / N(s,a)) and reward sums (so the mean
reward r̂(s, a)), plus the states seen to end an episode. The size does not depend on how much was seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from rlfm.mdp import TabularMDP, action_ptr


@dataclass
class Counts:
    """Visit, transition and reward statistics of one MDP's experience.

    Attributes:
        num_actions: (S,) actions available in each state.
        sa_count: (SA,) visits N(s, a).
        reward_sum: (SA,) sum of the rewards received after (s, a).
        transition_key: (K,) observed successors as sorted unique keys ``sa * S + s'``.
        transition_count: (K,) N(s, a, s') for each key.
        terminal: (S,) states that ended an episode when entered (observed, not given).
        max_abs_reward: the largest |reward| observed, the per-MDP reward scale.
    """

    num_actions: Tensor
    sa_count: Tensor
    reward_sum: Tensor
    transition_key: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    transition_count: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    terminal: Tensor | None = None
    max_abs_reward: float = 0.0

    def __post_init__(self) -> None:
        if self.terminal is None:
            self.terminal = torch.zeros(self.num_states, dtype=torch.bool)

    @classmethod
    def empty(cls, num_actions: Tensor | list[int]) -> Counts:
        num_actions = torch.as_tensor(num_actions, dtype=torch.long)
        SA = int(num_actions.sum())
        return cls(num_actions, torch.zeros(SA, dtype=torch.long), torch.zeros(SA, dtype=torch.float64))

    @classmethod
    def empty_like(cls, mdp: TabularMDP) -> Counts:
        return cls.empty(mdp.num_actions)

    # ------------------------------------------------------------------ sizes and indices
    @property
    def num_states(self) -> int:
        return self.num_actions.numel()

    @property
    def num_state_actions(self) -> int:
        return self.sa_count.numel()

    @property
    def num_observed(self) -> int:
        """Number of transitions observed."""
        return int(self.sa_count.sum())

    @property
    def action_ptr(self) -> Tensor:
        return action_ptr(self.num_actions)

    @property
    def sa_state(self) -> Tensor:
        return torch.repeat_interleave(torch.arange(self.num_states), self.num_actions)

    @property
    def transition_sa(self) -> Tensor:
        return self.transition_key // self.num_states

    @property
    def transition_next(self) -> Tensor:
        return self.transition_key % self.num_states

    @property
    def mean_reward(self) -> Tensor:
        """(SA,) r̂(s, a); 0 where unvisited."""
        return self.reward_sum / self.sa_count.clamp(min=1)

    @property
    def p_hat(self) -> Tensor:
        """(K,) P̂(s' | s, a) for each observed successor."""
        return self.transition_count.double() / self.sa_count[self.transition_sa].double()

    @property
    def reward_scale(self) -> float:
        """The largest observed |reward|, or 1 before any non-zero reward is seen."""
        return self.max_abs_reward if self.max_abs_reward > 0 else 1.0

    # ------------------------------------------------------------------ updates
    def update(
        self,
        state: Tensor | int,
        action: Tensor | int,
        reward: Tensor | float,
        next_state: Tensor | int,
        terminated: Tensor | bool = False,
    ) -> Counts:
        """Add one transition or a batch of them (1-D tensors); returns ``self``."""
        state = torch.as_tensor(state, dtype=torch.long).reshape(-1)
        action = torch.as_tensor(action, dtype=torch.long).reshape(-1)
        if (action < 0).any() or (action >= self.num_actions[state]).any():
            raise ValueError("an action is out of range for its state")
        return self.add(self.action_ptr[state] + action, next_state, reward, terminated)

    def add(
        self,
        sa: Tensor,
        next_state: Tensor | int,
        reward: Tensor | float,
        terminated: Tensor | bool = False,
    ) -> Counts:
        """Add transitions given by state-action index ``sa`` (N,); returns ``self``."""
        sa = torch.as_tensor(sa, dtype=torch.long).reshape(-1)
        next_state = torch.as_tensor(next_state, dtype=torch.long).reshape(-1).expand_as(sa)
        reward = torch.as_tensor(reward, dtype=torch.float64).reshape(-1).expand(sa.shape)
        terminated = torch.as_tensor(terminated, dtype=torch.bool).reshape(-1).expand(sa.shape)
        if sa.numel() == 0:
            return self
        self.sa_count.index_add_(0, sa, torch.ones_like(sa))
        self.reward_sum.index_add_(0, sa, reward)
        self.max_abs_reward = max(self.max_abs_reward, float(reward.abs().max()))
        self.terminal[next_state[terminated]] = True
        keys = torch.cat([self.transition_key, sa * self.num_states + next_state])
        counts = torch.cat([self.transition_count, torch.ones_like(sa)])
        self.transition_key, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        self.transition_count = torch.zeros_like(self.transition_key).index_add_(0, inverse, counts)
        return self

    def copy(self) -> Counts:
        return replace(
            self,
            sa_count=self.sa_count.clone(),
            reward_sum=self.reward_sum.clone(),
            transition_key=self.transition_key.clone(),
            transition_count=self.transition_count.clone(),
            terminal=self.terminal.clone(),
        )

    def __repr__(self) -> str:
        return (
            f"Counts(states={self.num_states}, state_actions={self.num_state_actions},"
            f" observed={self.num_observed}, successors={self.transition_key.numel()})"
        )
