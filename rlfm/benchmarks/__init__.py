"""Held-out benchmark MDPs and the suites of ``rlfm benchmark``.

>>> from rlfm.benchmarks import get_benchmark, suite
>>> get_benchmark("riverswim").num_states
6
>>> [mdp.name for mdp in suite("reference")]
['gridworld_3x3', 'gridworld_5x5', 'frozenlake_4x4_slip02']

Every MDP's ``name`` is its registry name. Discounts: 0.95 for the reference three, otherwise as stated in
each builder's docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from rlfm.benchmarks.classic import (
    deepsea,
    garnet,
    nchain,
    random_dense,
    riverswim,
    sixarms,
    walls_10x10,
    walls_20x20,
)
from rlfm.benchmarks.gym_envs import cliffwalking, frozenlake, taxi
from rlfm.benchmarks.reference import frozenlake_style, gridworld
from rlfm.benchmarks.validation import VALIDATION
from rlfm.mdp import TabularMDP

BENCHMARKS: dict[str, Callable[[], TabularMDP]] = {
    "gridworld_3x3": partial(gridworld, 3),
    "gridworld_5x5": partial(gridworld, 5),
    "frozenlake_4x4_slip02": frozenlake_style,
    "frozenlake_4x4_slip067": partial(frozenlake, "4x4"),
    "frozenlake_8x8_slip067": partial(frozenlake, "8x8"),
    "cliffwalking": cliffwalking,
    "taxi": taxi,
    "riverswim": riverswim,
    "sixarms": sixarms,
    "nchain_5": nchain,
    "deepsea_10": partial(deepsea, 10),
    "deepsea_20": partial(deepsea, 20),
    "gridworld_walls_10x10": walls_10x10,
    "gridworld_walls_20x20": walls_20x20,
    "garnet_50_5": garnet,
    "random_dense_20": random_dense,
}
"""The reported benchmarks: builders by name; each call builds a fresh MDP."""

SUITES: dict[str, tuple[str, ...]] = {
    "reference": ("gridworld_3x3", "gridworld_5x5", "frozenlake_4x4_slip02"),
    "standard": tuple(BENCHMARKS),
    "validation": tuple(VALIDATION),
}
"""``reference`` and ``standard`` are for reporting; ``validation`` is for choosing and tuning and shares no
MDP with them (:mod:`rlfm.benchmarks.validation`)."""
REPORTED_SUITES = ("reference", "standard")


def get_benchmark(name: str) -> TabularMDP:
    """The benchmark (or validation) MDP called ``name`` (see :data:`BENCHMARKS` and :data:`VALIDATION`)."""
    builder = BENCHMARKS.get(name) or VALIDATION.get(name)
    if builder is None:
        raise KeyError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS) + sorted(VALIDATION)}")
    return builder()


def suite(name: str) -> list[TabularMDP]:
    """The MDPs of the suite ``name``: ``reference`` (the published three), ``standard`` (all reported
    benchmarks) or ``validation`` (for tuning only)."""
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; choose from {sorted(SUITES)}")
    return [get_benchmark(benchmark) for benchmark in SUITES[name]]


__all__ = ["BENCHMARKS", "REPORTED_SUITES", "SUITES", "VALIDATION", "get_benchmark", "suite"]
