"""Gymnasium environments: their exact MDPs, an adapter for interacting with them, and ``rlfm solve``.

- :func:`mdp_from_gymnasium`: the exact :class:`~rlfm.mdp.TabularMDP` of an environment with a ``P`` table
  (FrozenLake, CliffWalking, Taxi), for the benchmarks.
- :class:`DiscreteEnv` and :func:`run_episodes`: any registered environment with ``Discrete`` observation
  and action spaces, driven through ``reset`` / ``step`` only by an :mod:`rlfm.interactive` agent.
- :func:`solve_main`: ``rlfm solve --env ENV_ID``, the agents side by side in the real environment; it
  writes ``returns.json`` (per-episode returns and metadata) and ``learning_curve.png`` and prints a table.
  Bad input is one line on stderr and exit status 2, before any work.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlfm.arguments import OneLineParser, prepare_out_dir
from rlfm.interactive import AGENTS, InteractiveAgent
from rlfm.mdp import TabularMDP, check_gamma
from rlfm.speed.machine import machine_facts, package_versions

DEFAULT_MAX_STEPS = 500  # per episode, for environments registered without a time limit (CliffWalking)


# ------------------------------------------------------------------------------------------- exact MDPs
def mdp_from_gymnasium(env: Any, gamma: float = 0.95, name: str | None = None) -> TabularMDP:
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
    return TabularMDP.from_transitions(
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


# ------------------------------------------------------------------------------------------ interaction
class DiscreteEnv:
    """A gymnasium environment with ``Discrete`` spaces, seen as states 0 .. S-1 and actions 0 .. A-1.

    Attributes:
        env: the gymnasium environment; ``num_states`` S and ``num_actions`` A its spaces' sizes;
        max_episode_steps: its registered time limit, or None.
    """

    def __init__(self, env: gym.Env) -> None:
        name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        for kind, space in (("observation", env.observation_space), ("action", env.action_space)):
            if not isinstance(space, gym.spaces.Discrete):
                raise ValueError(
                    f"{name}'s {kind} space is {type(space).__name__}, not Discrete; rlfm needs Discrete"
                    " observation and action spaces"
                )
        self.env, self.name = env, name
        self.num_states, self.num_actions = int(env.observation_space.n), int(env.action_space.n)
        self._state_start, self._action_start = int(env.observation_space.start), int(env.action_space.start)
        self.max_episode_steps = env.spec.max_episode_steps if env.spec is not None else None

    @classmethod
    def make(cls, env_id: str) -> DiscreteEnv:
        """``gym.make(env_id)``; an unknown id, a failing constructor or other spaces are a ``ValueError``."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # gymnasium warns on stderr about old versions and checks
                env = gym.make(env_id)
        except gym.error.Error as error:
            raise ValueError(f"no usable gymnasium environment {env_id!r}: {_first_line(error)}") from None
        except Exception as error:  # the environment's own constructor failed
            raise ValueError(f"gymnasium could not make {env_id!r}: {_first_line(error)}") from None
        return cls(env)

    def reset(self, seed: int | None = None) -> int:
        """Start an episode; returns the state."""
        observation, _ = self.env.reset(seed=seed)
        return int(observation) - self._state_start

    def step(self, action: int) -> tuple[int, float, bool, bool]:
        """(next state, reward, terminated, truncated) of ``action``."""
        observation, reward, terminated, truncated, _ = self.env.step(action + self._action_start)
        return int(observation) - self._state_start, float(reward), bool(terminated), bool(truncated)


@dataclass
class Run:
    """One agent's episodes: undiscounted returns and lengths, wall time in seconds."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    wall_time_s: float = 0.0


def run_episodes(
    env: DiscreteEnv,
    agent: InteractiveAgent,
    episodes: int,
    max_steps: int | None = None,
    seed: int | None = None,
    progress: Any = None,
) -> Run:
    """Let ``agent`` play ``episodes`` episodes of ``env`` (the first reset seeded with ``seed``), each cut at
    ``max_steps`` (default: the environment's own limit, else :data:`DEFAULT_MAX_STEPS`) as a truncation.

    ``progress``: a tqdm-like bar, advanced by one per episode."""
    max_steps = max_steps or env.max_episode_steps or DEFAULT_MAX_STEPS
    run = Run()
    started = time.perf_counter()
    for episode in range(episodes):
        state = env.reset(seed=seed if episode == 0 else None)
        total, steps = 0.0, 0
        while True:
            action = agent.act(state)
            next_state, reward, terminated, truncated = env.step(action)
            steps += 1
            total += reward
            truncated = truncated or steps >= max_steps
            agent.observe(state, action, reward, next_state, terminated, truncated)
            if terminated or truncated:
                break
            state = next_state
        run.returns.append(total)
        run.lengths.append(steps)
        if progress is not None:
            progress.set_postfix(ret=f"{total:.3g}", refresh=False)
            progress.update(1)
    run.wall_time_s = time.perf_counter() - started
    return run


# ---------------------------------------------------------------------------------------- rlfm solve
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="rlfm solve",
        description="Run agents in a gymnasium environment with Discrete spaces, through reset/step only.",
    )
    parser.add_argument(
        "--env", required=True, help="a registered id, e.g. FrozenLake-v1, CliffWalking-v1, Taxi-v4"
    )
    parser.add_argument("--episodes", type=int, default=200, help="episodes per agent (default 200)")
    parser.add_argument(
        "--agents", default="rlfm,qlearning", help=f"comma-separated, from {','.join(AGENTS)}"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the agents and the first reset")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help=f"per episode (default: the env's limit, else {DEFAULT_MAX_STEPS})",
    )
    parser.add_argument("--gamma", type=float, default=0.99, help="the discount the agents plan with")
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default: results/solve-ENV)"
    )
    parser.add_argument("--window", type=int, default=None, help="moving-average window of the plot")
    in_context = parser.add_argument_group("rlfm agent")
    in_context.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sample actions from π^(1/T) (default: the network's own)",
    )
    in_context.add_argument("--replan-every", type=int, default=None, help="also re-plan every N steps")
    in_context.add_argument(
        "--checkpoint",
        default=None,
        help="a network file or a shipped network's name (default, planner); default: default",
    )
    qlearning = parser.add_argument_group("qlearning agent")
    qlearning.add_argument("--epsilon", type=float, default=0.1, help="exploration rate in [0, 1]")
    qlearning.add_argument("--alpha", type=float, default=0.1, help="step size in (0, 1]")
    qlearning.add_argument("--optimism", type=float, default=1.0, help="initial Q = κ·r̂max/(1-γ), κ ≥ 0")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar"
    )
    return parser


def solve_main(argv: list[str] | None = None) -> int:
    """Entry point of ``rlfm solve``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        names = _check(args)
        env = DiscreteEnv.make(args.env)
        agents = {name: _make_agent(name, env, args) for name in names}  # loads a checkpoint now, if given
        prepare_out_dir(args.out)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        runs = _play(env, agents, args)
    finally:
        torch.set_num_threads(threads)
    meta = _metadata(argv, args, env, agents, runs, time.perf_counter() - started)
    print(_table(env, args, agents, runs))
    (args.out / "returns.json").write_text(json.dumps(meta, indent=1) + "\n")
    plot_learning_curves(runs, args.out / "learning_curve.png", env.name, args.window)
    print(f"wrote {args.out / 'returns.json'} and {args.out / 'learning_curve.png'}")
    return 0


def _check(args: argparse.Namespace) -> list[str]:
    """The agents' names; ``ValueError`` for a flag outside its range."""
    for flag in ("episodes", "max_steps", "window", "threads", "replan_every"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    check_gamma(args.gamma)
    names = [name.strip() for name in args.agents.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--agents {args.agents!r} names no agent; choose from {','.join(AGENTS)}")
    for name in names:
        if name not in AGENTS:
            raise ValueError(f"unknown agent {name!r}; choose from {','.join(AGENTS)}")
    if len(set(names)) < len(names):
        raise ValueError(f"--agents {args.agents!r} names an agent twice")
    if args.out is None:
        args.out = Path("results") / f"solve-{args.env}"
    return names


def _make_agent(name: str, env: DiscreteEnv, args: argparse.Namespace) -> InteractiveAgent:
    settings: dict[str, Any] = {}
    if name == "rlfm":
        settings = {
            "temperature": args.temperature,
            "replan_every": args.replan_every,
            "checkpoint": args.checkpoint,
        }
    elif name == "qlearning":
        settings = {"epsilon": args.epsilon, "alpha": args.alpha, "optimism": args.optimism}
    return AGENTS[name](env.num_states, env.num_actions, args.gamma, seed=args.seed, **settings)


def _play(env: DiscreteEnv, agents: dict[str, InteractiveAgent], args: argparse.Namespace) -> dict[str, Run]:
    from tqdm.auto import tqdm

    runs = {}
    with tqdm(
        total=args.episodes * len(agents), disable=not args.progress, unit="episode", dynamic_ncols=True
    ) as bar:
        for name, agent in agents.items():
            bar.set_description(f"{env.name} / {name}")
            runs[name] = run_episodes(env, agent, args.episodes, args.max_steps, args.seed, bar)
    return runs


def last_tenth_mean(returns: Sequence[float]) -> float:
    """The mean return of the last 10 % of the episodes (at least one)."""
    tail = returns[-max(1, len(returns) // 10) :]
    return sum(tail) / len(tail)


def _table(
    env: DiscreteEnv, args: argparse.Namespace, agents: dict[str, InteractiveAgent], runs: dict[str, Run]
) -> str:
    tail = max(1, args.episodes // 10)
    lines = [
        f"{env.name}: {args.episodes} episodes per agent, seed {args.seed}",
        "",
        f"| agent | mean return, last {tail} episodes | total return | steps | network calls"
        " | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        plans = getattr(agents[name], "plans", "—")
        cells = (
            name,
            _number(last_tenth_mean(run.returns)),
            _number(sum(run.returns)),
            sum(run.lengths),
            plans,
        )
        lines.append("| " + " | ".join(map(str, cells)) + f" | {run.wall_time_s:.1f} |")
    return "\n".join(lines)


def plot_learning_curves(runs: dict[str, Run], path: Path, title: str, window: int | None = None) -> None:
    """Each agent's returns per episode (faint) and their moving average over ``window`` episodes (default:
    a twentieth of the episodes) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = max(len(run.returns) for run in runs.values())
    window = window or max(1, episodes // 20)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (name, run) in enumerate(runs.items()):
        returns = np.asarray(run.returns, dtype=np.float64)
        color = f"C{i}"
        ax.plot(np.arange(1, returns.size + 1), returns, color=color, alpha=0.2, lw=0.8)
        if returns.size >= window:
            average = np.convolve(returns, np.ones(window) / window, mode="valid")
            ax.plot(np.arange(window, returns.size + 1), average, color=color, lw=2, label=name)
        else:
            ax.plot([], [], color=color, lw=2, label=name)
    ax.set_xlabel("episode")
    ax.set_ylabel(f"return (moving average over {window})")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _metadata(
    argv: list[str],
    args: argparse.Namespace,
    env: DiscreteEnv,
    agents: dict[str, InteractiveAgent],
    runs: dict[str, Run],
    wall: float,
) -> dict[str, Any]:
    return {
        "command": "rlfm solve " + shlex.join(argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine_facts(), "torch_threads": args.threads},
        "versions": package_versions(),
        "env": {"id": env.name, "states": env.num_states, "actions": env.num_actions},
        "episodes": args.episodes,
        "max_steps": args.max_steps or env.max_episode_steps or DEFAULT_MAX_STEPS,
        "seed": args.seed,
        "wall_time_s": round(wall, 2),
        "agents": {
            name: {
                "hyperparameters": agents[name].hyperparameters(),
                "network_calls": getattr(agents[name], "plans", None),
                "wall_time_s": round(run.wall_time_s, 2),
                "mean_return_last_10pct": last_tenth_mean(run.returns),
                "total_return": sum(run.returns),
                "returns": run.returns,
                "lengths": run.lengths,
            }
            for name, run in runs.items()
        },
    }


def _number(value: float) -> str:
    """Three significant digits, whole numbers from 1,000 on (``-29,080``)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
