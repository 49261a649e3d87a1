"""The evaluation protocols (online and offline, defined in the README) with exact policy evaluation, and
the ``rlfm benchmark`` command.

- :mod:`rlfm.evaluation.online`: episodes-to-converge and cumulative regret while the agent explores;
- :mod:`rlfm.evaluation.offline`: normalised value against dataset size for a fixed behaviour policy;
- :mod:`rlfm.evaluation.simulate`: batched environment stepping and exact, cached scoring;
- :mod:`rlfm.evaluation.report`: summaries, bootstrap intervals, ``results.json``, ``table.md``, plots;
- :mod:`rlfm.evaluation.command`: :func:`benchmark_main`, the command line.
"""

from __future__ import annotations

from rlfm.evaluation.command import benchmark_main
from rlfm.evaluation.offline import OfflineConfig, collect_datasets, run_offline
from rlfm.evaluation.online import OnlineConfig, OnlineRun, episodes_to_converge, run_online
from rlfm.evaluation.simulate import Scorer, Simulator

__all__ = [
    "OfflineConfig",
    "OnlineConfig",
    "OnlineRun",
    "Scorer",
    "Simulator",
    "benchmark_main",
    "collect_datasets",
    "episodes_to_converge",
    "run_offline",
    "run_online",
]
