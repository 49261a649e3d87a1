"""``rlfm benchmark``: run the online or offline protocol on a suite of MDPs and write the results.

>>> benchmark_main(["--mode", "online", "--suite", "reference", "--agents", "ucbvi,qlearning",
...                 "--seeds", "12", "--out", "runs/online"])  # doctest: +SKIP

DIR receives ``results.json`` (metadata and a list ``results``), ``table.md`` and PNG plots. Each classical
baseline runs its whole hyperparameter grid (``--no-grid``: its default setting only) and is reported at
its best setting by the protocol's headline metric; every setting's summary is kept in the record's
``grid``. All seeds (and, for vectorised agents, all grid settings) of an (MDP, agent) pair run as one
batch.

Flags, MDP files, checkpoints and ``--out`` are checked before any work (one line on stderr, exit status 2).
The files are written atomically; MDPs are kept apart by position, and a repeated name (``a/m.npz``,
``b/m.npz``) is reported as m, m-2.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import math
import multiprocessing
import os
import shlex
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from rlfm.agents import AGENT_NAMES, agent_class, agent_names, make_agent
from rlfm.arguments import OneLineParser, prepare_out_dir, yes_no
from rlfm.benchmarks import SUITES, get_benchmark
from rlfm.evaluation.offline import BEHAVIOURS, DEFAULT_SIZES, OfflineConfig, collect_datasets, run_offline
from rlfm.evaluation.online import OnlineConfig, OnlineRun, run_online
from rlfm.evaluation.report import (
    markdown_table,
    offline_records,
    online_record,
    plot_offline,
    plot_online,
    write_json,
)
from rlfm.evaluation.simulate import Scorer
from rlfm.mdp import TabularMDP
from rlfm.network import DEPTH_RULES, checked_handoff
from rlfm.speed.machine import machine_facts, package_versions


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="rlfm benchmark",
        description="Evaluate agents on benchmark MDPs with the online or offline protocol (see the README), "
        "scoring policies by exact policy evaluation.",
    )
    parser.add_argument("--mode", choices=("online", "offline"), default="online")
    parser.add_argument(
        "--suite", choices=sorted(SUITES), default=None, help="benchmark suite (default: reference)"
    )
    parser.add_argument("--envs", default=None, help="comma-separated subset of the suite's benchmarks")
    parser.add_argument(
        "--mdp",
        nargs="+",
        default=[],
        metavar="FILE.npz",
        help="your own MDPs: P (S,A,S), R (S,A), [gamma, start, terminal]",
    )
    parser.add_argument(
        "--agents",
        default=None,
        help=f"comma-separated, from {', '.join(AGENT_NAMES)} (default: every classical one of the mode)",
    )
    parser.add_argument("--seeds", type=int, default=12, help="runs per (MDP, agent, setting), at least 1")
    parser.add_argument("--seed", type=int, default=0, help="base random seed")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="rlfm's network: a .pt/.ckpt file or a shipped network's name (default, planner); without it, "
        "the shipped network for each MDP's size, as predict_policy chooses (the count-only one up to 256 "
        "states, the planner network above)",
    )
    parser.add_argument(
        "--default-checkpoint",
        default=None,
        metavar="CHECKPOINT",
        help="a network in the shipped count-only network's place in the size rule (MDPs of at most 256 "
        "states; larger ones still go to the planner network): a candidate for the default, judged as it "
        "would ship; not with --checkpoint (default: off)",
    )
    parser.add_argument(
        "--greedy-checkpoint",
        default=None,
        metavar="CHECKPOINT",
        help="a second network whose greedy policy on the same counts is rlfm's greedy policy, while "
        "--checkpoint still chooses the actions (default: off)",
    )
    parser.add_argument(
        "--ensemble",
        type=_checkpoint_list,
        default=None,
        metavar="CHECKPOINT[,CHECKPOINT...]",
        help="more networks planned beside rlfm's on the same counts; it acts and reads its greedy policy from "
        "the networks' mean log-policy (n times the network calls; with the shipped default, MDPs of more than "
        "256 states stay the planner network's alone; default: off)",
    )
    parser.add_argument(
        "--ensemble-greedy",
        type=yes_no,
        nargs="?",
        const=True,
        default=None,
        metavar="yes|no",
        help="with --ensemble: no keeps the greedy policy the first network's, so the ensemble only acts"
        " (default: yes)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="the rlfm agent's sampling temperature, > 0 (default: the network's own, chosen on validation)",
    )
    parser.add_argument(
        "--replan-growth",
        type=float,
        default=None,
        metavar="KAPPA",
        help="online: rlfm re-plans a run only once its data grew by the factor 1 + KAPPA (default: every episode)",
    )
    parser.add_argument(
        "--episode-commit",
        action="store_const",
        const=True,
        default=None,
        help="online: rlfm draws one action per state when each episode starts and keeps it through the"
        " episode (default: a fresh draw at every step)",
    )
    parser.add_argument(
        "--bootstrap",
        action="store_const",
        const=True,
        default=None,
        help="online: rlfm samples its actions from its plan on a Poisson bootstrap of the counts, redrawn"
        " before each episode (the greedy policy stays the plan on the counts)",
    )
    parser.add_argument(
        "--untried-bonus",
        type=float,
        default=None,
        metavar="BETA",
        help="online: rlfm adds BETA * U(s, a) to its sampling logits, U = 1 on untried pairs (default: the"
        " network's own; the shipped network: 3, with --untried-discount 0.5 and --untried-relative; 0: off)",
    )
    parser.add_argument(
        "--untried-discount",
        type=float,
        default=None,
        metavar="DELTA",
        help="online: U = DELTA^d for a pair d steps (along observed transitions) from the nearest untried pair,"
        " steering toward the unexplored; 0: untried pairs alone (default: the network's own)",
    )
    parser.add_argument(
        "--untried-relative",
        type=yes_no,
        nargs="?",
        const=True,
        default=None,
        metavar="yes|no",
        help="online: divide each state's U by its largest, so the shortest route to the unexplored gets BETA"
        " and a route k steps longer BETA * DELTA^k, however far away (default: the network's own)",
    )
    parser.add_argument(
        "--untried-known",
        type=int,
        default=None,
        metavar="M",
        help="online: the untried bonus's known threshold: pairs tried fewer than M times count as untried "
        "(default: 1, only pairs never tried)",
    )
    parser.add_argument(
        "--explored-temperature",
        type=float,
        default=None,
        metavar="T",
        help="online, with the untried bonus: rlfm samples at this temperature in states from which no "
        "untried pair can be reached, at --temperature elsewhere (default: off)",
    )
    parser.add_argument(
        "--guard",
        type=float,
        default=None,
        metavar="C",
        help="rlfm's greedy action is overruled where VI-LCB's best action is surely better: its lower bound "
        "above UCB-VI's upper bound of rlfm's action, both with bonus scale C > 0, among pairs from which no "
        "untried pair can be reached (default: off)",
    )
    parser.add_argument(
        "--evidence",
        type=float,
        default=None,
        metavar="KAPPA",
        help="rlfm's greedy action maximises log pi(a|s) + KAPPA n(s,a) A(s,a): its policy weighed by certainty "
        "equivalence's normalised advantages A and the visits n behind them (the fewest of any pair reachable "
        "from it, 0 where an untried pair is reachable) (default: off)",
    )
    parser.add_argument(
        "--handoff",
        type=int,
        default=None,
        metavar="M",
        help="rlfm's greedy action is the planner network's in every state from which each reachable pair has "
        "been tried at least M times (0: off; default: the network's own, off beside another greedy readout)",
    )
    parser.add_argument(
        "--depth-rule",
        choices=DEPTH_RULES,
        default=None,
        help="how rlfm's count-only network chooses its sweeps: settle (until its policy stops moving) or"
        " diameter (max(its depth, the diameter of the observed transitions)) (default: the network's own)",
    )
    parser.add_argument(
        "--holdout",
        action="store_const",
        const=True,
        default=None,
        help="rlfm's greedy policy becomes certainty equivalence's where, on two halves of the data, each"
        " half's policies valued on the other half's empirical model favour it and neither policy heads for"
        " untried pairs (default: off)",
    )
    parser.add_argument(
        "--dominance",
        type=yes_no,
        default=None,
        metavar="yes|no",
        help="after every other readout, rlfm's whole greedy policy becomes certainty equivalence's where"
        " CE's plan valued with a worst-case unseen outcome beats rlfm's valued with a best-case one"
        " (default: the network's own)",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="output directory (created; checked writable before any work)"
    )
    parser.add_argument(
        "--grid", action=argparse.BooleanOptionalAction, default=True, help="tune baselines on their grids"
    )
    parser.add_argument(
        "--episodes", type=int, default=1500, help="online: episodes per run, ≥ 1 (cap and regret budget)"
    )
    parser.add_argument(
        "--plan-on-data",
        action="store_true",
        help="online: also score certainty equivalence's greedy policy on each agent's own counts after"
        " every episode (`planning_on_data` in the JSON, a table of its own, dashed curves): how much of"
        " what the agent collected its greedy policy exploits",
    )
    parser.add_argument("--horizon", type=int, default=50, help="steps per episode, ≥ 1")
    parser.add_argument("--threshold", type=float, default=0.95, help="online: convergence score, in (0, 1]")
    parser.add_argument(
        "--window", type=int, default=8, help="online: consecutive episodes at the threshold, ≥ 1"
    )
    parser.add_argument(
        "--behaviour",
        choices=BEHAVIOURS,
        default="uniform",
        help="offline: behaviour policy (generative: every pair in turn, no episodes; measures consistency)",
    )
    parser.add_argument(
        "--epsilon", type=float, default=0.3, help="offline: ε of the epsilon_greedy behaviour, in [0, 1]"
    )
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="offline: comma-separated dataset sizes (positive integers)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads, ≥ 1 (small sparse ops: 1 is fastest)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes running (MDP, agent) pairs side by side, each with --threads threads, ≥ 1 "
        "(results do not depend on it)",
    )
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar"
    )
    return parser


def benchmark_main(argv: list[str] | None = None) -> int:
    """Entry point of ``rlfm benchmark``; returns the exit status.

    A bad flag, file or checkpoint is one line on stderr and ``SystemExit(2)``, before any work.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_flags(args)
        prepare_out_dir(args.out)
        mdps = _unique_names(_load_mdps(args))
        agents = _agent_list(args)
        _check_agent_flags(args, agents)
    except (KeyError, ValueError, OSError, RuntimeError) as error:
        parser.error(str(error.args[0] if isinstance(error, KeyError) else error))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(argv, args, mdps, agents)
    finally:
        torch.set_num_threads(threads)


def _run(argv: list[str], args: argparse.Namespace, mdps: list[TabularMDP], agents: list[str]) -> int:
    """Run the protocol and write DIR's files; returns the exit status."""
    started = time.perf_counter()
    if args.mode == "online":
        config: OnlineConfig | OfflineConfig = OnlineConfig(
            args.episodes, args.horizon, args.threshold, args.window
        )
        records = _online(mdps, agents, args, config)
    else:
        config = OfflineConfig(
            sizes=args.sizes, behaviour=args.behaviour, epsilon=args.epsilon, horizon=args.horizon
        )
        records = _offline(mdps, agents, args, config)
    meta = _metadata(argv, args, config, mdps, time.perf_counter() - started)
    table = markdown_table(args.mode, records, meta)
    print(table)
    return _save(args, meta, records, table)


def _save(args: argparse.Namespace, meta: dict[str, Any], records: list[dict], table: str) -> int:
    """Write results.json, table.md and the plot, each atomically; if that fails, put results.json in a
    fresh temporary directory instead, say where on stderr and return 2."""
    results = args.out / "results.json"
    try:
        _write_atomically(results, lambda path: write_json(path, meta, records))
        _write_atomically(args.out / "table.md", lambda path: path.write_text(table))
        if args.mode == "online":
            _write_atomically(args.out / "online_curves.png", lambda path: plot_online(records, path))
        else:
            _write_atomically(args.out / "offline_values.png", lambda path: plot_offline(records, path))
    except OSError as error:
        try:
            fallback = Path(tempfile.mkdtemp(prefix="rlfm-benchmark-")) / "results.json"
            write_json(fallback, meta, records)
            kept = f"the results are saved in {fallback}"
        except OSError:
            print(json.dumps({**meta, "results": records}))
            kept = "the results are printed above as JSON"
        print(f"rlfm benchmark: error: could not write to {args.out} ({error}); {kept}", file=sys.stderr)
        return 2
    print(f"wrote {results} in {meta['wall_time_s']:.1f} s")
    return 0


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        temporary.chmod(0o644)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------- set-up
def _check_flags(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` for a flag outside its range; parse ``--sizes`` into ``args.sizes``."""
    for flag, value in (
        ("seeds", args.seeds),
        ("episodes", args.episodes),
        ("horizon", args.horizon),
        ("window", args.window),
        ("threads", args.threads),
        ("workers", args.workers),
    ):
        if value < 1:
            raise ValueError(f"--{flag} must be at least 1, got {value}")
    if not (math.isfinite(args.threshold) and 0 < args.threshold <= 1):
        raise ValueError(f"--threshold must be a normalised score in (0, 1], got {args.threshold}")
    if not (math.isfinite(args.epsilon) and 0 <= args.epsilon <= 1):
        raise ValueError(f"--epsilon must be a probability in [0, 1], got {args.epsilon}")
    if args.temperature is not None and not (math.isfinite(args.temperature) and args.temperature > 0):
        raise ValueError(f"--temperature must be a positive finite number, got {args.temperature}")
    if args.explored_temperature is not None and not (
        math.isfinite(args.explored_temperature) and args.explored_temperature > 0
    ):
        raise ValueError(
            f"--explored-temperature must be a positive finite number, got {args.explored_temperature}"
        )
    if args.replan_growth is not None and not (math.isfinite(args.replan_growth) and args.replan_growth > 0):
        raise ValueError(f"--replan-growth must be a positive finite number, got {args.replan_growth}")
    if args.untried_bonus is not None and not (math.isfinite(args.untried_bonus) and args.untried_bonus >= 0):
        raise ValueError(f"--untried-bonus must be a finite number >= 0, got {args.untried_bonus}")
    if args.untried_discount is not None and not 0.0 <= args.untried_discount < 1.0:
        raise ValueError(f"--untried-discount must be in [0, 1), got {args.untried_discount}")
    if args.untried_known is not None and args.untried_known < 1:
        raise ValueError(f"--untried-known must be at least 1, got {args.untried_known}")
    if args.guard is not None and not (math.isfinite(args.guard) and args.guard > 0):
        raise ValueError(f"--guard must be a positive finite number, got {args.guard}")
    if args.evidence is not None and not (math.isfinite(args.evidence) and args.evidence > 0):
        raise ValueError(f"--evidence must be a positive finite number, got {args.evidence}")
    if args.handoff is not None:
        try:
            checked_handoff(args.handoff)
        except ValueError as error:
            raise ValueError(f"--{error}") from None
    readouts = [
        args.guard is not None,
        args.evidence is not None,
        bool(args.holdout),
        bool(args.handoff),
    ]
    if sum(readouts) > 1:
        raise ValueError(
            "--guard, --evidence, --holdout and --handoff are readouts of rlfm's greedy policy: choose one"
        )
    if args.handoff and (args.greedy_checkpoint is not None or args.ensemble is not None):
        raise ValueError(
            "--handoff reads the acting network's greedy policy: not with --greedy-checkpoint or --ensemble"
        )
    if args.greedy_checkpoint is not None and args.evidence is not None:
        raise ValueError(
            "--evidence weighs the acting network's policy: it cannot read a --greedy-checkpoint"
        )
    if args.ensemble is not None and args.greedy_checkpoint is not None:
        raise ValueError(
            "--ensemble plans every network on the same counts: it cannot take a --greedy-checkpoint"
        )
    if args.default_checkpoint is not None and args.checkpoint is not None:
        raise ValueError(
            "--default-checkpoint takes the shipped default's place in the size rule; --checkpoint"
            " replaces that rule: give one of them"
        )
    if args.ensemble_greedy is not None and args.ensemble is None:
        raise ValueError("--ensemble-greedy says how an --ensemble is read: give --ensemble too")
    if args.plan_on_data and args.mode != "online":
        raise ValueError("--plan-on-data belongs to the online protocol (offline, use --agents ce)")
    if args.replan_growth is not None and args.mode != "online":
        raise ValueError(
            "--replan-growth belongs to the online protocol (offline, rlfm plans once per dataset)"
        )
    online_only = (
        "untried_bonus",
        "untried_discount",
        "untried_relative",
        "untried_known",
        "explored_temperature",
    )
    for flag in ("episode_commit", "bootstrap", *online_only):
        if getattr(args, flag) is not None and args.mode != "online":
            raise ValueError(
                f"--{flag.replace('_', '-')} belongs to the online protocol (offline, rlfm does not act)"
            )
    args.sizes = _sizes(args.sizes)
    for flag in ("agents", "envs"):
        text = getattr(args, flag)
        if text is not None and not _names(text):
            raise ValueError(f"--{flag} {text!r} names nothing; give comma-separated names")


def _sizes(text: str) -> tuple[int, ...]:
    """The sorted distinct dataset sizes of ``--sizes``, e.g. ``"100,30"`` → (30, 100)."""
    try:
        sizes = [int(part) for part in _names(text)]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--sizes must be comma-separated positive integers, got {text!r}")
    return tuple(sorted(set(sizes)))


def _checkpoint_list(text: str) -> tuple[str, ...]:
    """The comma-separated checkpoints of ``--ensemble``."""
    names = tuple(_names(text))
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated checkpoints, got {text!r}")
    return names


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _load_mdps(args: argparse.Namespace) -> list[TabularMDP]:
    names: list[str] = []
    if args.suite is not None or not args.mdp:
        names = list(SUITES[args.suite or "reference"])
    if args.envs:
        names = [get_benchmark(n).name for n in _names(args.envs)]  # raises on unknown names
    mdps = [get_benchmark(name) for name in names]
    mdps += [TabularMDP.from_npz(path) for path in args.mdp]
    return mdps


def _unique_names(mdps: list[TabularMDP]) -> list[TabularMDP]:
    """The MDPs, a repeated name (two files ``a/m.npz`` and ``b/m.npz``) made unique: m, m-2, m-3, ..."""
    seen: set[str] = set()
    unique = []
    for mdp in mdps:
        name, k = mdp.name, 1
        while name in seen:
            k += 1
            name = f"{mdp.name}-{k}"
        seen.add(name)
        unique.append(mdp if name == mdp.name else dataclasses.replace(mdp, name=name))
    return unique


# flags read only by the rlfm agent, each passed to it as the keyword of the same name
RLFM_FLAGS = (
    "checkpoint",
    "default_checkpoint",
    "greedy_checkpoint",
    "ensemble",
    "ensemble_greedy",
    "temperature",
    "replan_growth",
    "episode_commit",
    "bootstrap",
    "untried_bonus",
    "untried_discount",
    "untried_relative",
    "untried_known",
    "explored_temperature",
    "guard",
    "evidence",
    "holdout",
    "dominance",
    "handoff",
    "depth_rule",
)


def _check_agent_flags(args: argparse.Namespace, agents: list[str]) -> None:
    if "rlfm" not in agents:
        for flag in RLFM_FLAGS:
            if getattr(args, flag) is not None:
                raise ValueError(
                    f"--{flag.replace('_', '-')} is read only by the rlfm agent, which is not among the agents"
                )


def _agent_list(args: argparse.Namespace) -> list[str]:
    names = _names(args.agents) if args.agents else agent_names(args.mode)
    for name in names:
        cls = agent_class(name)  # raises a clear error for unknown names or a missing rlfm agent
        if args.mode not in cls.modes:
            raise ValueError(f"agent {name!r} does not take part in the {args.mode} protocol")
        make_agent(name, **_settings(name, False)[0], **_extra(name, args))  # fail now, not after hours
    return names


def _settings(name: str, use_grid: bool) -> list[dict[str, Any]]:
    """The hyperparameter settings to run: the grid's product (with the defaults filled in) or the defaults."""
    cls = agent_class(name)
    grid, defaults = cls.grid, dict(cls.defaults)
    if not use_grid or not grid:
        return [defaults]
    keys = list(grid)
    return [
        {**defaults, **dict(zip(keys, values, strict=True))} for values in itertools.product(*grid.values())
    ]


def _batches(
    name: str, settings: list[dict[str, Any]], seeds: int, extra: dict[str, Any]
) -> list[tuple[Any, int]]:
    """(agent, settings in it) pairs: one agent for the whole grid when it takes per-run hyperparameters."""
    cls = agent_class(name)
    if cls.vectorized and len(settings) > 1:
        per_run = {k: [s[k] for s in settings for _ in range(seeds)] for k in settings[0]}
        return [(make_agent(name, **per_run, **extra), len(settings))]
    return [(make_agent(name, **s, **extra), 1) for s in settings]


def _generator(seed: int, *labels: str) -> torch.Generator:
    """A generator fixed by the base seed and the labels (so one agent's results do not depend on others)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32("/".join(labels).encode()))


def _progress(total: int, enabled: bool, unit: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit=unit, dynamic_ncols=True)


def _batch_count(name: str, use_grid: bool) -> int:
    """How many agents :func:`_batches` builds for ``name``."""
    return 1 if agent_class(name).vectorized else len(_settings(name, use_grid))


def _extra(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Settings given on the command line that only the rlfm agent takes."""
    if name != "rlfm":
        return {}
    return {flag: getattr(args, flag) for flag in RLFM_FLAGS if getattr(args, flag) is not None}


# ------------------------------------------------------------------------------------------ protocols
def _online(
    mdps: list[TabularMDP], agents: list[str], args: argparse.Namespace, config: OnlineConfig
) -> list[dict]:
    """One record per (MDP, agent) pair."""
    plan = [(i, mdp, name) for i, mdp in enumerate(mdps) for name in agents]
    work = [config.episodes * _batch_count(name, args.grid) for _, _, name in plan]
    # the network agent's runs on the largest MDPs take longest: start them first, so that no worker is left
    # with one long run at the end (the order of the records and every result are unchanged)
    cost = [(name == "rlfm", mdp.num_state_actions) for _, mdp, name in plan]
    pair = functools.partial(_online_pair, args=args, config=config)
    return _map(pair, plan, work, args, "episode", cost)


def _online_pair(
    i: int, mdp: TabularMDP, name: str, args: argparse.Namespace, config: OnlineConfig, bar: Any = None
) -> dict:
    """The online record of agent ``name`` (all its settings and seeds) on the ``i``-th MDP."""
    if bar is not None:
        bar.set_description(f"{mdp.name} / {name}")
    scorer = _scorer(i, mdp, config.horizon)
    settings = _settings(name, args.grid)
    started = time.perf_counter()
    results: list[tuple[dict[str, Any], OnlineRun]] = []
    done = 0
    for agent, count in _batches(name, settings, args.seeds, _extra(name, args)):
        generator = _generator(args.seed, "online", mdp.name, name, str(done))
        run = run_online(mdp, agent, count * args.seeds, config, generator, scorer, bar, args.plan_on_data)
        for k in range(count):
            hp = {**agent.hyperparameters(), **settings[done + k]} if count > 1 else agent.hyperparameters()
            results.append((hp, run.select(slice(k * args.seeds, (k + 1) * args.seeds))))
        done += count
    return online_record(mdp.name, name, results, config, time.perf_counter() - started)


def _offline(
    mdps: list[TabularMDP], agents: list[str], args: argparse.Namespace, config: OfflineConfig
) -> list[dict]:
    """One record per (MDP, agent, dataset size)."""
    plan = [(i, mdp) for i, mdp in enumerate(mdps)]
    work = [len(config.sizes) * sum(_batch_count(name, args.grid) for name in agents)] * len(mdps)
    per_mdp = functools.partial(_offline_mdp, agents=agents, args=args, config=config)
    return [record for records in _map(per_mdp, plan, work, args, "plan") for record in records]


def _offline_mdp(
    i: int,
    mdp: TabularMDP,
    agents: list[str],
    args: argparse.Namespace,
    config: OfflineConfig,
    bar: Any = None,
) -> list[dict]:
    """The offline records of every agent on the ``i``-th MDP (its datasets shared by all agents)."""
    datasets = collect_datasets(
        mdp, args.seeds, config, _generator(args.seed, "offline", mdp.name, config.behaviour)
    )
    scorer = _scorer(i, mdp, config.horizon)
    records: list[dict] = []
    for name in agents:
        if bar is not None:
            bar.set_description(f"{mdp.name} / {name}")
        settings = _settings(name, args.grid)
        started = time.perf_counter()
        results: list[tuple[dict[str, Any], torch.Tensor]] = []
        done = 0
        for agent, count in _batches(name, settings, args.seeds, _extra(name, args)):
            generator = _generator(args.seed, "offline-agent", mdp.name, name, str(done))
            values = run_offline(mdp, agent, datasets, generator, scorer, repeats=count, progress=bar)
            for k in range(count):
                hp = (
                    {**agent.hyperparameters(), **settings[done + k]}
                    if count > 1
                    else agent.hyperparameters()
                )
                results.append((hp, values[:, k * args.seeds : (k + 1) * args.seeds]))
            done += count
        records += offline_records(
            mdp.name, name, results, config.sizes, config.behaviour, time.perf_counter() - started
        )
    return records


_SCORERS: dict[tuple[int, str, int], Scorer] = {}  # this process's scorers, shared by the agents of an MDP


def _scorer(i: int, mdp: TabularMDP, horizon: int) -> Scorer:
    key = (i, mdp.name, horizon)
    if key not in _SCORERS:
        _SCORERS.clear()  # a worker runs one MDP at a time: keep only the latest one's (rebuilt if it returns)
        _SCORERS[key] = Scorer(mdp, horizon)
    return _SCORERS[key]


def _map(
    job: Callable[..., Any],
    plan: list[tuple],
    work: list[int],
    args: argparse.Namespace,
    unit: str,
    cost: list[Any] | None = None,
) -> list[Any]:
    """``[job(*item) for item in plan]``, in ``args.workers`` processes when more than one (``work``: each
    item's share of the progress bar; a worker's item advances it when it finishes; ``cost``: sort keys of
    the items' expected run times, the costliest started first)."""
    bar = _progress(sum(work), args.progress, unit)
    try:
        if args.workers == 1:
            return [job(*item, bar=bar) for item in plan]
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch state
        with ProcessPoolExecutor(args.workers, context, _start_worker, (args.threads,)) as pool:
            order = (
                range(len(plan))
                if cost is None
                else sorted(range(len(plan)), key=lambda k: cost[k], reverse=True)
            )
            futures = {pool.submit(job, *plan[k]): k for k in order}
            results: list[Any] = [None] * len(plan)
            for future in as_completed(futures):
                k = futures[future]
                results[k] = future.result()
                bar.update(work[k])
            return results
    finally:
        bar.close()


def _start_worker(threads: int) -> None:
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------- metadata
def _metadata(
    argv: list[str],
    args: argparse.Namespace,
    config: OnlineConfig | OfflineConfig,
    mdps: list[TabularMDP],
    wall: float,
) -> dict[str, Any]:
    protocol = dict(vars(config))
    if isinstance(config, OfflineConfig):
        protocol["behaviour_epsilon"] = config.behaviour_epsilon
    return {
        "command": "rlfm benchmark " + shlex.join(argv),
        "mode": args.mode,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "versions": package_versions(),
        "protocol": protocol,
        "seeds": args.seeds,
        "seed": args.seed,
        "grid": args.grid,
        "envs": [
            {"name": m.name, "states": m.num_states, "state_actions": m.num_state_actions, "gamma": m.gamma}
            for m in mdps
        ],
        "wall_time_s": round(wall, 2),
    }


if __name__ == "__main__":
    raise SystemExit(benchmark_main())
