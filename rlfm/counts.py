"""Observed experience as its sufficient statistic.

For planning, a stream of transitions (s, a, r, s', terminated) compresses without loss into visit counts
N(s, a), transition counts N(s, a, s') (so P̂(s'|s,a) = N(s,a,s') / N(s,a)) and the sums of the rewards and
of their squares (so the mean reward r̂(s, a) and its sample variance), plus the states seen to end an
episode. The size does not depend on how much was seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from rlfm.mdp import (
    TabularMDP,
    action_ptr,
    check_num_actions,
    index_tensor,
    integer_tensor,
    numeric_tensor,
    real_tensor,
    state_of_pairs,
)

SAFE_REWARD = 1e150  # |rewards| below this cannot overflow a float64 sum (fewer than 1e158 of them)


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
        reward_sq_sum: (SA,) sum of the squared rewards received after (s, a) (+inf once a square overflows
            float64, |reward| > 1.3e154). Default (None): zeros, which PSRL reads as deterministic rewards
            (it clamps the sum of squared deviations Σr² − (Σr)² / N at 0).
    """

    num_actions: Tensor
    sa_count: Tensor
    reward_sum: Tensor
    transition_key: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    transition_count: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    terminal: Tensor | None = None
    max_abs_reward: float = 0.0
    reward_sq_sum: Tensor | None = None

    def __post_init__(self) -> None:
        if self.terminal is None:
            self.terminal = torch.zeros(self.num_states, dtype=torch.bool)
        if self.reward_sq_sum is None:
            self.reward_sq_sum = torch.zeros_like(self.reward_sum, dtype=torch.float64)

    @classmethod
    def empty(cls, num_actions: Tensor | list[int]) -> Counts:
        """No experience yet, for states with ``num_actions`` (S,) actions each (S ≥ 1, every entry ≥ 1)."""
        num_actions = check_num_actions(num_actions)
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
        return state_of_pairs(self.num_actions)

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
        """Add one transition or a batch of them (1-D, each of length N or 1); returns ``self``.

        ``state`` and ``next_state`` are integer indices in [0, S), ``action`` an integer in
        [0, num_actions[state]), ``reward`` a finite real number and ``terminated`` a bool (or 0 / 1). Anything
        else is a ``ValueError`` and leaves the counts unchanged.
        """
        state = index_tensor("state", state, self.num_states, "states").reshape(-1)
        action = integer_tensor("action", action).reshape(-1)
        state, action = _same_length(state=state, action=action)
        bad = (action < 0) | (action >= self.num_actions[state])
        if bad.any():
            i = int(torch.nonzero(bad)[0])
            s = int(state[i])
            raise ValueError(
                f"action {int(action[i])} is out of range in state {s}, which has actions"
                f" 0 .. {int(self.num_actions[s]) - 1}"
            )
        return self.add(self.action_ptr[state] + action, next_state, reward, terminated)

    def add(
        self,
        sa: Tensor,
        next_state: Tensor | int,
        reward: Tensor | float,
        terminated: Tensor | bool = False,
    ) -> Counts:
        """Add transitions given by state-action index ``sa`` (N,) (see :meth:`update`); returns ``self``."""
        sa = index_tensor("sa", sa, self.num_state_actions, "state-action pairs")
        next_state = index_tensor("next_state", next_state, self.num_states, "states")
        reward = real_tensor("reward", reward)
        terminated = _flags("terminated", terminated)
        sa, next_state, reward, terminated = _same_length(
            sa=sa, next_state=next_state, reward=reward, terminated=terminated
        )
        if sa.numel() == 0:
            return self
        largest = float(reward.abs().max())  # NaN if any reward is NaN
        if not math.isfinite(largest):
            bad = float(reward[~torch.isfinite(reward)][0])
            raise ValueError(f"reward must be a finite number, got {bad}")
        reward_sum = self.reward_sum.index_add(0, sa, reward)
        if largest > SAFE_REWARD and not torch.isfinite(reward_sum).all():
            raise ValueError(f"rewards of magnitude {largest:.3g} overflow the float64 reward sums")
        self.sa_count.index_add_(0, sa, torch.ones_like(sa))
        self.reward_sum = reward_sum
        self.reward_sq_sum = self.reward_sq_sum.index_add(0, sa, reward**2)
        self.max_abs_reward = max(self.max_abs_reward, largest)
        self.terminal[next_state[terminated]] = True
        keys = torch.cat([self.transition_key, sa * self.num_states + next_state])
        counts = torch.cat([self.transition_count, torch.ones_like(sa)])
        self.transition_key, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        self.transition_count = torch.zeros_like(self.transition_key).index_add_(0, inverse, counts)
        return self

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistency (shapes, ranges, non-finite sums)."""
        check_num_actions(self.num_actions)
        S, SA = self.num_states, int(self.num_actions.sum())
        for name in ("sa_count", "reward_sum", "reward_sq_sum"):
            if getattr(self, name).shape != (SA,):
                raise ValueError(f"{name} must have shape ({SA},), got {tuple(getattr(self, name).shape)}")
        if self.sa_count.is_floating_point() or (self.sa_count < 0).any():
            raise ValueError("sa_count must hold non-negative integers")
        if not torch.isfinite(self.reward_sum).all():
            raise ValueError("reward_sum holds a value that is not finite")
        if not (self.reward_sq_sum >= 0).all():  # +inf allowed: squares of |reward| > 1.3e154 overflow
            raise ValueError("reward_sq_sum must hold non-negative numbers")
        if self.terminal is None or self.terminal.shape != (S,) or self.terminal.dtype != torch.bool:
            raise ValueError(f"terminal must be a bool tensor of shape ({S},)")
        key, count = self.transition_key, self.transition_count
        if key.dim() != 1 or key.shape != count.shape:
            raise ValueError("transition_key and transition_count must be 1-D of the same length")
        if key.numel():
            index_tensor("transition_key", key, SA * S, "keys sa * S + s'")
            if (key[1:] <= key[:-1]).any():
                raise ValueError("transition_key must be sorted without duplicates")
            if (count < 1).any():
                raise ValueError("transition_count must be at least 1 for every stored key")
        per_pair = torch.zeros(SA, dtype=torch.long).index_add_(0, key // S, count.long())
        if not torch.equal(per_pair, self.sa_count.long()):
            sa = int(torch.nonzero(per_pair != self.sa_count.long())[0])
            raise ValueError(
                f"pair {sa} has sa_count {int(self.sa_count[sa])} but {int(per_pair[sa])} counted successors"
            )
        if not 0 <= self.max_abs_reward < float("inf"):
            raise ValueError(f"max_abs_reward must be finite and non-negative, got {self.max_abs_reward}")

    def copy(self) -> Counts:
        return replace(
            self,
            sa_count=self.sa_count.clone(),
            reward_sum=self.reward_sum.clone(),
            reward_sq_sum=self.reward_sq_sum.clone(),
            transition_key=self.transition_key.clone(),
            transition_count=self.transition_count.clone(),
            terminal=self.terminal.clone(),
        )

    def bootstrap(self, generator: torch.Generator) -> Counts:
        r"""A Poisson bootstrap of the experience: every observed transition is kept a Poisson(1) number of
        times, so :math:`N'(s, a, s') \sim \mathrm{Poisson}(N(s, a, s'))` independently and
        :math:`N'(s, a) = \sum_{s'} N'(s, a, s')`; the reward sums are scaled by :math:`N'(s, a) / N(s, a)`
        (the mean reward is kept). A pair resampled to no visit looks unvisited. The terminal states and the
        reward scale are kept. A new :class:`Counts`; ``self`` is unchanged."""
        return self._with_transition_counts(
            torch.poisson(self.transition_count.double(), generator=generator)
        )

    def split(self, generator: torch.Generator) -> tuple[Counts, Counts]:
        r"""Two halves of the experience by binomial thinning: each observed transition goes to either half
        with probability 1/2, so :math:`N_1(s, a, s') \sim \mathrm{Binomial}(N(s, a, s'), 1/2)` and
        :math:`N_2 = N - N_1`. The reward sums are split in proportion to the visits (each half keeps the
        mean reward: the counts do not hold the single rewards), the terminal states and the reward scale go
        to both. Two new :class:`Counts`; ``self`` is unchanged."""
        total = self.transition_count.double()
        first = torch.binomial(total, torch.full_like(total, 0.5), generator=generator)
        return self._with_transition_counts(first), self._with_transition_counts(total - first)

    def _with_transition_counts(self, transition_count: Tensor) -> Counts:
        """A copy whose N(s, a, s') are ``transition_count`` (K,) (whole numbers, for the observed keys), the
        visits their sums and the reward sums scaled to keep each visited pair's mean reward."""
        count = transition_count.long()
        sa_count = torch.zeros_like(self.sa_count).index_add_(0, self.transition_sa, count)
        scale = sa_count.double() / self.sa_count.clamp(min=1).double()
        kept = count > 0
        return replace(
            self.copy(),
            sa_count=sa_count,
            reward_sum=self.reward_sum * scale,
            reward_sq_sum=torch.where(sa_count > 0, self.reward_sq_sum * scale, 0.0),  # 0 · inf: 0
            transition_key=self.transition_key[kept],
            transition_count=count[kept],
        )

    def __repr__(self) -> str:
        return (
            f"Counts(states={self.num_states}, state_actions={self.num_state_actions},"
            f" observed={self.num_observed}, successors={self.transition_key.numel()})"
        )


def _flags(name: str, value: Tensor | bool) -> Tensor:
    """``value`` as a bool tensor; integers must be 0 or 1, floats are a ``ValueError``."""
    flags = numeric_tensor(name, value)
    if flags.dtype == torch.bool:
        return flags
    if flags.is_floating_point() or not bool(((flags == 0) | (flags == 1)).all()):
        raise ValueError(
            f"{name} must hold booleans (or 0 / 1), got {str(flags.dtype).removeprefix('torch.')} values"
        )
    return flags.bool()


def _same_length(**values: Tensor) -> list[Tensor]:
    """The flattened ``values``, those of one element repeated to the common length N of the others."""
    flat = {name: value.reshape(-1) for name, value in values.items()}
    lengths = {value.shape[0] for value in flat.values()}
    if len(lengths) == 1:
        return list(flat.values())
    lengths.discard(1)
    if len(lengths) > 1:
        given = ", ".join(f"{name}: {value.numel()}" for name, value in flat.items())
        raise ValueError(f"the transitions' fields have different lengths ({given}); give 1 or N values each")
    n = lengths.pop() if lengths else 1
    return [value.expand(n) for value in flat.values()]
