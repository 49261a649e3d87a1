"""``rlfm speed inference``: time and peak memory of one ``rlfm.predict_policy(counts, gamma)`` call.

The network (the shipped one, or ``--checkpoint``) is loaded and warmed up by a tiny call before the timed
one. Each case runs in a fresh subprocess (:mod:`rlfm.speed.harness`) with ``--threads`` torch threads, so
its peak memory is its own: the process's resident high-water mark during the call, which includes torch,
the network and the case's counts (``rss_before_gb`` is the part already there before the call).

Cases:

- ``chain-1k``, ``chain-10k``, ``chain-100k``: S states with 4 actions each and 4·S observed transitions
  to a random nearby state (s + U{-3..3}) mod S, reward 1 on entering state S − 1; gamma 0.95.
- ``grid-50x50``: an open 50×50 grid (4 deterministic moves, walls keep the agent in place), every
  non-goal (s, a) observed 3 times, reward 1 on entering the far corner, which ends the episode; gamma 0.99.
  The greedy policy is then followed from the opposite corner and its path compared with the shortest (98).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlfm.counts import Counts
from rlfm.pretrained import PACKAGED, load_network, packaged_network, predict_policy
from rlfm.speed.harness import run_in_subprocess
from rlfm.speed.machine import load_text, machine_facts, package_versions, peak_rss_mb, reset_peak_rss, rss_mb
from rlfm.speed.report import table, write_json

ACTIONS = 4
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")  # recorded: they change timings
CHAIN_VISITS = 4  # observed transitions per state
GRID_VISITS = 3  # observations of each non-goal (state, action)
REFERENCE = {
    "states": [512, 2048, 4096, 8192, 10000],
    "seconds": [0.019, 0.071, 0.261, 1.06, 1.48],
    "memory_gb_at_10000": 37,
    "device": "one NVIDIA H100 (published figures, not measured here)",
}
TARGETS: dict[str, dict[str, float]] = {
    "chain-10k": {"seconds": 1.0, "peak_rss_gb": 2.0},
    "chain-100k": {"seconds": 15.0, "peak_rss_gb": 8.0},
    "grid-50x50": {"seconds": 2.0, "value_fraction": 0.95},
}


@dataclass(frozen=True)
class InferenceCase:
    """One ``rlfm speed inference`` case: a random chain or an open square grid of ``states`` states."""

    kind: str  # "chain" or "grid"
    states: int
    gamma: float

    @property
    def state_actions(self) -> int:
        return ACTIONS * self.states

    @property
    def transitions(self) -> int:
        if self.kind == "chain":
            return CHAIN_VISITS * self.states
        return GRID_VISITS * ACTIONS * (self.states - 1)

    @property
    def side(self) -> int:
        """The grid's side length."""
        return math.isqrt(self.states)

    def counts(self) -> Counts:
        """The case's observed experience."""
        return chain_counts(self.states) if self.kind == "chain" else grid_counts(self.side)


CASES = {
    "chain-1k": InferenceCase("chain", 1_000, 0.95),
    "chain-10k": InferenceCase("chain", 10_000, 0.95),
    "chain-100k": InferenceCase("chain", 100_000, 0.95),
    "grid-50x50": InferenceCase("grid", 2_500, 0.99),
}


# ------------------------------------------------------------------------------------------- cases
def chain_counts(S: int, seed: int = 0) -> Counts:
    """4·S transitions (s, a) → (s + U{-3..3}) mod S with s, a uniform, reward 1 on entering S − 1."""
    n = CHAIN_VISITS * S
    generator = torch.Generator().manual_seed(seed)
    counts = Counts.empty([ACTIONS] * S)
    s = torch.randint(0, S, (n,), generator=generator)
    a = torch.randint(0, ACTIONS, (n,), generator=generator)
    nxt = (s + torch.randint(-3, 4, (n,), generator=generator)) % S
    return counts.update(s, a, (nxt == S - 1).double(), nxt)


def grid_moves(side: int) -> Tensor:
    """(S, 4) the successor of each state under up, down, left, right; S = side², state = row·side + col."""
    state = torch.arange(side * side)
    row, col = state // side, state % side
    return torch.stack(
        [
            torch.where(row > 0, state - side, state),
            torch.where(row < side - 1, state + side, state),
            torch.where(col > 0, state - 1, state),
            torch.where(col < side - 1, state + 1, state),
        ],
        dim=1,
    )


def grid_counts(side: int) -> Counts:
    """Every (s, a) but the goal's (state S − 1) seen 3 times; reward 1 and termination on entering it."""
    moves = grid_moves(side)
    S, goal = side * side, side * side - 1
    state = torch.arange(goal).repeat_interleave(ACTIONS).repeat(GRID_VISITS)
    action = torch.arange(ACTIONS).repeat(goal * GRID_VISITS)
    nxt = moves[state, action]
    counts = Counts.empty([ACTIONS] * S)
    return counts.update(state, action, (nxt == goal).double(), nxt, terminated=nxt == goal)


def greedy_path(policy: Tensor, side: int, max_steps: int) -> int | None:
    """Moves the greedy policy (SA,) takes from state 0 to the goal S − 1, or None if not in ``max_steps``."""
    moves = grid_moves(side).tolist()
    greedy = policy.view(-1, ACTIONS).argmax(1).tolist()
    state, goal = 0, side * side - 1
    for step in range(1, max_steps + 1):
        state = moves[state][greedy[state]]
        if state == goal:
            return step
    return None


# ------------------------------------------------------------------------------------- measurement
def measure_inference(spec: dict[str, Any]) -> dict[str, Any]:
    """Time and peak memory of one ``predict_policy`` call on one case (run in a fresh process).

    ``spec``: case (a name in :data:`CASES`), threads, checkpoint (a path, or None for the network a call without one uses).
    """
    torch.set_num_threads(spec["threads"])
    case = CASES[spec["case"]]
    network = None if spec["checkpoint"] is None else load_network(spec["checkpoint"])
    # warm-up, outside the timing: loads the network a call with no network uses for this case's size
    warm = packaged_network(case.states) if network is None else network
    predict_policy(Counts.empty([2, 2]), 0.95, network=warm)
    start = time.perf_counter()
    counts = case.counts()
    build_s = time.perf_counter() - start
    gc.collect()
    before = rss_mb()
    method = reset_peak_rss()
    start = time.perf_counter()
    policy = predict_policy(counts, case.gamma, network=network)
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "peak_rss_gb": peak_rss_mb(method) / 1024,
        "rss_before_gb": before / 1024,
        "build_s": build_s,
        "memory_method": method,
    }
    if case.kind == "grid":
        optimal = 2 * (case.side - 1)
        steps = greedy_path(policy, case.side, max_steps=10 * case.states)
        result.update(
            path_steps=steps,
            optimal_steps=optimal,
            value_fraction=0.0 if steps is None else case.gamma ** (steps - 1) / case.gamma ** (optimal - 1),
        )
    return result


def meets_target(row: dict[str, Any], target: dict[str, float]) -> bool:
    """Whether an ``ok`` row is within every limit of its target (seconds, peak_rss_gb at most;
    value_fraction at least)."""
    if row["status"] != "ok":
        return False
    return all(
        row[key] >= limit if key == "value_fraction" else row[key] <= limit for key, limit in target.items()
    )


def run_inference(args: argparse.Namespace) -> int:
    """Measure ``args.cases``, print the table and write ``args.out``; returns the exit status."""
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.timeout <= 0:
        raise ValueError(f"--timeout must be positive, got {args.timeout}")
    packaged = args.checkpoint is None or args.checkpoint in PACKAGED
    checkpoint = args.checkpoint if packaged else str(Path(args.checkpoint).resolve())
    network = load_network(checkpoint)  # fails here, in one line, on a bad file
    rows = []
    for name in args.cases:
        case = CASES[name]
        spec = {"case": name, "threads": args.threads, "checkpoint": checkpoint}
        result = run_in_subprocess(f"{__name__}:measure_inference", spec, args.timeout)
        row: dict[str, Any] = {
            "case": name,
            "states": case.states,
            "state_actions": case.state_actions,
            "transitions": case.transitions,
            "gamma": case.gamma,
            "seconds": _rounded(result.get("seconds"), 3),
            "peak_rss_gb": _rounded(result.get("peak_rss_gb"), 3),
            "status": result["status"],
            "reason": result.get("reason"),
        }
        if case.kind == "grid":
            row["path_steps"] = result.get("path_steps")
            row["optimal_steps"] = result.get("optimal_steps", 2 * (case.side - 1))
            row["value_fraction"] = _rounded(result.get("value_fraction"), 4)
        row["rss_before_gb"] = _rounded(result.get("rss_before_gb"), 3)
        row["build_s"] = _rounded(result.get("build_s"), 3)
        row["memory_method"] = result.get("memory_method")
        if name in TARGETS:
            row["meets_target"] = meets_target(row, TARGETS[name])
        rows.append(row)
        summary = (
            f"{row['seconds']:.3f} s, peak RSS {row['peak_rss_gb']:.2f} GB"
            if row["status"] == "ok"
            else f"{row['status']}: {row['reason']}"
        )
        print(f"{name}: {summary}", flush=True)
    for row in rows:
        if row.get("path_steps") is not None:
            row["path"] = f"{row['path_steps']}/{row['optimal_steps']}"
        elif "optimal_steps" in row and row["status"] == "ok":
            row["path"] = f"never/{row['optimal_steps']}"
        if "meets_target" in row:
            row["target"] = "yes" if row["meets_target"] else "no"
    print()
    print(
        table(
            rows,
            [
                ("case", "case"),
                ("states", "S"),
                ("state_actions", "SA"),
                ("transitions", "transitions"),
                ("gamma", "gamma"),
                ("seconds", "seconds"),
                ("peak_rss_gb", "peak RSS GB"),
                ("rss_before_gb", "before GB"),
                ("path", "path"),
                ("value_fraction", "value frac"),
                ("target", "target"),
                ("status", "status"),
            ],
        )
    )
    for row in rows:
        row.pop("path", None)
        row.pop("target", None)
    source = (
        "its default network (count-only up to 256 states, planner above)"
        if checkpoint is None
        else checkpoint
    )
    print(
        f"(one predict_policy call with {source} after a warm-up call; torch threads {args.threads}; each case "
        "in a fresh process; peak RSS: the process's high-water mark during the call, including what was "
        f"there before it; load average {load_text()})"
    )
    reference = ", ".join(
        f"S={s}: {t} s" for s, t in zip(REFERENCE["states"], REFERENCE["seconds"], strict=True)
    )
    print(
        f"dense reference model, {REFERENCE['device']}: {reference}; "
        f"{REFERENCE['memory_gb_at_10000']} GB at S=10000"
    )
    for row in rows:
        if row["status"] != "ok":
            print(f"  {row['case']}: {row['status']}: {row['reason']}")
    write_json(
        args.out,
        {
            "benchmark": "inference",
            "machine": machine_facts(),
            "versions": package_versions(),
            "settings": {
                "threads": args.threads,
                "timeout_s": args.timeout,
                "environment": {name: os.environ.get(name) for name in THREAD_VARIABLES},
                "network": {
                    "source": "shipped" if checkpoint is None else checkpoint,
                    "width": network.width,
                    "heads": network.heads,
                    "num_layers": network.num_layers,
                    "planner_inputs": network.planner_inputs,
                },
                "call": "rlfm.predict_policy(counts, gamma) with its defaults, timed once after a warm-up "
                "call predict_policy(Counts.empty([2, 2]), 0.95) in the same process",
                "memory_method": "each case in a fresh subprocess; peak_rss_gb is the process's resident "
                "high-water mark during the call (see each row's memory_method), rss_before_gb its RSS before",
            },
            "reference": REFERENCE,
            "targets": TARGETS,
            "results": rows,
        },
    )
    return 0


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
