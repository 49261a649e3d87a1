"""``rlfm compare BASE CANDIDATE``: is one network (or training recipe) better than another, beyond noise?

Both arguments are ``rlfm benchmark`` outputs (a ``results.json`` or its directory) of the same mode, suite
slice, seeds and protocol, so seed i saw the same MDP draw, dataset or environment stream in both: the
comparison is paired. A paired percentile bootstrap resamples seed indices (the same indices for every
MDP and size) and recomputes

- offline: the mean over (MDP, size) cells and seeds of candidate − base normalised value, Δ;
- online: Σ over MDPs of log((median episodes of the candidate + 1) / (median of the base + 1)), a seed
  that never converged counting as cap + 1; beside it (not resampled) Σ log(mean regret ratio).

Either side may be several runs, one per network trained by the same recipe with different training seeds
(comma-separated on the command line). Then each resample also draws that side's networks with
replacement, values are averaged (offline) or pooled before the median (online) over the drawn networks,
and the interval counts training-seed noise beside evaluation noise. With one network per side it is the
plain paired bootstrap above; with two, the network draw still understates training noise (a bootstrap of
two things sees half their variance), so three or more per side are better.

Offline, each MDP also gets its own interval of Δ from the same resamples (a per-MDP question, e.g. "is
the network below certainty equivalence here?", has no other noise to hide in), and the report names the
single dataset whose difference moves Δ most (normalised values are unbounded below, so one catastrophic
greedy policy can decide a comparison). ``--base-agent`` reads
another agent of the base runs, so one run compares two of its agents seed for seed (offline every agent
plans on the same datasets): ``rlfm compare RUN RUN --base-agent ce``.

The candidate passes if, offline, the interval's lower bound is ≥ −margin (default 0.01: not worse beyond
noise), and online, the interval's upper bound is < 0 (fewer episodes beyond noise) and the regret sum is
≤ 0. That is the rule the README uses to decide whether a new network replaces the shipped one; it is
meant for validation MDPs, never for the reported suites.

>>> compare_main(["runs/offline_default", "runs/offline_new"])  # doctest: +SKIP
>>> compare_main(["runs/old_seed0,runs/old_seed1", "runs/new_seed0,runs/new_seed1"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlfm.arguments import OneLineParser
from rlfm.evaluation.report import BOOTSTRAP_RESAMPLES, median_of_last, percentile_interval

SAME_RUN_KEYS = ("mode", "protocol", "seeds", "seed")


def load_results(path: str | Path) -> dict[str, Any]:
    """The results file of an ``rlfm benchmark`` run, given the file or its output directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ValueError(f"{path} is not an rlfm benchmark results file or directory")
    return json.loads(path.read_text())


def per_seed_cells(results: dict[str, Any], agent: str) -> dict[tuple[str, int], Tensor]:
    """{(MDP, dataset size or 0 online): (seeds,) or (2, seeds) per-seed values} of one agent's records;
    online rows are (episodes to converge with never = cap + 1, cumulative regret)."""
    cells: dict[tuple[str, int], Tensor] = {}
    for record in results["results"]:
        if record["agent"] != agent:
            continue
        key = (record["env"], int(record.get("dataset_size", 0)))
        if key in cells:
            raise ValueError(f"{agent} has several records for {key}: compare runs with one setting of it")
        if results["mode"] == "offline":
            cells[key] = torch.tensor(record["per_seed"], dtype=torch.float64)
        else:
            cap = results["protocol"]["episodes"]
            episodes = [cap + 1 if e is None else e for e in record["per_seed"]["episodes_to_converge"]]
            regret = record["per_seed"]["cumulative_regret"]
            cells[key] = torch.tensor([episodes, regret], dtype=torch.float64)
    if not cells:
        raise ValueError(f"no records of agent {agent!r}")
    return cells


def paired_cells(
    base: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]], agent: str, base_agent: str
) -> tuple[list[tuple[str, int]], Tensor, Tensor]:
    """The cells every run has (``base_agent``'s records in the base runs, ``agent``'s in the candidate
    runs), stacked per side as (networks, cells, seeds) or (networks, cells, 2, seeds); checks that all
    runs are comparable seed for seed."""
    runs = [*base, *candidate]
    for key in SAME_RUN_KEYS:
        for run in runs[1:]:
            if run.get(key) != runs[0].get(key):
                raise ValueError(f"the runs differ in {key}: {runs[0].get(key)} vs {run.get(key)}")
    cells = [per_seed_cells(run, base_agent) for run in base] + [
        per_seed_cells(run, agent) for run in candidate
    ]
    for other in cells[1:]:
        if set(other) != set(cells[0]):
            raise ValueError(f"the runs cover different MDPs or sizes: {sorted(set(other) ^ set(cells[0]))}")
    keys = sorted(cells[0])
    stacked = torch.stack([torch.stack([run[k] for k in keys]) for run in cells])
    return keys, stacked[: len(base)], stacked[len(base) :]


def draw(values: Tensor, networks: Tensor, index: Tensor) -> Tensor:
    """The resampled values of one side. values: (networks, cells, seeds); networks: (resamples, n) drawn
    network indices; index: (resamples, seeds) drawn seed indices → (resamples, cells, n · seeds), the
    drawn networks' seeds side by side."""
    picked = values[networks]  # (resamples, n, cells, seeds)
    seeds = index[:, None, None, :].expand(-1, picked.shape[1], picked.shape[2], -1)
    picked = picked.gather(-1, seeds)
    return picked.permute(0, 2, 1, 3).flatten(2)


def offline_statistic(base: Tensor, candidate: Tensor) -> Tensor:
    """Δ = mean candidate − base over cells and drawn (network, seed) pairs. base, candidate: (resamples,
    cells, draws) → (resamples,)."""
    return candidate.mean(dim=(1, 2)) - base.mean(dim=(1, 2))


def online_statistic(base: Tensor, candidate: Tensor) -> Tensor:
    """Σ_MDP log((median episodes + 1) ratio) over the drawn (network, seed) pairs. base, candidate:
    (resamples, MDPs, draws) of episodes → (resamples,)."""
    return torch.log((median_of_last(candidate) + 1.0) / (median_of_last(base) + 1.0)).sum(dim=-1)


def largest_dataset(keys: list[tuple[str, int]], base: Tensor, candidate: Tensor) -> dict[str, Any]:
    """The one dataset (MDP, size, seed index) whose difference moves the offline Δ most, and by how much.

    Normalised values are unbounded below (a greedy policy that walks into a cliff for ever scores −8
    where the optimum is 1), so a single dataset can outweigh every other cell: Δ is the mean of
    d[cell, seed] = candidate − base (networks averaged) over C cells and N seeds, and that dataset's share
    of it is d / (C·N). base, candidate: (networks, cells, seeds)."""
    difference = candidate.mean(dim=0) - base.mean(dim=0)  # (cells, seeds)
    share = difference / difference.numel()
    cell, seed = divmod(int(share.abs().argmax()), share.shape[1])
    env, size = keys[cell]
    return {
        "env": env,
        "size": size,
        "seed_index": seed,
        "values": [float(base[:, cell, seed].mean()), float(candidate[:, cell, seed].mean())],
        "share": float(share[cell, seed]),
    }


def _as_runs(results: dict[str, Any] | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    runs = [results] if isinstance(results, dict) else list(results)
    if not runs:
        raise ValueError("each side of a comparison needs at least one benchmark run")
    return runs


def compare(
    base: dict[str, Any] | Sequence[dict[str, Any]],
    candidate: dict[str, Any] | Sequence[dict[str, Any]],
    agent: str = "rlfm",
    margin: float = 0.01,
    seed: int = 0,
    base_agent: str | None = None,
    floor: float | None = None,
) -> dict[str, Any]:
    """The paired comparison of two benchmark runs, or of two groups of runs (one per training seed of a
    recipe; module docstring): statistic, interval, per-MDP numbers and whether the candidate passes.

    ``agent`` is read in the candidate runs and ``base_agent`` (default: ``agent``) in the base runs, so
    one run can also be compared with itself agent against agent (e.g. rlfm against certainty
    equivalence, which plan on the same datasets offline). Offline, ``floor`` clips every dataset's
    normalised value from below before anything is computed (e.g. −1: a greedy policy worse than uniform
    play by more than uniform play is below the optimum counts as exactly that bad), bounding what one
    dataset can weigh."""
    base, candidate = _as_runs(base), _as_runs(candidate)
    base_agent = agent if base_agent is None else base_agent
    keys, b, c = paired_cells(base, candidate, agent, base_agent)
    offline = base[0]["mode"] == "offline"
    if floor is not None:
        if not offline:
            raise ValueError("floor applies to offline comparisons (normalised values) only")
        b, c = b.clamp(min=floor), c.clamp(min=floor)
    if not offline:  # the resampled statistic reads the episodes; the regret is reported beside it
        b, c, regret_b, regret_c = b[:, :, 0], c[:, :, 0], b[:, :, 1], c[:, :, 1]
    seeds = b.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, seeds, (BOOTSTRAP_RESAMPLES, seeds), generator=generator)

    def networks(n: int) -> Tensor:  # one network per side draws nothing: the plain paired bootstrap
        if n == 1:
            return torch.zeros(BOOTSTRAP_RESAMPLES, 1, dtype=torch.long)
        return torch.randint(0, n, (BOOTSTRAP_RESAMPLES, n), generator=generator)

    statistic = offline_statistic if offline else online_statistic
    drawn_b, drawn_c = draw(b, networks(len(b)), index), draw(c, networks(len(c)), index)
    low, high = percentile_interval(statistic(drawn_b, drawn_c))
    every_b, every_c, every_seed = (torch.arange(n)[None] for n in (len(b), len(c), seeds))  # no resampling
    report: dict[str, Any] = {
        "mode": base[0]["mode"],
        "agent": agent,
        "base_agent": base_agent,
        "seeds": seeds,
        "networks": [len(b), len(c)],
        "statistic": float(statistic(draw(b, every_b, every_seed), draw(c, every_c, every_seed))[0]),
        "ci": [low, high],
    }
    envs = sorted({env for env, _ in keys})
    if offline:
        report["margin"] = margin
        report["floor"] = floor
        report["passes"] = low >= -margin
        report["per_mdp"] = {}
        for env in envs:
            cells = torch.tensor([k[0] == env for k in keys])
            interval = percentile_interval(offline_statistic(drawn_b[:, cells], drawn_c[:, cells]))
            report["per_mdp"][env] = {
                "mean_value": [float(t[:, cells].mean()) for t in (b, c)],
                "ci": list(interval),
            }
        report["largest_dataset"] = largest_dataset(keys, b, c)
    else:
        mean_regret_b, mean_regret_c = regret_b.mean(dim=(0, 2)), regret_c.mean(dim=(0, 2))
        # equal regrets (zero included) count 0; a regret against a zero one, ±inf
        ratios = torch.where(mean_regret_c == mean_regret_b, 1.0, mean_regret_c / mean_regret_b)
        report["log_regret_ratio"] = float(torch.log(ratios).sum())
        report["passes"] = high < 0 and report["log_regret_ratio"] <= 0
        cap = base[0]["protocol"]["episodes"]
        report["per_mdp"] = {
            env: {
                "median_episodes": [float(median_of_last(t[:, i].flatten())) for t in (b, c)],
                "converged_seeds": [int((t[:, i] <= cap).sum()) for t in (b, c)],
                "mean_regret": [float(mean_regret_b[i]), float(mean_regret_c[i])],
            }
            for i, (env, _) in enumerate(keys)
        }
    return report


def format_report(report: dict[str, Any], base_name: str, candidate_name: str) -> str:
    """The comparison as readable lines: per MDP base → candidate, the statistic and the verdict."""
    low, high = report["ci"]
    networks = report["networks"]
    per_side = "" if networks == [1, 1] else f" × networks {networks[0]} vs {networks[1]}"
    agents = (
        report["agent"]
        if report["base_agent"] == report["agent"]
        else f"{report['base_agent']} → {report['agent']}"
    )
    lines = [
        f"{report['mode']}, {agents}, {report['seeds']} paired seeds{per_side}: {base_name} → {candidate_name}"
    ]
    if report["mode"] == "offline":
        for env, row in report["per_mdp"].items():
            (b, c), (low_env, high_env) = row["mean_value"], row["ci"]
            lines.append(
                f"  {env:<28} mean normalised value {b:7.3f} → {c:7.3f}   Δ {c - b:+.4f} "
                f"(95 % [{low_env:+.4f}, {high_env:+.4f}])"
            )
        single = report["largest_dataset"]
        (vb, vc), share = single["values"], single["share"]
        lines.append(
            f"  largest single dataset: {single['env']} at {single['size']} transitions, seed index "
            f"{single['seed_index']}: {vb:.3f} → {vc:.3f}, {share:+.4f} of Δ "
            f"(Δ without its difference {report['statistic'] - share:+.4f})"
        )
        floored = "" if report.get("floor") is None else f", each dataset floored at {report['floor']:g}"
        lines.append(
            f"Δ mean normalised value{floored} {report['statistic']:+.4f} (95 % [{low:+.4f}, {high:+.4f}]); "
            f"passes (lower bound ≥ −{report['margin']}): {report['passes']}"
        )
    else:
        for env, row in report["per_mdp"].items():
            (eb, ec), (nb, nc), (rb, rc) = row["median_episodes"], row["converged_seeds"], row["mean_regret"]
            tb, tc = (n * report["seeds"] for n in networks)
            lines.append(
                f"  {env:<28} median episodes {eb:6.1f} → {ec:6.1f}   converged {nb:2d}/{tb} → {nc:2d}/{tc}"
                f"   mean regret {rb:7.1f} → {rc:7.1f}"
            )
        lines.append(
            f"Σ log episode ratio {report['statistic']:+.3f} (95 % [{low:+.3f}, {high:+.3f}]); "
            f"Σ log regret ratio {report['log_regret_ratio']:+.3f}; "
            f"passes (upper bound < 0 and regret sum ≤ 0): {report['passes']}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="rlfm compare",
        description="Paired bootstrap over seeds of two rlfm benchmark runs (same mode, MDPs, seeds): does "
        "the candidate beat the base beyond noise? Either side may list several runs separated by commas "
        "(networks of one recipe with different training seeds): each resample then also draws networks. "
        "Offline: mean normalised value difference, passes if "
        "its 95% lower bound is >= -margin. Online: sum over MDPs of log median-episode ratios, passes if "
        "its upper bound is < 0 and the sum of log mean-regret ratios is <= 0.",
    )
    parser.add_argument(
        "base", help="results.json (or its directory) of the network to beat; RUN1,RUN2,... for several"
    )
    parser.add_argument(
        "candidate", help="results.json (or its directory) of the challenger; RUN1,RUN2,... for several"
    )
    parser.add_argument("--agent", default="rlfm", help="the agent compared in both runs (default: rlfm)")
    parser.add_argument(
        "--base-agent",
        default=None,
        help="read this agent in the base runs instead (e.g. `rlfm compare RUN RUN --base-agent ce`: rlfm "
        "against certainty equivalence on the same datasets)",
    )
    parser.add_argument("--margin", type=float, default=0.01, help="offline: tolerated loss (default: 0.01)")
    parser.add_argument(
        "--floor",
        type=float,
        default=None,
        help="offline: clip each dataset's normalised value from below at this value before comparing (e.g. -1)",
    )
    parser.add_argument("--json", dest="json_path", default=None, help="also write the comparison here")
    return parser


def compare_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base, candidate = (
        [load_results(path) for path in side.split(",")] for side in (args.base, args.candidate)
    )
    report = compare(base, candidate, args.agent, args.margin, base_agent=args.base_agent, floor=args.floor)
    print(format_report(report, args.base, args.candidate))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=1))
    return 0
