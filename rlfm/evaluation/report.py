"""Summaries, confidence intervals, the results file, the Markdown table and the plots of ``rlfm benchmark``.

The online headline, ``episodes_to_converge``, is the median over **all** seeds, a seed that never converged
counting as +∞ (null, shown as "> cap", when that median is infinite), with ``converged_seeds`` beside it
and every seed's value in ``per_seed.episodes_to_converge`` (null = never).

Confidence intervals are 95 % percentile bootstraps over seeds (2,000 resamples, fixed seed): of the mean
for regret and normalised values, of the median for episodes-to-converge (seeds that never converged count
as +∞, so a bound that falls on them is reported as null). Learning curves show the mean over seeds ±
1.96 standard errors.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlfm.evaluation.online import OnlineConfig, OnlineRun, episodes_to_converge

BOOTSTRAP_RESAMPLES = 2000
LEVEL = 0.95


def bootstrap_ci(
    values: Sequence[float], statistic: str = "mean", level: float = LEVEL, seed: int = 0
) -> list[float | None]:
    """[low, high] percentile-bootstrap interval of the ``statistic`` ("mean" or "median") of ``values``;
    infinite bounds become None."""
    data = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if data.numel() == 0:
        return [None, None]
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, data.numel(), (BOOTSTRAP_RESAMPLES, data.numel()), generator=generator)
    samples = data[index]
    if statistic == "mean":
        stats = samples.mean(dim=1)
    elif statistic == "median":
        stats = median_of_last(samples)
    else:
        raise ValueError(f"unknown statistic {statistic!r}")
    low, high = percentile_interval(stats, level)
    return [_finite(low), _finite(high)]


def median_of_last(values: Tensor) -> Tensor:
    """Median along the last dimension: the mean of the two middle values, like statistics.median."""
    ordered = values.sort(dim=-1).values
    n = values.shape[-1]
    return 0.5 * (ordered[..., (n - 1) // 2] + ordered[..., n // 2])


def percentile_interval(samples: Tensor, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples`` (1-D)."""
    stats, count = samples.sort().values, samples.numel()
    tail = (1.0 - level) / 2.0
    return float(stats[math.floor(tail * (count - 1))]), float(stats[math.ceil((1.0 - tail) * (count - 1))])


def _finite(value: Tensor | float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _median(values: Sequence[float]) -> float | None:
    """The median, None if it is infinite (more than half the values are +∞) or there are no values."""
    if not values:
        return None
    return _finite(statistics.median(values))


def curve(scores: Tensor, digits: int = 4) -> dict[str, list[float]]:
    """Mean and ±1.96 standard-error band over seeds of ``scores`` (seeds, points)."""
    mean = scores.mean(dim=0)
    half = (
        1.96 * scores.std(dim=0, correction=1) / math.sqrt(scores.shape[0])
        if scores.shape[0] > 1
        else 0 * mean
    )
    return {
        "mean": [round(v, digits) for v in mean.tolist()],
        "ci_low": [round(v, digits) for v in (mean - half).tolist()],
        "ci_high": [round(v, digits) for v in (mean + half).tolist()],
    }


# ---------------------------------------------------------------------------------------------- online
def summarize_online(run: OnlineRun, config: OnlineConfig, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The metrics of one setting over its seeds (see :mod:`rlfm.evaluation.online` for definitions)."""
    per_seed = run.episodes_to_converge(config)
    censored = _censored(per_seed)
    regret = run.cumulative_regret
    return {
        "hyperparameters": hyperparameters,
        **_convergence(per_seed),
        "seeds": len(per_seed),
        "episodes_to_converge_ci": bootstrap_ci(censored, "median"),
        "cumulative_regret": float(regret.mean()),
        "cumulative_regret_std": float(regret.std(correction=1)) if regret.numel() > 1 else 0.0,
        "cumulative_regret_ci": bootstrap_ci(regret.tolist()),
        "greedy_regret": float(run.greedy_regret.mean()),
        "final_normalized_value": float(run.scores[:, -1].mean()),
        **(
            {}
            if run.planning_scores is None
            else {"planning_on_data": _planning(run.planning_scores, config)}
        ),
        "per_seed": {
            "episodes_to_converge": per_seed,
            "cumulative_regret": [round(v, 3) for v in regret.tolist()],
        },
    }


def _censored(per_seed: list[int | None]) -> list[float]:
    """Episodes to converge per seed, +∞ for a seed that never converged."""
    return [float(e) if e is not None else math.inf for e in per_seed]


def _convergence(per_seed: list[int | None]) -> dict[str, Any]:
    """The headline median (never-converged seeds as +∞; None if infinite) and the converged count."""
    return {
        "episodes_to_converge": _median(_censored(per_seed)),
        "converged_seeds": sum(e is not None for e in per_seed),
    }


def _planning(scores: Tensor, config: OnlineConfig) -> dict[str, Any]:
    """Convergence of certainty equivalence's greedy policy on the agent's own counts, ``scores`` (R, E)."""
    return {
        **_convergence(episodes_to_converge(scores, config.threshold, config.window)),
        "final_normalized_value": float(scores[:, -1].mean()),
        "learning_curve": curve(scores),
    }


def online_key(summary: dict[str, Any]) -> tuple[float, int, float]:
    """Sort key of the best setting: the headline median episodes-to-converge (never-converged seeds as
    +∞), then more converged seeds, then lower cumulative regret."""
    median = summary["episodes_to_converge"]
    return (math.inf if median is None else median, -summary["converged_seeds"], summary["cumulative_regret"])


def online_record(
    env: str,
    agent: str,
    settings: list[tuple[dict[str, Any], OnlineRun]],
    config: OnlineConfig,
    wall_time: float,
) -> dict[str, Any]:
    """One result record per (env, agent): the best setting's metrics, its learning curve and the grid."""
    summaries = [summarize_online(run, config, hp) for hp, run in settings]
    best = min(range(len(settings)), key=lambda i: online_key(summaries[i]))
    grid = [{k: v for k, v in s.items() if k != "per_seed"} for s in summaries]
    return {
        "env": env,
        "agent": agent,
        **summaries[best],
        "episodes": config.episodes,
        "wall_time_s": round(wall_time, 2),
        "learning_curve": curve(settings[best][1].scores),
        "grid": grid,
    }


# --------------------------------------------------------------------------------------------- offline
def offline_records(
    env: str,
    agent: str,
    settings: list[tuple[dict[str, Any], Tensor]],
    sizes: Sequence[int],
    behaviour: str,
    wall_time: float,
) -> list[dict[str, Any]]:
    """One record per dataset size for the best setting, chosen by the mean normalised value over all
    sizes and seeds. ``settings`` pairs hyperparameters with values (sizes, seeds)."""
    means = [float(values.mean()) for _, values in settings]
    best = max(range(len(settings)), key=lambda i: means[i])
    hyperparameters, values = settings[best]
    grid = [
        {"hyperparameters": hp, "mean_normalized_value": m}
        for (hp, _), m in zip(settings, means, strict=True)
    ]
    records = []
    for size, row in zip(sizes, values, strict=True):
        records.append(
            {
                "env": env,
                "agent": agent,
                "dataset_size": int(size),
                "normalized_value_mean": float(row.mean()),
                "normalized_value_std": float(row.std(correction=1)) if row.numel() > 1 else 0.0,
                "normalized_value_ci": bootstrap_ci(row.tolist()),
                "seeds": int(row.numel()),
                "behaviour": behaviour,
                "hyperparameters": hyperparameters,
                "mean_over_sizes": means[best],
                "per_seed": [round(v, 4) for v in row.tolist()],
                "wall_time_s": round(wall_time, 2),
                "grid": grid,
            }
        )
    return records


# ---------------------------------------------------------------------------------------------- output
def write_json(path: Path, metadata: dict[str, Any], records: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps({**metadata, "results": records}, indent=1) + "\n")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _episodes(median: float | None, cap: int) -> str:
    """The headline median episodes-to-converge, "> cap" where it is infinite."""
    return f"> {cap}" if median is None else f"{median:.1f}"


def _setting(hyperparameters: dict[str, Any]) -> str:
    shown = {k: v for k, v in hyperparameters.items() if k != "checkpoint"}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "—"


def markdown_table(mode: str, records: list[dict[str, Any]], metadata: dict[str, Any]) -> str:
    """The results as Markdown: the best settings, then (online) every grid setting."""
    lines = [f"# rlfm benchmark — {mode}", "", f"`{metadata['command']}`", ""]
    if mode == "online":
        config = metadata["protocol"]
        lines += [
            f"Episodes to converge: median over all seeds, a seed that never converged counting as ∞ "
            f'("> {config["episodes"]}" when the median is; first episode of {config["window"]} in a row '
            f"scoring ≥ {config['threshold']}), 95 % bootstrap CI of the median. Cumulative regret "
            f"over {config['episodes']} episodes (1 ≈ one episode of uniformly random play), mean [95 % CI].",
            "",
            "| env | agent | setting | episodes to converge | CI | converged | cumulative regret | final value |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in records:
            lo, hi = r["episodes_to_converge_ci"]
            rlo, rhi = r["cumulative_regret_ci"]
            lines.append(
                f"| {r['env']} | {r['agent']} | {_setting(r['hyperparameters'])} | {_episodes(r['episodes_to_converge'], r['episodes'])}"
                f" | [{_fmt(lo)}, {_fmt(hi)}] | {r['converged_seeds']}/{r['seeds']} | {r['cumulative_regret']:.1f}"
                f" [{_fmt(rlo)}, {_fmt(rhi)}] | {r['final_normalized_value']:.3f} |"
            )
        planned = [r for r in records if "planning_on_data" in r]
        if planned:
            lines += [
                "",
                "## Certainty equivalence on each agent's own data",
                "",
                "Its greedy policy planned on the counts the agent had collected after each episode, scored alike.",
                "",
                "| env | agent | agent: episodes (converged) | CE on its data: episodes (converged) | final value: agent / CE |",
                "|---|---|---|---|---|",
            ]
            for r in planned:
                p = r["planning_on_data"]
                lines.append(
                    f"| {r['env']} | {r['agent']} | {_episodes(r['episodes_to_converge'], r['episodes'])}"
                    f" ({r['converged_seeds']}/{r['seeds']}) | {_episodes(p['episodes_to_converge'], r['episodes'])}"
                    f" ({p['converged_seeds']}/{r['seeds']}) | {r['final_normalized_value']:.3f} /"
                    f" {p['final_normalized_value']:.3f} |"
                )
        if any(len(r["grid"]) > 1 for r in records):
            lines += [
                "",
                "## Every grid setting",
                "",
                "| env | agent | setting | episodes to converge | converged | cumulative regret |",
                "|---|---|---|---|---|---|",
            ]
            for r in records:
                for s in r["grid"]:
                    lines.append(
                        f"| {r['env']} | {r['agent']} | {_setting(s['hyperparameters'])}"
                        f" | {_episodes(s['episodes_to_converge'], r['episodes'])} | {s['converged_seeds']}/{s['seeds']}"
                        f" | {s['cumulative_regret']:.1f} |"
                    )
    else:
        sizes = sorted({r["dataset_size"] for r in records})
        lines += [
            f"Normalised value of the greedy policy, mean ± std over seeds; behaviour `{metadata['protocol']['behaviour']}`.",
            "",
            "| env | agent | setting | " + " | ".join(str(s) for s in sizes) + " |",
            "|---|---|---|" + "---|" * len(sizes),
        ]
        groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        for r in records:
            groups.setdefault((r["env"], r["agent"]), {})[r["dataset_size"]] = r
        for (env, agent), by_size in groups.items():
            first = next(iter(by_size.values()))
            cells = [
                f"{by_size[s]['normalized_value_mean']:.2f} ± {by_size[s]['normalized_value_std']:.2f}"
                if s in by_size
                else "—"
                for s in sizes
            ]
            lines.append(
                f"| {env} | {agent} | {_setting(first['hyperparameters'])} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def _panels(count: int) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(count, 4)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False)
    flat = list(axes.flat)
    for axis in flat[count:]:
        axis.set_visible(False)
    return figure, flat[:count]


def plot_online(records: list[dict[str, Any]], path: Path) -> None:
    """Learning curves (normalised value of the greedy policy per episode, mean ± CI), one panel per env;
    dashed, certainty equivalence's on each agent's own counts where the run has them (``--plan-on-data``)."""
    envs = list(dict.fromkeys(r["env"] for r in records))
    figure, axes = _panels(len(envs))
    for axis, env in zip(axes, envs, strict=True):
        lowest = min(min(r["learning_curve"]["mean"]) for r in records if r["env"] == env)
        for r in (r for r in records if r["env"] == env):
            c = r["learning_curve"]
            episodes = range(1, len(c["mean"]) + 1)
            (line,) = axis.plot(episodes, c["mean"], label=r["agent"], linewidth=1.2)
            axis.fill_between(episodes, c["ci_low"], c["ci_high"], color=line.get_color(), alpha=0.2)
            if "planning_on_data" in r:  # CE on the agent's counts: dashed, in the agent's colour
                planned = r["planning_on_data"]["learning_curve"]["mean"]
                axis.plot(
                    episodes,
                    planned,
                    color=line.get_color(),
                    linestyle="--",
                    linewidth=1.0,
                    label=f"CE on {r['agent']}'s data",
                )
        axis.set_xscale("log")
        axis.set_ylim(max(min(-0.2, lowest), -2.0) - 0.05, 1.05)
        axis.axhline(0.95, color="grey", linestyle=":", linewidth=0.8)
        axis.set_title(env, fontsize=9)
        axis.set_xlabel("episode")
        axis.set_ylabel("normalised value")
        axis.legend(fontsize=7)
    _save(figure, path)


def plot_offline(records: list[dict[str, Any]], path: Path) -> None:
    """Normalised value against dataset size (log2 axis), mean ± CI, one panel per env."""
    envs = list(dict.fromkeys(r["env"] for r in records))
    figure, axes = _panels(len(envs))
    for axis, env in zip(axes, envs, strict=True):
        agents = list(dict.fromkeys(r["agent"] for r in records if r["env"] == env))
        for agent in agents:
            rows = sorted(
                (r for r in records if r["env"] == env and r["agent"] == agent),
                key=lambda r: r["dataset_size"],
            )
            sizes = [r["dataset_size"] for r in rows]
            mean = [r["normalized_value_mean"] for r in rows]
            low = [
                r["normalized_value_ci"][0] if r["normalized_value_ci"][0] is not None else m
                for r, m in zip(rows, mean, strict=True)
            ]
            high = [
                r["normalized_value_ci"][1] if r["normalized_value_ci"][1] is not None else m
                for r, m in zip(rows, mean, strict=True)
            ]
            (line,) = axis.plot(sizes, mean, marker="o", markersize=3, label=agent, linewidth=1.2)
            axis.fill_between(sizes, low, high, color=line.get_color(), alpha=0.2)
        axis.set_xscale("log", base=2)
        axis.set_title(env, fontsize=9)
        axis.set_xlabel("transitions in the dataset")
        axis.set_ylabel("normalised value")
        axis.legend(fontsize=7)
    _save(figure, path)


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
