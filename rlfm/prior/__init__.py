"""The synthetic prior over MDPs: a weighted mixture of families, each a pure function of a generator.

>>> import torch
>>> prior = Prior()
>>> mdp = prior.sample(torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Generator

from rlfm.mdp import TabularMDP
from rlfm.prior.bandits import BanditPrior
from rlfm.prior.chains import ChainPrior
from rlfm.prior.deepsea import DeepSeaPrior
from rlfm.prior.distributions import choice, log_uniform
from rlfm.prior.gridworld import GridWorldPrior
from rlfm.prior.hubs import HubPrior
from rlfm.prior.reference import ReferencePrior

FAMILIES = ("reference", "gridworld", "chain", "deepsea", "bandit", "hub")


@dataclass
class Prior:
    """A mixture of MDP families with a shared discount range.

    Args:
        weights: mixture weight of each family (names in ``FAMILIES``; zero or absent: never drawn).
        horizon: range of the effective horizon 1 / (1 - γ), drawn log-uniformly (γ = 0.95 is 20).
        reference, gridworld, chain, deepsea, bandit, hub: each family's own settings.
    """

    weights: dict[str, float] = field(
        default_factory=lambda: {
            "reference": 0.5,
            "gridworld": 0.2,
            "chain": 0.15,
            "deepsea": 0.1,
            "bandit": 0.05,
        }
    )
    horizon: tuple[float, float] = (10.0, 50.0)
    reference: ReferencePrior = field(default_factory=ReferencePrior)
    gridworld: GridWorldPrior = field(default_factory=GridWorldPrior)
    chain: ChainPrior = field(default_factory=ChainPrior)
    deepsea: DeepSeaPrior = field(default_factory=DeepSeaPrior)
    bandit: BanditPrior = field(default_factory=BanditPrior)
    hub: HubPrior = field(default_factory=HubPrior)

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown prior families {sorted(unknown)}; choose from {FAMILIES}")
        if not any(w > 0 for w in self.weights.values()):
            raise ValueError("at least one prior family needs a positive weight")
        low, high = self.horizon
        if not 1.0 < low <= high:
            raise ValueError(f"horizon range must satisfy 1 < low <= high, got {self.horizon}")

    def sample_gamma(self, generator: Generator) -> float:
        return 1.0 - 1.0 / float(log_uniform(*self.horizon, generator))

    def sample(self, generator: Generator) -> TabularMDP:
        family = choice(self.weights, generator)
        return getattr(self, family).sample(generator, self.sample_gamma(generator))


def reference_prior() -> Prior:
    """The published reference's prior exactly: its random family only, γ = 0.95."""
    return Prior(weights={"reference": 1.0}, horizon=(20.0, 20.0))


__all__ = [
    "FAMILIES",
    "BanditPrior",
    "ChainPrior",
    "DeepSeaPrior",
    "GridWorldPrior",
    "HubPrior",
    "Prior",
    "ReferencePrior",
    "reference_prior",
]
