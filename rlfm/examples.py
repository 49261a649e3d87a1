"""Training examples: an MDP from the prior, experience from that MDP, and the target policy.

One call builds a whole batch so that value iteration and experience sampling run once over the batch's
disjoint union; each example is an observation graph (:func:`rlfm.graph.observation_graph`) carrying
``state_action.target`` = softmax(Q* / (scale·τ)) of its true MDP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Generator
from torch_geometric.data import Batch, HeteroData

from rlfm.experience import ExperienceConfig, sample_experience
from rlfm.graph import TARGET_TEMPERATURE, mdp_graph, observation_graphs
from rlfm.mdp import TabularMDP
from rlfm.prior import Prior
from rlfm.solve import optimal_and_uniform_start_values, optimal_values

TARGET_TOLERANCE = 1e-4  # value-iteration accuracy of Q* for targets (rewards are at most 1)


@dataclass
class ExampleSampler:
    """Samples training examples.

    Args:
        prior: the MDP prior.
        experience: how experience is drawn.
        temperature: τ of the Boltzmann target softmax(Q* / τ), on the normalised reward scale
            (default :data:`rlfm.graph.TARGET_TEMPERATURE`).
        planner_columns: give the examples the planners' feature columns (False: the count columns only,
            enough for a network without planner inputs, and faster).
    """

    prior: Prior = field(default_factory=Prior)
    experience: ExperienceConfig = field(default_factory=ExperienceConfig)
    temperature: float = TARGET_TEMPERATURE
    planner_columns: bool = True

    def sample_mdps(self, count: int, generator: Generator) -> list[TabularMDP]:
        return [self.prior.sample(generator) for _ in range(count)]

    def examples_for(self, mdps: list[TabularMDP], generator: Generator) -> list[HeteroData]:
        """One training example per MDP."""
        truth = Batch.from_data_list([mdp_graph(m) for m in mdps])
        q_star, _ = optimal_values(truth, tol=TARGET_TOLERANCE)
        counts = sample_experience(truth, q_star, self.experience, generator)
        q_per_mdp = list(q_star.split([m.num_state_actions for m in mdps]))
        gammas = [m.gamma for m in mdps]
        return observation_graphs(counts, gammas, q_per_mdp, self.temperature, planner=self.planner_columns)

    def sample(self, count: int, generator: Generator) -> list[HeteroData]:
        return self.examples_for(self.sample_mdps(count, generator), generator)


def with_truth(
    examples: list[HeteroData], mdps: list[TabularMDP], source: str
) -> list[tuple[HeteroData, HeteroData]]:
    """Pair each example with its true MDP graph for exact scoring.

    The truth graph caches ``optimal_start_value`` V*(s0) and ``uniform_start_value`` V^unif(s0) (1,), and the
    example gets ``source``, the name its validation metrics are reported under.
    """
    truth = [mdp_graph(m) for m in mdps]
    batch = Batch.from_data_list(truth)
    optimal, uniform = optimal_and_uniform_start_values(batch)
    for example, graph, v_star, v_uniform in zip(examples, truth, optimal, uniform, strict=True):
        graph.optimal_start_value = v_star.reshape(1)
        graph.uniform_start_value = v_uniform.reshape(1)
        example.source = source
    return list(zip(examples, truth, strict=True))
