"""The uniformly random agent: the zero of the normalised value, for reference."""

from __future__ import annotations

from torch import Generator, Tensor

from rlfm.agents.base import Agent
from rlfm.solve import ActionLayout


class RandomAgent(Agent):
    """Acts uniformly at random; its exploitation policy is the uniform policy (normalised value 0)."""

    name = "random"
    uses_counts = False

    def start(self, num_actions: Tensor, gamma: float, runs: int, generator: Generator) -> None:
        self.num_actions, self.gamma, self.runs, self.generator = num_actions, float(gamma), runs, generator
        self.layout = ActionLayout(num_actions)

    def act(self, states: Tensor) -> Tensor:
        return self.layout.random_actions(states, self.generator)

    def greedy_policy(self) -> Tensor:
        return self.layout.uniform(self.runs)
