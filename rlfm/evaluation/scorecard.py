"""``rlfm scorecard RUN [RUN ...]``: where one agent stands against the best of the others, MDP by MDP.

The arguments are ``rlfm benchmark`` outputs of one mode and the same seeds (e.g. rlfm in one run and the
baselines in another); their records are pooled, a later run's record replacing an earlier one's for the
same (MDP, agent, size). For each MDP the agent (``--agent``, default rlfm) is compared with the best
other agent, each at its best setting as the benchmark chose it:

- offline: whether its mean normalised value is at or above the best other agent's at **every** dataset
  size (the worst shortfall and its size otherwise), and whether at the largest size it is at or above
  certainty equivalence's (``ce``; as printed, to two decimals, and exactly);
- online: whether it needs the **fewest** episodes (median over all seeds, a seed that never converged
  counting as never; ties count as fewest), whether its cumulative regret is the **lowest** (the others at
  the lowest of their grids), and whether it converges (on at least half the seeds) wherever the best other
  agent does.

Then the number of MDPs that pass each test. Reporting only: the numbers come from the reported suites.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlfm.arguments import OneLineParser
from rlfm.evaluation.compare import SAME_RUN_KEYS, load_results


def pooled_records(runs: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The mode and the pooled records of ``runs`` (same mode and seeds; later records replace earlier)."""
    first = runs[0]
    for run in runs[1:]:
        differing = [k for k in SAME_RUN_KEYS if k != "protocol" and run.get(k) != first.get(k)]
        if differing:
            raise ValueError(f"the runs differ in {differing}: pool runs of one mode on the same seeds")
    pooled: dict[tuple[str, str, int], dict[str, Any]] = {}
    for run in runs:
        for record in run["results"]:
            pooled[(record["env"], record["agent"], int(record.get("dataset_size", 0)))] = record
    return first["mode"], list(pooled.values())


def offline_scorecard(records: list[dict[str, Any]], agent: str) -> list[dict[str, Any]]:
    """Per MDP: ``every_size`` (at or above the best other agent at each size), ``worst_gap`` and its
    ``worst_size``, the agent's and CE's values at the largest size and ``at_least_ce`` (exact and rounded)."""
    means: dict[str, dict[tuple[str, int], float]] = defaultdict(dict)
    for r in records:
        means[r["env"]][(r["agent"], int(r["dataset_size"]))] = sum(r["per_seed"]) / len(r["per_seed"])
    rows = []
    for env, cells in sorted(means.items()):
        sizes = sorted({size for name, size in cells if name == agent})
        others = {name for name, _ in cells} - {agent}
        if not sizes or not others:
            continue
        gaps = {}
        for size in sizes:
            best = max(v for (name, s), v in cells.items() if s == size and name != agent)
            gaps[size] = cells[(agent, size)] - best
        worst = min(gaps, key=gaps.get)
        largest = sizes[-1]
        ours, ce = cells[(agent, largest)], cells.get(("ce", largest))
        rows.append(
            {
                "env": env,
                "every_size": gaps[worst] >= 0.0,
                "worst_gap": gaps[worst],
                "worst_size": worst,
                "largest_size": largest,
                "value": ours,
                "ce": ce,
                "at_least_ce": None if ce is None else ours >= ce,
                "at_least_ce_rounded": None if ce is None else round(ours, 2) >= round(ce, 2),
            }
        )
    return rows


def online_scorecard(records: list[dict[str, Any]], agent: str) -> list[dict[str, Any]]:
    """Per MDP: the agent's and the best other agent's median episodes (None: never) and converged seeds,
    their regret (the others' lowest over their grids), and ``fewest``, ``lowest_regret``, ``converges``."""
    by_env: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in records:
        by_env[r["env"]][r["agent"]] = r
    rows = []
    for env, agents in sorted(by_env.items()):
        if agent not in agents or len(agents) < 2:
            continue
        ours = agents[agent]
        others = [r for name, r in agents.items() if name != agent]
        best = min(others, key=lambda r: (_episodes(r), -r["converged_seeds"]))
        lowest = min(others, key=_lowest_regret)
        half = ours["seeds"] / 2
        rows.append(
            {
                "env": env,
                "episodes": ours["episodes_to_converge"],
                "converged": ours["converged_seeds"],
                "best_other": best["agent"],
                "best_episodes": best["episodes_to_converge"],
                "best_converged": best["converged_seeds"],
                "regret": ours["cumulative_regret"],
                "lowest_other": lowest["agent"],
                "lowest_regret_other": _lowest_regret(lowest),
                "fewest": _episodes(ours) <= _episodes(best),
                "lowest_regret": ours["cumulative_regret"] <= _lowest_regret(lowest),
                "converges": ours["converged_seeds"] >= half or best["converged_seeds"] < half,
            }
        )
    return rows


def _episodes(record: dict[str, Any]) -> float:
    median = record["episodes_to_converge"]
    return math.inf if median is None else median


def _lowest_regret(record: dict[str, Any]) -> float:
    return min([record["cumulative_regret"]] + [g["cumulative_regret"] for g in record.get("grid", [])])


def format_scorecard(mode: str, rows: list[dict[str, Any]], agent: str) -> str:
    """The scorecard as Markdown: one row per MDP, then the counts."""
    n = len(rows)
    if mode == "offline":
        lines = [
            f"| MDP | {agent} ≥ best other at every size | worst gap (size) | {agent} / CE at the largest size |",
            "|---|---|---|---|",
        ]
        for r in rows:
            ce = "—" if r["ce"] is None else f"{r['value']:.3f} / {r['ce']:.3f}"
            gap = "" if r["every_size"] else f"{r['worst_gap']:+.3f} ({r['worst_size']})"
            lines.append(f"| {r['env']} | {_mark(r['every_size'])} | {gap} | {ce} |")
        exact = sum(bool(r["at_least_ce"]) for r in rows)
        rounded = sum(bool(r["at_least_ce_rounded"]) for r in rows)
        lines += [
            "",
            f"at or above the best other agent at every size: {sum(r['every_size'] for r in rows)} of {n}; "
            f"at or above CE at the largest size: {rounded} of {n} to two decimals ({exact} exactly)",
        ]
    else:
        lines = [
            f"| MDP | {agent}: episodes (converged) | best other | {agent}: regret | lowest other | fewest | lowest regret |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['env']} | {_median(r['episodes'])} ({r['converged']}) | {_median(r['best_episodes'])}"
                f" ({r['best_converged']}, {r['best_other']}) | {r['regret']:.1f} | {r['lowest_regret_other']:.1f}"
                f" ({r['lowest_other']}) | {_mark(r['fewest'])} | {_mark(r['lowest_regret'])} |"
            )
        lines += [
            "",
            f"fewest episodes: {sum(r['fewest'] for r in rows)} of {n}; lowest regret: "
            f"{sum(r['lowest_regret'] for r in rows)} of {n}; converges wherever the best other agent does "
            f"(on at least half the seeds): {sum(r['converges'] for r in rows)} of {n}",
        ]
    return "\n".join(lines)


def _mark(ok: bool) -> str:
    return "yes" if ok else "no"


def _median(value: float | None) -> str:
    return "never" if value is None else f"{value:g}"


def scorecard_main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="rlfm scorecard", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="rlfm benchmark outputs (results.json or their directories)")
    parser.add_argument(
        "--agent", default="rlfm", help="the agent to score against the others (default: rlfm)"
    )
    parser.add_argument("--json", dest="json_path", type=Path, help="also write the rows and counts here")
    args = parser.parse_args(argv)
    try:
        mode, records = pooled_records([load_results(path) for path in args.runs])
        score = offline_scorecard if mode == "offline" else online_scorecard
        rows = score(records, args.agent)
        if not rows:
            raise ValueError(f"no MDP has records of {args.agent!r} and of another agent")
    except ValueError as error:
        parser.error(str(error))
    print(format_scorecard(mode, rows, args.agent))
    if args.json_path:
        args.json_path.write_text(json.dumps({"mode": mode, "agent": args.agent, "rows": rows}, indent=1))
    return 0
