"""``rlfm compare BASE CANDIDATE``: is one network better than another on the same seeds, beyond noise?

Both arguments are ``rlfm benchmark`` outputs (a ``results.json`` or its directory) of the same mode, suite
slice, seeds and protocol, so seed i saw the same MDP draw, dataset or environment stream in both: the
comparison is paired. A paired percentile bootstrap resamples seed indices (the same indices for every
MDP and size) and recomputes

- offline: the mean over (MDP, size) cells and seeds of candidate − base normalised value, Δ;
- online: Σ over MDPs of log((median episodes of the candidate + 1) / (median of the base + 1)), a seed
  that never converged counting as cap + 1; beside it (not resampled) Σ log(mean regret ratio).

The candidate passes if, offline, the interval's lower bound is ≥ −margin (default 0.01: not worse beyond
noise), and online, the interval's upper bound is < 0 (fewer episodes beyond noise) and the regret sum is
≤ 0. That is the rule the README uses to decide whether a new network replaces the shipped one; it is
meant for validation MDPs, never for the reported suites.

>>> compare_main(["runs/offline_default", "runs/offline_new"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
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
    base: dict[str, Any], candidate: dict[str, Any], agent: str
) -> tuple[list[tuple[str, int]], Tensor, Tensor]:
    """The cells both runs have, as stacked tensors (cells, seeds) or (cells, 2, seeds); checks that the
    runs are comparable seed for seed."""
    for key in SAME_RUN_KEYS:
        if base.get(key) != candidate.get(key):
            raise ValueError(f"the runs differ in {key}: {base.get(key)} vs {candidate.get(key)}")
    b, c = per_seed_cells(base, agent), per_seed_cells(candidate, agent)
    if set(b) != set(c):
        raise ValueError(f"the runs cover different MDPs or sizes: {sorted(set(b) ^ set(c))}")
    keys = sorted(b)
    return keys, torch.stack([b[k] for k in keys]), torch.stack([c[k] for k in keys])


def offline_statistic(base: Tensor, candidate: Tensor, index: Tensor) -> Tensor:
    """Δ = mean candidate − base over cells and the seeds in ``index``. base, candidate: (cells, seeds);
    index: (resamples, seeds) → (resamples,)."""
    return (candidate - base)[:, index].mean(dim=(0, 2))


def online_statistic(base: Tensor, candidate: Tensor, index: Tensor) -> Tensor:
    """Σ_MDP log((median episodes + 1) ratio) over the seeds in ``index``. base, candidate: (MDPs, 2, seeds)
    with row 0 the episodes; index: (resamples, seeds) → (resamples,)."""
    b, c = (
        median_of_last(base[:, 0][:, index]),
        median_of_last(candidate[:, 0][:, index]),
    )  # (MDPs, resamples)
    return torch.log((c + 1.0) / (b + 1.0)).sum(dim=0)


def compare(
    base: dict[str, Any], candidate: dict[str, Any], agent: str = "rlfm", margin: float = 0.01, seed: int = 0
) -> dict[str, Any]:
    """The paired comparison of two benchmark runs (module docstring): statistic, interval, per-MDP
    numbers and whether the candidate passes."""
    keys, b, c = paired_cells(base, candidate, agent)
    seeds = b.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, seeds, (BOOTSTRAP_RESAMPLES, seeds), generator=generator)
    every_seed = torch.arange(seeds)[None]
    statistic = offline_statistic if base["mode"] == "offline" else online_statistic
    low, high = percentile_interval(statistic(b, c, index))
    report: dict[str, Any] = {
        "mode": base["mode"],
        "agent": agent,
        "seeds": seeds,
        "statistic": float(statistic(b, c, every_seed)[0]),
        "ci": [low, high],
    }
    envs = sorted({env for env, _ in keys})
    if base["mode"] == "offline":
        report["margin"] = margin
        report["passes"] = low >= -margin
        report["per_mdp"] = {
            env: [float(t[[k[0] == env for k in keys]].mean()) for t in (b, c)] for env in envs
        }
    else:
        mean_regret_b, mean_regret_c = b[:, 1].mean(dim=-1), c[:, 1].mean(dim=-1)
        report["log_regret_ratio"] = float(torch.log(mean_regret_c / mean_regret_b).sum())
        report["passes"] = high < 0 and report["log_regret_ratio"] <= 0
        cap = base["protocol"]["episodes"]
        report["per_mdp"] = {
            env: {
                "median_episodes": [float(median_of_last(b[i, 0])), float(median_of_last(c[i, 0]))],
                "converged_seeds": [int((b[i, 0] <= cap).sum()), int((c[i, 0] <= cap).sum())],
                "mean_regret": [float(mean_regret_b[i]), float(mean_regret_c[i])],
            }
            for i, (env, _) in enumerate(keys)
        }
    return report


def format_report(report: dict[str, Any], base_name: str, candidate_name: str) -> str:
    """The comparison as readable lines: per MDP base → candidate, the statistic and the verdict."""
    low, high = report["ci"]
    lines = [
        f"{report['mode']}, {report['agent']}, {report['seeds']} paired seeds: {base_name} → {candidate_name}"
    ]
    if report["mode"] == "offline":
        for env, (b, c) in report["per_mdp"].items():
            lines.append(f"  {env:<28} mean normalised value {b:7.3f} → {c:7.3f}")
        lines.append(
            f"Δ mean normalised value {report['statistic']:+.4f} (95 % [{low:+.4f}, {high:+.4f}]); "
            f"passes (lower bound ≥ −{report['margin']}): {report['passes']}"
        )
    else:
        for env, row in report["per_mdp"].items():
            (eb, ec), (nb, nc), (rb, rc) = row["median_episodes"], row["converged_seeds"], row["mean_regret"]
            lines.append(
                f"  {env:<28} median episodes {eb:6.1f} → {ec:6.1f}   converged {nb:2d} → {nc:2d}"
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
        "the candidate beat the base beyond noise? Offline: mean normalised value difference, passes if "
        "its 95% lower bound is >= -margin. Online: sum over MDPs of log median-episode ratios, passes if "
        "its upper bound is < 0 and the sum of log mean-regret ratios is <= 0.",
    )
    parser.add_argument("base", help="results.json (or its directory) of the network to beat")
    parser.add_argument("candidate", help="results.json (or its directory) of the challenger")
    parser.add_argument("--agent", default="rlfm", help="the agent compared in both runs (default: rlfm)")
    parser.add_argument("--margin", type=float, default=0.01, help="offline: tolerated loss (default: 0.01)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the comparison here")
    return parser


def compare_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = compare(load_results(args.base), load_results(args.candidate), args.agent, args.margin)
    print(format_report(report, args.base, args.candidate))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=1))
    return 0
