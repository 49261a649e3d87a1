"""Agents for ``rlfm benchmark``: the classical baselines and, lazily, the rlfm in-context agent.

>>> from rlfm.agents import make_agent
>>> make_agent("ucbvi", c=0.3)
UCBVI(c=0.3, exploit=empirical)

Every agent follows :class:`~rlfm.agents.base.Agent` (batched over runs, same counts, no privileged
information). ``make_agent("rlfm", checkpoint=...)`` imports
``rlfm.agents.incontext.BatchedInContextAgent`` on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from rlfm.agents.base import Agent
from rlfm.agents.certainty import CertaintyEquivalence
from rlfm.agents.optimistic import UCBVI, UCBVIBernstein
from rlfm.agents.pessimistic import PEVI, VILCB
from rlfm.agents.posterior import PSRL
from rlfm.agents.qlearning import QLearning
from rlfm.agents.uniform import RandomAgent

CLASSICAL: dict[str, type[Agent]] = {
    cls.name: cls
    for cls in (UCBVI, UCBVIBernstein, QLearning, PSRL, VILCB, PEVI, CertaintyEquivalence, RandomAgent)
}
"""The classical baselines by registry name."""

LAZY: dict[str, str] = {"rlfm": "rlfm.agents.incontext:BatchedInContextAgent"}
"""Agents imported on first use, as ``module:class``."""

AGENT_NAMES: tuple[str, ...] = (*CLASSICAL, *LAZY)


def agent_class(name: str) -> type[Agent]:
    """The class registered as ``name``."""
    if name in CLASSICAL:
        return CLASSICAL[name]
    if name not in LAZY:
        raise KeyError(f"unknown agent {name!r}; choose from {list(AGENT_NAMES)}")
    module_name, class_name = LAZY[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise RuntimeError(
            f"the {name!r} agent needs the module {module_name}, which is not available in this installation"
        ) from error
    return getattr(module, class_name)


def make_agent(name: str, **hyperparameters: Any) -> Agent:
    """Build the agent ``name`` with ``hyperparameters`` (see each class; the rlfm agent takes ``checkpoint``)."""
    return agent_class(name)(**hyperparameters)


def agent_names(mode: str | None = None) -> list[str]:
    """Classical agents taking part in ``mode`` (``"online"`` or ``"offline"``), or all of them."""
    return [name for name, cls in CLASSICAL.items() if mode is None or mode in cls.modes]


__all__ = ["AGENT_NAMES", "CLASSICAL", "LAZY", "Agent", "agent_class", "agent_names", "make_agent"]
