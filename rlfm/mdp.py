"""Finite Markov decision processes in sparse form.

State-action pairs are numbered state by state: the pair (s, a) has index ``sa = action_ptr[s] + a``, so a
state with ``num_actions[s]`` actions owns the contiguous block ``action_ptr[s] : action_ptr[s + 1]``.
Transitions are lists (sa, s', p) sorted by (sa, s'); memory grows with the number of non-zero
transition probabilities, never with S²·A.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

ROW_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class TabularMDP:
    """A finite, discounted MDP; states may have different numbers of actions.

    Attributes:
        num_actions: (S,) number of actions available in each state (at least 1).
        transition_sa: (E,) state-action index of each transition, sorted, together with ``transition_next``.
        transition_next: (E,) successor state of each transition.
        transition_prob: (E,) probability P(s' | s, a); the probabilities of each pair sum to 1.
        reward: (SA,) expected reward r(s, a).
        start: (S,) start-state distribution.
        gamma: discount factor in (0, 1).
        terminal: (S,) absorbing states: every action stays there with reward 0.
        reward_noise: standard deviation of the Gaussian noise added to sampled rewards (0: deterministic).
        name: a label for reports.
        check: validate the fields (pass ``False`` only for data known to be valid, e.g. from the prior).
    """

    num_actions: Tensor
    transition_sa: Tensor
    transition_next: Tensor
    transition_prob: Tensor
    reward: Tensor
    start: Tensor
    gamma: float
    terminal: Tensor
    reward_noise: float = 0.0
    name: str = "mdp"
    check: InitVar[bool] = True

    def __post_init__(self, check: bool) -> None:
        if check:
            self.validate()

    # ------------------------------------------------------------------ indexing
    @property
    def num_states(self) -> int:
        return self.num_actions.numel()

    @property
    def num_state_actions(self) -> int:
        return self.reward.numel()

    @property
    def num_transitions(self) -> int:
        return self.transition_prob.numel()

    @property
    def max_actions(self) -> int:
        return int(self.num_actions.max())

    @cached_property
    def action_ptr(self) -> Tensor:
        """(S + 1,) start of each state's block of state-action indices."""
        return action_ptr(self.num_actions)

    @cached_property
    def sa_state(self) -> Tensor:
        """(SA,) state of each state-action pair."""
        return torch.repeat_interleave(torch.arange(self.num_states), self.num_actions)

    @cached_property
    def sa_action(self) -> Tensor:
        """(SA,) action index of each state-action pair within its state."""
        return torch.arange(self.num_state_actions) - self.action_ptr[self.sa_state]

    def sa_index(self, state: Tensor | int, action: Tensor | int) -> Tensor:
        """Index of the pair (state, action)."""
        return self.action_ptr[state] + action

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first problem found."""
        S, SA = self.num_states, self.num_state_actions
        if not 0.0 < float(self.gamma) < 1.0:
            raise ValueError(f"gamma must lie in (0, 1), got {self.gamma}")
        if S == 0:
            raise ValueError("an MDP needs at least one state")
        if (self.num_actions < 1).any():
            s = int(torch.nonzero(self.num_actions < 1)[0])
            raise ValueError(f"state {s} has no action (num_actions[{s}] = {int(self.num_actions[s])})")
        if int(self.num_actions.sum()) != SA:
            raise ValueError(
                f"reward has {SA} entries but the states have {int(self.num_actions.sum())} actions"
            )
        for field in ("transition_sa", "transition_next"):
            if getattr(self, field).shape != self.transition_prob.shape:
                raise ValueError(f"{field} and transition_prob must have the same shape")
        _check_range("transition_sa", self.transition_sa, SA, "state-action pairs")
        _check_range("transition_next", self.transition_next, S, "states")
        if self.transition_sa.numel() > 1:
            key = self.transition_sa * S + self.transition_next
            if (key[1:] <= key[:-1]).any():
                raise ValueError(
                    "transitions must be sorted by (state-action, next state) without duplicates"
                )
        prob = self.transition_prob
        bad = ~torch.isfinite(prob) | (prob < 0)
        if bad.any():
            e = int(torch.nonzero(bad)[0])
            s, a = self._pair(int(self.transition_sa[e]))
            raise ValueError(
                "transition probabilities must be finite and non-negative:"
                f" P(s'={int(self.transition_next[e])} | s={s}, a={a}) = {float(prob[e])}"
            )
        row_sum = torch.zeros(SA, dtype=prob.dtype).index_add_(0, self.transition_sa, prob)
        bad = (row_sum - 1).abs() > ROW_SUM_TOLERANCE
        if bad.any():
            sa = int(torch.nonzero(bad)[0])
            s, a = self._pair(sa)
            raise ValueError(f"P(. | s={s}, a={a}) sums to {float(row_sum[sa]):.6g}, not 1")
        if not torch.isfinite(self.reward).all():
            s, a = self._pair(int(torch.nonzero(~torch.isfinite(self.reward))[0]))
            raise ValueError(f"reward r(s={s}, a={a}) is not finite")
        if self.start.shape != (S,):
            raise ValueError(f"start must have shape ({S},), got {tuple(self.start.shape)}")
        if not torch.isfinite(self.start).all() or (self.start < 0).any():
            raise ValueError("start distribution must be finite and non-negative")
        if abs(float(self.start.sum()) - 1) > ROW_SUM_TOLERANCE:
            raise ValueError(f"start distribution sums to {float(self.start.sum()):.6g}, not 1")
        if self.terminal.shape != (S,) or self.terminal.dtype != torch.bool:
            raise ValueError(f"terminal must be a bool tensor of shape ({S},)")
        if not self.reward_noise >= 0:
            raise ValueError(f"reward_noise must be non-negative, got {self.reward_noise}")
        self._check_absorbing()

    def _pair(self, sa: int) -> tuple[int, int]:
        s = int(self.sa_state[sa])
        return s, sa - int(self.action_ptr[s])

    def _check_absorbing(self) -> None:
        if not self.terminal.any():
            return
        on_terminal = self.terminal[self.sa_state]
        edge_on_terminal = on_terminal[self.transition_sa]
        stays = self.transition_next[edge_on_terminal] == self.sa_state[self.transition_sa[edge_on_terminal]]
        if not torch.all(stays | (self.transition_prob[edge_on_terminal] == 0)):
            s = int(self.sa_state[self.transition_sa[edge_on_terminal][~stays][0]])
            raise ValueError(f"terminal state {s} is not absorbing: an action leaves it")
        if (self.reward[on_terminal] != 0).any():
            s = int(self.sa_state[torch.nonzero(on_terminal & (self.reward != 0))[0]])
            raise ValueError(f"terminal state {s} must have reward 0")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_transitions(
        cls,
        num_actions: Tensor | list[int],
        sa: Tensor,
        next_state: Tensor,
        prob: Tensor,
        reward: Tensor,
        gamma: float = 0.95,
        start: Tensor | int = 0,
        terminal: Tensor | None = None,
        reward_noise: float = 0.0,
        name: str = "mdp",
        check: bool = True,
    ) -> TabularMDP:
        """Build from unsorted (sa, s', p) lists; duplicate (sa, s') entries are summed.

        Terminal states are made absorbing (their transitions and rewards are replaced).
        """
        num_actions = torch.as_tensor(num_actions, dtype=torch.long)
        S = num_actions.numel()
        sa = torch.as_tensor(sa, dtype=torch.long)
        next_state = torch.as_tensor(next_state, dtype=torch.long)
        prob = torch.as_tensor(prob, dtype=torch.float64)
        reward = torch.as_tensor(reward, dtype=torch.float64).clone()
        SA = int(num_actions.sum())
        _check_range("sa", sa, SA, "state-action pairs")
        _check_range("next_state", next_state, S, "states")
        terminal_mask = _state_mask(terminal, S)
        if terminal_mask.any():
            sa_state = torch.repeat_interleave(torch.arange(S), num_actions)
            keep = ~terminal_mask[sa_state[sa]]
            absorbing_sa = torch.nonzero(terminal_mask[sa_state]).squeeze(1)
            sa = torch.cat([sa[keep], absorbing_sa])
            next_state = torch.cat([next_state[keep], sa_state[absorbing_sa]])
            prob = torch.cat([prob[keep], torch.ones(absorbing_sa.numel(), dtype=torch.float64)])
            reward[absorbing_sa] = 0.0
        key = sa * S + next_state
        unique_key, inverse = torch.unique(key, sorted=True, return_inverse=True)
        merged = torch.zeros(unique_key.numel(), dtype=torch.float64).index_add_(0, inverse, prob)
        nonzero = merged != 0
        unique_key, merged = unique_key[nonzero], merged[nonzero]
        return cls(
            num_actions=num_actions,
            transition_sa=unique_key // S,
            transition_next=unique_key % S,
            transition_prob=merged,
            reward=reward,
            start=_start_distribution(start, S),
            gamma=float(gamma),
            terminal=terminal_mask,
            reward_noise=float(reward_noise),
            name=name,
            check=check,
        )

    @classmethod
    def from_dense(
        cls,
        P: Tensor | np.ndarray,
        R: Tensor | np.ndarray,
        gamma: float = 0.95,
        start: Tensor | int = 0,
        terminal: Tensor | np.ndarray | list[int] | None = None,
        num_actions: Tensor | list[int] | None = None,
        name: str = "mdp",
    ) -> TabularMDP:
        """Build from dense arrays ``P`` (S, A, S) and ``R`` (S, A).

        Args:
            num_actions: (S,) actions per state; state s uses actions ``0 .. num_actions[s] - 1`` of the
                padded arrays (default: all A).
            terminal: absorbing states, as a bool mask (S,) or a list of indices. Default: the states whose
                every action stays put with probability 1 and reward 0 (they end an episode when entered).
        """
        P = torch.as_tensor(np.asarray(P), dtype=torch.float64)
        R = torch.as_tensor(np.asarray(R), dtype=torch.float64)
        if P.dim() != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"P must have shape (S, A, S), got {tuple(P.shape)}")
        S, A, _ = P.shape
        if R.shape != (S, A):
            raise ValueError(f"R must have shape (S, A) = ({S}, {A}), got {tuple(R.shape)}")
        if num_actions is None:
            num_actions = torch.full((S,), A, dtype=torch.long)
        num_actions = torch.as_tensor(num_actions, dtype=torch.long)
        if num_actions.shape != (S,) or (num_actions > A).any():
            raise ValueError(f"num_actions must have shape ({S},) with entries at most A = {A}")
        valid = torch.arange(A) < num_actions[:, None]  # (S, A)
        if not torch.isfinite(P[valid]).all():
            raise ValueError("P holds a value that is not finite (NaN or inf)")
        if (P[valid] < 0).any():
            s, a, t = (int(i) for i in torch.nonzero((P < 0) & valid[..., None])[0])
            raise ValueError(
                f"P holds a negative probability: P(s'={t} | s={s}, a={a}) = {float(P[s, a, t])}"
            )
        if terminal is None:
            stays = P.diagonal(dim1=0, dim2=2).T == 1  # (S, A): P(s | s, a) = 1
            terminal = ((stays & (R == 0)) | ~valid).all(dim=1)
        s_idx, a_idx, next_idx = torch.nonzero(P * valid[..., None], as_tuple=True)
        return cls.from_transitions(
            num_actions,
            action_ptr(num_actions)[s_idx] + a_idx,
            next_idx,
            P[s_idx, a_idx, next_idx],
            R[valid],
            gamma=gamma,
            start=start,
            terminal=terminal,
            name=name,
        )

    @classmethod
    def from_npz(cls, path: str | Path, gamma: float | None = None) -> TabularMDP:
        """Load arrays ``P`` (S, A, S), ``R`` (S, A) and optional ``gamma``, ``start``, ``terminal``,
        ``num_actions``.

        Args:
            gamma: overrides the file's discount (default: the file's, else 0.95).
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no MDP file at {path}")
        with np.load(path) as data:
            missing = {"P", "R"} - set(data.files)
            if missing:
                raise ValueError(f"{path} lacks the arrays {sorted(missing)} (it holds {sorted(data.files)})")
            fields = {key: data[key] for key in data.files}
        start = fields.get("start", 0)
        start = int(start) if np.ndim(start) == 0 else start
        return cls.from_dense(
            fields["P"],
            fields["R"],
            gamma=float(fields.get("gamma", 0.95) if gamma is None else gamma),
            start=start,
            terminal=fields.get("terminal"),
            num_actions=fields.get("num_actions"),
            name=path.stem,
        )

    @classmethod
    def from_gymnasium(cls, env: Any, gamma: float = 0.95, name: str | None = None) -> TabularMDP:
        """Convert an environment with ``Discrete`` spaces and a ``P`` table (FrozenLake, CliffWalking, Taxi).

        ``P[s][a]`` lists outcomes ``(prob, next_state, reward, terminated)``. Duplicate outcomes are summed
        and the reward becomes its expectation. A state entered only through terminating outcomes becomes
        absorbing, as does one entered that way and otherwise only from states the start cannot reach
        (Taxi's delivered-passenger states); if a state is entered both ways, terminating outcomes go to
        one extra absorbing state. FrozenLake, CliffWalking and Taxi keep their sizes.
        """
        base = env.unwrapped
        table = getattr(base, "P", None)
        if table is None:
            raise ValueError(f"{type(base).__name__} has no transition table P")
        S = int(base.observation_space.n)
        A = int(base.action_space.n)
        sa, nxt, prob, ends = [], [], [], []
        reward = torch.zeros(S * A, dtype=torch.float64)
        for s in range(S):
            for a in range(A):
                for p, s2, r, done in table[s][a]:
                    sa.append(s * A + a)
                    nxt.append(int(s2))
                    prob.append(float(p))
                    ends.append(bool(done))
                    reward[s * A + a] += float(p) * float(r)
        nxt_t, ends_t = torch.tensor(nxt), torch.tensor(ends)
        src_t = torch.tensor(sa) // A
        isd = getattr(base, "initial_state_distrib", None)
        if isd is None:
            isd = getattr(base, "isd", None)
        start = torch.zeros(S, dtype=torch.float64)
        if isd is not None:
            start = torch.as_tensor(np.asarray(isd, dtype=np.float64)).clone()
        else:
            start[int(base.reset(seed=0)[0])] = 1.0
        # States reachable from a start state without an episode ending first.
        reachable = start > 0
        going_on = ~ends_t
        while True:
            grown = reachable.clone()
            grown[nxt_t[going_on & reachable[src_t]]] = True
            if bool((grown == reachable).all()):
                break
            reachable = grown
        entered_ending = torch.zeros(S, dtype=torch.bool)
        entered_ending[nxt_t[ends_t]] = True
        entered_going_on = torch.zeros(S, dtype=torch.bool)
        entered_going_on[nxt_t[going_on & reachable[src_t]]] = True
        terminal = entered_ending & ~entered_going_on
        mixed = entered_ending & entered_going_on
        num_states = S
        if mixed.any():  # one extra absorbing sink for terminating entries of mixed states
            sink = S
            nxt_t = torch.where(ends_t & mixed[nxt_t], torch.full_like(nxt_t, sink), nxt_t)
            terminal = torch.cat([terminal, torch.ones(1, dtype=torch.bool)])
            start = torch.cat([start, torch.zeros(1, dtype=torch.float64)])
            num_states = S + 1
        num_actions = torch.full((num_states,), A, dtype=torch.long)
        reward = torch.cat([reward, torch.zeros((num_states - S) * A, dtype=torch.float64)])
        spec = getattr(env, "spec", None)
        return cls.from_transitions(
            num_actions,
            torch.tensor(sa),
            nxt_t,
            torch.tensor(prob, dtype=torch.float64),
            reward,
            gamma=gamma,
            start=start / start.sum(),
            terminal=terminal,
            name=name or (spec.id if spec is not None else type(base).__name__),
        )

    # ------------------------------------------------------------------ export
    def to_dense(self) -> tuple[Tensor, Tensor, Tensor]:
        """Padded arrays: ``P`` (S, A_max, S), ``R`` (S, A_max) and the action mask (S, A_max)."""
        S, A = self.num_states, self.max_actions
        P = torch.zeros(S, A, S, dtype=torch.float64)
        s, a = self.sa_state[self.transition_sa], self.sa_action[self.transition_sa]
        P[s, a, self.transition_next] = self.transition_prob.double()
        R = torch.zeros(S, A, dtype=torch.float64)
        R[self.sa_state, self.sa_action] = self.reward.double()
        mask = torch.arange(A) < self.num_actions[:, None]
        return P, R, mask

    def save_npz(self, path: str | Path) -> None:
        """Write the ``.npz`` format read by :meth:`from_npz` and ``rlfm benchmark --mdp``."""
        P, R, _ = self.to_dense()
        np.savez(
            path,
            P=P.numpy(),
            R=R.numpy(),
            gamma=np.float64(self.gamma),
            start=self.start.double().numpy(),
            terminal=self.terminal.numpy(),
            num_actions=self.num_actions.numpy(),
        )

    def __repr__(self) -> str:
        return (
            f"TabularMDP(name={self.name!r}, states={self.num_states},"
            f" state_actions={self.num_state_actions}, transitions={self.num_transitions},"
            f" gamma={self.gamma:g})"
        )


def offsets(sizes: Tensor) -> Tensor:
    """(N + 1,) where each of N consecutive blocks of the given ``sizes`` (N,) starts, and the total."""
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])


def action_ptr(num_actions: Tensor) -> Tensor:
    """(S + 1,) start of each state's block of state-action indices, from ``num_actions`` (S,)."""
    return offsets(num_actions)


def _check_range(name: str, index: Tensor, size: int, what: str) -> None:
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
        bad = int(index.min()) if int(index.min()) < 0 else int(index.max())
        raise ValueError(f"{name} holds the index {bad}, but there are {size} {what}")


def _state_mask(states: Tensor | np.ndarray | list[int] | None, S: int) -> Tensor:
    """A bool mask (S,) from a mask or a list of state indices."""
    mask = torch.zeros(S, dtype=torch.bool)
    if states is None:
        return mask
    states = torch.as_tensor(np.asarray(states))
    if states.dtype == torch.bool:
        if states.shape != (S,):
            raise ValueError(f"terminal mask must have shape ({S},), got {tuple(states.shape)}")
        return states.clone()
    states = states.long().flatten()
    _check_range("terminal", states, S, "states")
    mask[states] = True
    return mask


def _start_distribution(start: Tensor | np.ndarray | int, S: int) -> Tensor:
    """A distribution (S,) from a state index or a vector."""
    if isinstance(start, int | np.integer):
        _check_range("start", torch.tensor([int(start)]), S, "states")
        dist = torch.zeros(S, dtype=torch.float64)
        dist[int(start)] = 1.0
        return dist
    return torch.as_tensor(np.asarray(start), dtype=torch.float64).flatten()
