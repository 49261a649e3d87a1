"""Finite Markov decision processes in sparse form.

State-action pairs are numbered state by state: the pair (s, a) has index ``sa = action_ptr[s] + a``, so a
state with ``num_actions[s]`` actions owns the contiguous block ``action_ptr[s] : action_ptr[s + 1]``.
Transitions are lists (sa, s', p) sorted by (sa, s'); memory grows with the number of non-zero
transition probabilities, never with S²·A.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import InitVar, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

ROW_SUM_TOLERANCE = 1e-6
NPZ_FIELDS = ("P", "R", "gamma", "start", "terminal", "num_actions")


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
        return state_of_pairs(self.num_actions)

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
        if not 0 <= self.reward_noise < float("inf"):
            raise ValueError(f"reward_noise must be finite and non-negative, got {self.reward_noise}")
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
        leaves = ~stays & (self.transition_prob[edge_on_terminal] != 0)
        if leaves.any():
            e = int(torch.nonzero(edge_on_terminal).squeeze(1)[leaves][0])
            s, a = self._pair(int(self.transition_sa[e]))
            raise ValueError(
                f"terminal state {s} is not absorbing: action {a} leads to state"
                f" {int(self.transition_next[e])} with probability {float(self.transition_prob[e]):.6g}"
                " (a terminal state must stay put with probability 1 and pay reward 0)"
            )
        if (self.reward[on_terminal] != 0).any():
            sa = int(torch.nonzero(on_terminal & (self.reward != 0))[0])
            s, a = self._pair(sa)
            raise ValueError(
                f"terminal state {s} must have reward 0, but r(s={s}, a={a}) = {float(self.reward[sa]):.6g}"
            )

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
        terminal: Tensor | list[int] | None = None,
        reward_noise: float = 0.0,
        name: str = "mdp",
        check: bool = True,
        make_absorbing: bool = True,
    ) -> TabularMDP:
        """Build from unsorted (sa, s', p) lists; duplicate (sa, s') entries are summed.

        Args:
            start: a state index or a distribution (S,) (see :func:`start_distribution`).
            terminal: a bool mask (S,) or integer state indices (see :func:`state_mask`).
            make_absorbing: replace the transitions and rewards of the terminal states by a self-loop that
                pays 0 (what the generators of the prior rely on). ``False``: a terminal state that is not
                already absorbing with reward 0 is a ``ValueError``.
        """
        num_actions = check_num_actions(num_actions)
        S = num_actions.numel()
        SA = int(num_actions.sum())
        sa = index_tensor("sa", sa, SA, "state-action pairs").reshape(-1)
        next_state = index_tensor("next_state", next_state, S, "states").reshape(-1)
        prob = real_tensor("prob", prob).reshape(-1)
        reward = real_tensor("reward", reward).reshape(-1).clone()
        if not sa.shape == next_state.shape == prob.shape:
            raise ValueError(
                f"sa, next_state and prob must have the same length, got {sa.numel()}, {next_state.numel()}"
                f" and {prob.numel()}"
            )
        terminal_mask = state_mask(terminal, S)
        if make_absorbing and terminal_mask.any():
            sa_state = state_of_pairs(num_actions)
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
            start=start_distribution(start, S),
            gamma=check_gamma(gamma) if check else float(gamma),
            terminal=terminal_mask,
            reward_noise=float(reward_noise),
            name=name,
            check=check,
        )

    @classmethod
    def from_outcomes(
        cls,
        num_states: int,
        num_actions: int,
        rows: list[tuple[int, int, int, float, float]],
        gamma: float = 0.95,
        start: Tensor | int = 0,
        name: str = "mdp",
        terminal: list[int] | None = None,
    ) -> TabularMDP:
        """Build from outcome rows ``(s, a, s', p, r(s, a, s'))`` with ``num_actions`` actions in every state;
        the reward becomes E[r | s, a]."""
        s, a, nxt, p, r = (torch.tensor(column) for column in zip(*rows, strict=True))
        sa = s * num_actions + a
        reward = torch.zeros(num_states * num_actions, dtype=torch.float64).index_add_(
            0, sa, p.double() * r.double()
        )
        return cls.from_transitions(
            torch.full((num_states,), num_actions),
            sa,
            nxt,
            p.double(),
            reward,
            gamma=gamma,
            start=start,
            terminal=terminal,
            name=name,
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
        """Build from dense real arrays ``P`` (S, A, S) and ``R`` (S, A).

        Args:
            gamma: one real number in (0, 1).
            start: a state index or a distribution (S,) (see :func:`start_distribution`).
            terminal: absorbing states, as a bool mask (S,) or integer state indices (see :func:`state_mask`);
                each must already stay put with probability 1 and pay reward 0 (else ``ValueError``).
                Default: the states whose every action stays put with probability 1 and reward 0.
            num_actions: (S,) integers; state s uses actions ``0 .. num_actions[s] - 1`` of the padded
                arrays (default: all A).
        """
        P = real_tensor("P", P)
        R = real_tensor("R", R)
        if P.dim() != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"P must have shape (S, A, S), got {tuple(P.shape)}")
        S, A, _ = P.shape
        if S == 0 or A == 0:
            raise ValueError(f"P has shape {tuple(P.shape)}; an MDP needs at least one state and one action")
        if R.shape != (S, A):
            raise ValueError(f"R must have shape (S, A) = ({S}, {A}), got {tuple(R.shape)}")
        gamma = check_gamma(gamma)
        num_actions = check_num_actions(torch.full((S,), A) if num_actions is None else num_actions, S)
        if (num_actions > A).any():
            s = int(torch.nonzero(num_actions > A)[0])
            raise ValueError(f"num_actions[{s}] = {int(num_actions[s])}, but P has only A = {A} actions")
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
            make_absorbing=False,
        )

    @classmethod
    def from_npz(cls, path: str | Path, gamma: float | None = None) -> TabularMDP:
        """Load an ``.npz`` archive (``numpy.savez``) of the arrays ``P`` (S, A, S) and ``R`` (S, A) and the
        optional ``gamma``, ``start``, ``terminal`` and ``num_actions``, each in a form :meth:`from_dense`
        takes; any other array, or a file that is not such an archive, is a ``ValueError`` naming the file.

        Args:
            gamma: overrides the file's discount (default: the file's, else 0.95).
        """
        path = Path(path)
        fields = _read_npz(path)
        try:
            missing = {"P", "R"} - set(fields)
            if missing:
                raise ValueError(f"it lacks the arrays {sorted(missing)} (it holds {sorted(fields)})")
            unknown = set(fields) - set(NPZ_FIELDS)
            if unknown:
                raise ValueError(
                    f"it holds arrays rlfm does not read: {sorted(unknown)} (it reads {', '.join(NPZ_FIELDS)})"
                )
            return cls.from_dense(
                fields["P"],
                fields["R"],
                gamma=fields.get("gamma", 0.95) if gamma is None else gamma,
                start=fields.get("start", 0),
                terminal=fields.get("terminal"),
                num_actions=fields.get("num_actions"),
                name=path.stem,
            )
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    @classmethod
    def from_gymnasium(cls, env: Any, gamma: float = 0.95, name: str | None = None) -> TabularMDP:
        """The exact MDP of a gymnasium environment with a ``P`` table (see
        :func:`rlfm.environments.mdp_from_gymnasium`, which this calls)."""
        from rlfm.environments import mdp_from_gymnasium

        return mdp_from_gymnasium(env, gamma=gamma, name=name)

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


def state_of_pairs(num_actions: Tensor) -> Tensor:
    """(SA,) the state of each state-action pair, pairs grouped by state, from ``num_actions`` (S,)."""
    return torch.repeat_interleave(torch.arange(num_actions.numel(), device=num_actions.device), num_actions)


def _check_range(name: str, index: Tensor, size: int, what: str) -> None:
    if not index.numel():
        return
    low, high = (int(x) for x in torch.aminmax(index))
    if low < 0 or high >= size:
        raise ValueError(f"{name} holds the index {low if low < 0 else high}, but there are {size} {what}")


# ---------------------------------------------------------------------------------------- input checks
def numeric_tensor(name: str, value: Any) -> Tensor:
    """``value`` (a tensor, array, list or number) as a real tensor of its own dtype; ``ValueError`` for
    complex, ragged or non-numeric input."""
    if isinstance(value, Tensor):
        tensor = value.detach()
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} is not a rectangular array of numbers ({error})") from None
        if array.dtype.kind not in "biufc":
            raise ValueError(f"{name} must hold numbers, got an array of dtype {array.dtype}")
        tensor = torch.as_tensor(array)
    if tensor.is_complex():
        raise ValueError(f"{name} holds complex numbers; it must be real")
    return tensor


def real_tensor(name: str, value: Any) -> Tensor:
    """``value`` as a float64 tensor (see :func:`numeric_tensor`)."""
    return numeric_tensor(name, value).to(torch.float64)


def integer_tensor(name: str, value: Any, what: str = "integers") -> Tensor:
    """``value`` as a long tensor; floats and bools are a ``ValueError``."""
    tensor = numeric_tensor(name, value)
    if tensor.dtype == torch.bool or tensor.is_floating_point():
        raise ValueError(f"{name} must hold {what}, got {_describe(tensor)}")
    return tensor.long()


def index_tensor(name: str, value: Any, size: int, what: str) -> Tensor:
    """``value`` as a long tensor of integer indices in ``[0, size)``; floats and bools are a ``ValueError``."""
    tensor = integer_tensor(name, value, f"integer indices of {what}")
    _check_range(name, tensor, size, what)
    return tensor


def check_gamma(gamma: Any) -> float:
    """The discount as a float; ``ValueError`` unless it is one real number with 0 < gamma < 1."""
    value = numeric_tensor("gamma", gamma)
    if value.dtype == torch.bool or value.numel() != 1:
        raise ValueError(f"gamma must be one number in (0, 1), got {_describe(value)}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"gamma must lie in (0, 1), got {float(value)}")
    return float(value)


def check_num_actions(num_actions: Any, S: int | None = None) -> Tensor:
    """(S,) long tensor of actions per state; ``ValueError`` unless it is 1-D (of length ``S`` if given),
    non-empty, integer and at least 1 everywhere."""
    counts = numeric_tensor("num_actions", num_actions)
    if counts.numel() == 0:
        raise ValueError("num_actions is empty; an MDP needs at least one state")
    if counts.dtype == torch.bool or counts.is_floating_point() or counts.dim() != 1:
        raise ValueError(f"num_actions must be a 1-D array of integers, got {_describe(counts)}")
    if S is not None and counts.numel() != S:
        raise ValueError(f"num_actions must have shape ({S},), got ({counts.numel()},)")
    counts = counts.long()
    if (counts < 1).any():
        s = int(torch.nonzero(counts < 1)[0])
        raise ValueError(
            f"state {s} has no action (num_actions[{s}] = {int(counts[s])}); each needs at least 1"
        )
    return counts


def state_mask(states: Any, S: int) -> Tensor:
    """A bool mask (S,) of terminal states, from a bool mask (S,) or integer state indices.

    An integer or float array of length S holding only 0 and 1 is ambiguous (a mask or the states 0 and 1?)
    and is a ``ValueError``, as is any float array: store a bool mask or integer indices."""
    mask = torch.zeros(S, dtype=torch.bool)
    if states is None:
        return mask
    given = numeric_tensor("terminal", states)
    if given.dtype == torch.bool:
        if given.shape != (S,):
            raise ValueError(f"terminal mask must have shape ({S},), got {tuple(given.shape)}")
        return given.clone()
    if given.dim() > 1:
        raise ValueError(
            f"terminal must be a bool mask of shape ({S},) or a 1-D list of state indices, got {_describe(given)}"
        )
    if given.numel() == 0:
        return mask
    given = given.reshape(-1)
    if given.numel() == S and bool(((given == 0) | (given == 1)).all()):
        raise ValueError(
            f"terminal is a {str(given.dtype).removeprefix('torch.')} array of length S = {S} holding only 0 and 1, which could be a mask or"
            " the state indices 0 and 1; store a bool mask (e.g. terminal.astype(bool)) or the indices"
        )
    if given.is_floating_point():
        raise ValueError(
            f"terminal holds floats ({_describe(given)}); store a bool mask of shape ({S},) or integer state indices"
        )
    states = given.long()
    _check_range("terminal", states, S, "states")
    mask[states] = True
    return mask


def start_distribution(start: Any, S: int) -> Tensor:
    """A distribution (S,) from a state index (an integer, or a float with an integer value, of size 1) or
    a distribution of shape (S,) (checked to be one by :meth:`TabularMDP.validate`)."""
    given = numeric_tensor("start", start)
    if given.dtype == torch.bool:
        raise ValueError(f"start must be a state index or a distribution of shape ({S},), got booleans")
    if given.dim() == 1 and given.numel() == S:
        return given.to(torch.float64).clone()
    if given.numel() != 1:
        raise ValueError(
            f"start must be a state index or a distribution of shape ({S},), got shape {tuple(given.shape)}"
        )
    value = float(given)
    if not value.is_integer():
        raise ValueError(
            f"start = {value} is neither a state index (an integer) nor a distribution of shape ({S},)"
        )
    if not 0 <= value < S:
        raise ValueError(f"start holds the index {int(value)}, but there are {S} states")
    dist = torch.zeros(S, dtype=torch.float64)
    dist[int(value)] = 1.0
    return dist


def _describe(tensor: Tensor) -> str:
    """A short description of a tensor for error messages: its value if it is small, else dtype and shape."""
    if tensor.numel() <= 4:
        values = tensor.tolist()
        return f"{values} ({str(tensor.dtype).removeprefix('torch.')})"
    return f"a {str(tensor.dtype).removeprefix('torch.')} array of shape {tuple(tensor.shape)}"


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive, read without unpickling anything; ``FileNotFoundError`` or
    ``ValueError`` naming the file and what is wrong with it."""
    if not path.exists():
        raise FileNotFoundError(f"no MDP file at {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an .npz file")
    with path.open("rb") as file:
        head = file.read(6)
    if not head:
        raise ValueError(f"{path} is empty; an MDP file is an .npz archive (numpy.savez) of P, R, ...")
    if head == b"\x93NUMPY":
        raise ValueError(
            f"{path} holds a single .npy array, not an .npz archive of named arrays:"
            " write it with numpy.savez(path, P=P, R=R, ...)"
        )
    if not head.startswith(b"PK"):
        raise ValueError(f"{path} is not an .npz archive (numpy.savez writes a zip file; this is not one)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ValueError(
                f"{path} holds an array of Python objects, which rlfm does not unpickle; store numeric arrays"
            ) from None
        raise ValueError(f"{path} could not be read as an .npz archive ({error})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, RuntimeError) as error:
        reason = str(error) or type(error).__name__
        raise ValueError(f"{path} could not be read as an .npz archive: it is damaged ({reason})") from None
