"""Experience samplers: what an agent would have observed in an MDP, as :class:`~rlfm.counts.Counts`.

Two samplers, both batched over a PyG ``Batch`` of MDP graphs (:func:`rlfm.graph.mdp_graph`) so that one
set of tensor operations serves every MDP of a training batch:

- **generative** (the reference's): n(s, a) ~ Poisson(λ) samples of every pair from the true P, with
  λ ~ LogUniform per MDP; no trajectories.
- **trajectories**: episodes of ``horizon`` steps from the start distribution, ending early on entering a
  terminal state, under a behaviour policy drawn per MDP (:data:`BEHAVIOURS`), with the number of episodes
  ~ LogUniform. This is what an agent sees online, including the data of one that explores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Generator, Tensor
from torch_geometric.data import HeteroData

from rlfm.counts import Counts
from rlfm.graph import OF, STATE, STATE_ACTION, TO
from rlfm.mdp import offsets
from rlfm.prior.distributions import choices, log_uniform, log_uniform_ints, uniform
from rlfm.solve import ActionLayout

BEHAVIOURS = ("uniform", "epsilon_greedy", "sticky", "learning", "explorer")
"""Behaviour policies of the trajectory sampler.

- ``uniform``: uniformly random actions.
- ``epsilon_greedy``: the optimal action, except a random one with probability ε ~ U(0.05, 0.5).
- ``sticky``: random actions that repeat the previous one with probability ~ U(0.5, 0.95).
- ``learning``: ε-greedy with ε falling from 1 to ~U(0, 0.2) over the episodes, like an agent that learns.
- ``explorer``: the least-tried action of the current state (ties broken at random), like a count-based
  exploring agent.
"""


@dataclass
class ExperienceConfig:
    """How much and what kind of experience a training example holds.

    Args:
        weights: probability of each sampler, ``generative`` and ``trajectories``.
        rate: range of λ, the expected samples per state-action pair of the generative sampler.
        episodes: range of the number of episodes of the trajectory sampler (log-uniform).
        horizon: steps per episode.
        behaviours: weight of each behaviour policy of the trajectory sampler.
    """

    weights: dict[str, float] = field(default_factory=lambda: {"generative": 0.3, "trajectories": 0.7})
    rate: tuple[float, float] = (0.1, 10.0)
    episodes: tuple[int, int] = (1, 200)
    horizon: int = 50
    behaviours: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BEHAVIOURS, 1.0))

    def __post_init__(self) -> None:
        for name, allowed in (("weights", ("generative", "trajectories")), ("behaviours", BEHAVIOURS)):
            unknown = set(getattr(self, name)) - set(allowed)
            if unknown:
                raise ValueError(f"unknown {name} {sorted(unknown)}; choose from {allowed}")


@dataclass(frozen=True)
class _Union:
    """Flat views of a batch of MDP graphs as one disjoint union."""

    num_actions: Tensor  # (S,)
    action_ptr: Tensor  # (S + 1,)
    sa_state: Tensor  # (SA,)
    state_graph: Tensor  # (S,)
    sa_graph: Tensor  # (SA,)
    state_ptr: Tensor  # (B + 1,)
    sa_ptr: Tensor  # (B + 1,)
    edge_cumsum: Tensor  # (E,) running sum of transition probabilities
    edge_lo: Tensor  # (SA,) first successor edge of each pair
    edge_hi: Tensor  # (SA,) one past its last successor edge
    edge_next: Tensor  # (E,)
    reward: Tensor  # (SA,)
    reward_noise: Tensor  # (B,)
    start_cumsum: Tensor  # (S,)
    terminal: Tensor  # (S,)

    @classmethod
    def of(cls, batch: HeteroData) -> _Union:
        sa_state = batch[OF].edge_index[1]
        S, SA = batch[STATE].num_nodes, batch[STATE_ACTION].num_nodes
        num_actions = torch.bincount(sa_state, minlength=S)
        edge_sa, edge_next = batch[TO].edge_index
        edge_ptr = offsets(torch.bincount(edge_sa, minlength=SA))
        return cls(
            num_actions=num_actions,
            action_ptr=offsets(num_actions),
            sa_state=sa_state,
            state_graph=batch[STATE].batch,
            sa_graph=batch[STATE_ACTION].batch,
            state_ptr=batch[STATE].ptr,
            sa_ptr=batch[STATE_ACTION].ptr,
            edge_cumsum=batch[TO].prob.double().cumsum(0),
            edge_lo=edge_ptr[:-1],
            edge_hi=edge_ptr[1:],
            edge_next=edge_next,
            reward=batch[STATE_ACTION].reward.double(),
            reward_noise=batch.reward_noise.double(),
            start_cumsum=batch[STATE].start.double().cumsum(0),
            terminal=batch[STATE].terminal,
        )

    @property
    def num_graphs(self) -> int:
        return self.state_ptr.numel() - 1

    def successor(self, sa: Tensor, generator: Generator) -> Tensor:
        """Draw s' ~ P(. | sa) for each entry of ``sa``."""
        return self.edge_next[draw_in_blocks(self.edge_cumsum, self.edge_lo[sa], self.edge_hi[sa], generator)]

    def start_state(self, graph: Tensor, generator: Generator) -> Tensor:
        """Draw s0 from the start distribution of each entry's MDP."""
        return draw_in_blocks(self.start_cumsum, self.state_ptr[graph], self.state_ptr[graph + 1], generator)

    def sampled_reward(self, sa: Tensor, generator: Generator) -> Tensor:
        if not self.noisy:
            return self.reward[sa]
        noise = self.reward_noise[self.sa_graph[sa]]
        return self.reward[sa] + noise * torch.randn(sa.shape, generator=generator, dtype=torch.float64)

    @property
    def noisy(self) -> bool:
        return bool((self.reward_noise > 0).any())


def draw_in_blocks(cumsum: Tensor, lo: Tensor, hi: Tensor, generator: Generator) -> Tensor:
    """Indices i in [lo, hi) (elementwise), drawn with probability ∝ weight[i].

    ``cumsum`` (N,) is the running sum of the weights; each block lo:hi holds positive total weight.
    """
    base = torch.where(lo > 0, cumsum[(lo - 1).clamp(min=0)], 0.0)
    u = torch.rand(lo.shape, generator=generator, dtype=cumsum.dtype)
    index = torch.searchsorted(cumsum, torch.lerp(base, cumsum[hi - 1], u), right=True)
    return torch.minimum(index, hi - 1)


def sample_experience(
    batch: HeteroData, q_star: Tensor, config: ExperienceConfig, generator: Generator
) -> list[Counts]:
    """One experience per MDP of ``batch`` (a PyG batch of MDP graphs); ``q_star`` (SA,) guides behaviours."""
    union = _Union.of(batch)
    B = union.num_graphs
    kinds = choices(config.weights, B, generator)
    generative = torch.tensor([k == "generative" for k in kinds])
    rate = torch.where(
        generative, log_uniform(*config.rate, generator, (B,)), torch.zeros(B, dtype=torch.float64)
    )
    records = [generative_records(union, rate, generator)]
    episodes = log_uniform_ints(*config.episodes, generator, (B,))
    episodes = torch.where(generative, torch.zeros_like(episodes), episodes)
    if int(episodes.sum()) > 0:
        behaviours = choices(config.behaviours, B, generator)
        records.append(trajectory_records(union, q_star, episodes, behaviours, config.horizon, generator))
    sa, next_state, reward, terminated = (torch.cat(parts) for parts in zip(*records, strict=True))
    return split_counts(union, sa, next_state, reward, terminated)


def generative_records(union: _Union, rate: Tensor, generator: Generator) -> tuple[Tensor, ...]:
    """n(s, a) ~ Poisson(rate of the pair's MDP) samples of each pair: (sa, s', r, terminated) lists."""
    n = torch.poisson(rate[union.sa_graph], generator=generator).long()
    sa = torch.repeat_interleave(torch.arange(n.numel()), n)
    next_state = union.successor(sa, generator)
    return sa, next_state, union.sampled_reward(sa, generator), union.terminal[next_state]


def trajectory_records(
    union: _Union,
    q_star: Tensor,
    episodes: Tensor,
    behaviours: list[str],
    horizon: int,
    generator: Generator,
) -> tuple[Tensor, ...]:
    """Run ``episodes`` (B,) episodes per MDP at once under each MDP's behaviour: (sa, s', r, terminated)."""
    graph = torch.repeat_interleave(torch.arange(union.num_graphs), episodes)  # (W,) MDP of each walker
    W = graph.numel()
    episode = torch.arange(W) - offsets(episodes)[graph]  # index of the walker's episode within its MDP
    epsilon, sticky, explorer = _behaviour_parameters(behaviours, graph, episode, episodes, generator)
    greedy_action = ActionLayout(union.num_actions).greedy_actions(q_star.double()[None], tolerance=1e-12)[0]
    max_actions = int(union.num_actions.max())
    explorers = torch.nonzero(explorer).squeeze(1)
    visits = torch.zeros(union.sa_state.numel(), dtype=torch.float64)
    state = union.start_state(graph, generator)
    previous = torch.full((W,), -1, dtype=torch.long)
    alive = torch.ones(W, dtype=torch.bool)
    parts: list[tuple[Tensor, ...]] = []
    for _ in range(horizon):
        num_actions = union.num_actions[state]
        u = torch.rand(3, W, generator=generator, dtype=torch.float64)
        explore = u[0] < epsilon
        repeat = (u[1] < sticky) & (previous >= 0) & (previous < num_actions)
        random_action = (u[2] * num_actions).long()
        if explorers.numel():
            at = state[explorers]
            slots = union.action_ptr[at][:, None] + torch.arange(max_actions)  # (W_explorer, A_max)
            valid = torch.arange(max_actions) < union.num_actions[at][:, None]
            tries = visits[slots.clamp(max=visits.numel() - 1)]
            jitter = torch.rand(tries.shape, generator=generator, dtype=torch.float64)
            least_tried = (tries + 0.5 * jitter).masked_fill(~valid, float("inf")).argmin(dim=1)
            random_action[explorers] = least_tried
        action = torch.where(repeat, previous, random_action)
        action = torch.where(explore, action, greedy_action[state])
        sa = union.action_ptr[state] + action
        next_state = union.successor(sa, generator)
        terminated = union.terminal[next_state]
        live_sa = sa[alive]
        parts.append(
            (live_sa, next_state[alive], union.sampled_reward(live_sa, generator), terminated[alive])
        )
        visits.index_add_(0, live_sa, torch.ones(live_sa.numel(), dtype=torch.float64))
        alive &= ~terminated
        if not alive.any():
            break
        state, previous = next_state, action
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def _behaviour_parameters(
    behaviours: list[str], graph: Tensor, episode: Tensor, episodes: Tensor, generator: Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Per walker: ε (chance of a non-greedy action), stickiness, and whether it explores by counts."""
    B = len(behaviours)
    kind = torch.tensor([BEHAVIOURS.index(b) for b in behaviours])[graph]
    epsilon_greedy = uniform(0.05, 0.5, generator, (B,))[graph]
    stickiness = uniform(0.5, 0.95, generator, (B,))[graph]
    final_epsilon = uniform(0.0, 0.2, generator, (B,))[graph]
    progress = episode.double() / episodes[graph].clamp(min=1).double()
    learning = (1.0 - progress).clamp(min=0.0) * (1 - final_epsilon) + final_epsilon
    one = torch.ones_like(progress)
    epsilon = torch.stack([one, epsilon_greedy, one, learning, one])[kind, torch.arange(graph.numel())]
    sticky = torch.where(kind == BEHAVIOURS.index("sticky"), stickiness, torch.zeros_like(stickiness))
    return epsilon, sticky, kind == BEHAVIOURS.index("explorer")


def split_counts(
    union: _Union, sa: Tensor, next_state: Tensor, reward: Tensor, terminated: Tensor
) -> list[Counts]:
    """Aggregate transitions given in the union's indices into one :class:`Counts` per MDP."""
    S, SA, B = union.num_actions.numel(), union.sa_state.numel(), union.num_graphs
    sa_count = torch.bincount(sa, minlength=SA)
    reward_sum = torch.zeros(SA, dtype=torch.float64).index_add_(0, sa, reward)
    reward_sq_sum = torch.zeros(SA, dtype=torch.float64).index_add_(0, sa, reward**2)
    key, inverse = torch.unique(sa * S + next_state, sorted=True, return_inverse=True)
    key_count = torch.bincount(inverse, minlength=key.numel())
    key_sa, key_next = key // S, key % S
    key_graph = union.sa_graph[key_sa]
    states_per_graph = union.state_ptr[1:] - union.state_ptr[:-1]
    local_key = (
        (key_sa - union.sa_ptr[key_graph]) * states_per_graph[key_graph]
        + key_next
        - union.state_ptr[key_graph]
    )
    terminal = torch.zeros(S, dtype=torch.bool)
    terminal[next_state[terminated]] = True
    largest = torch.zeros(B, dtype=torch.float64).scatter_reduce_(0, union.sa_graph[sa], reward.abs(), "amax")
    keys_per_graph = torch.bincount(key_graph, minlength=B).tolist()
    states = states_per_graph.tolist()
    pairs = (union.sa_ptr[1:] - union.sa_ptr[:-1]).tolist()
    return [
        Counts(
            num_actions=n,
            sa_count=c,
            reward_sum=r,
            transition_key=k,
            transition_count=kc,
            terminal=t,
            max_abs_reward=float(m),
            reward_sq_sum=r2,
        )
        for n, c, r, r2, k, kc, t, m in zip(
            union.num_actions.split(states),
            sa_count.split(pairs),
            reward_sum.split(pairs),
            reward_sq_sum.split(pairs),
            local_key.split(keys_per_graph),
            key_count.split(keys_per_graph),
            terminal.split(states),
            largest.tolist(),
            strict=True,
        )
    ]
