import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlfm.agents.dominance import dominant_actions, novelty_concentration, unseen_mass
from rlfm.agents.incontext import BatchedInContextAgent
from rlfm.agents.planning import EmpiricalModel
from rlfm.benchmarks.reference import gridworld
from rlfm.cli import main
from rlfm.counts import Counts
from rlfm.evaluation.offline import OfflineConfig, collect_datasets
from rlfm.network import PolicyNetwork
from rlfm.pretrained import export, load_network
from rlfm.solve import ActionLayout, normalized_value

GAMMA = 0.9
END = torch.tensor([[0] * 12])  # the network's plan: end the episode at once from state 0


def world(stochastic: bool = False, visits: int = 20) -> Counts:
    """12 states, 2 actions. State 0 ends the episode at a cost of 1.5 (action 0, tried ``visits`` times) or
    moves to state 1 at 0.1 (action 1, once), from where the goal 2 costs 0.1 more (once): CE's plan, worth
    -0.19. State 3 is a trap (-1 per step forever); states 4 … 11 end the episode at -1, or with
    ``stochastic`` half of their tries fall into the trap instead. Every pair but state 1's is tried
    ``visits`` times."""
    counts = Counts.empty([2] * 12)
    counts.update([0] * visits, [0] * visits, -1.5, [2] * visits, True)
    counts.update([0, 1, 1], [1, 1, 0], -0.1, [1, 2, 0], [False, True, False])
    counts.update([3] * 2 * visits, [0, 1] * visits, -1.0, [3] * 2 * visits)
    for state in range(4, 12):
        for action in (0, 1):
            ends = [2, 3] * (visits // 2) if stochastic else [2] * visits
            counts.update([state] * visits, [action] * visits, -1.0, ends, [s == 2 for s in ends])
    return counts


def model_of(*counts: Counts) -> EmpiricalModel:
    return EmpiricalModel.from_counts(list(counts), ActionLayout(counts[0].num_actions))


def test_the_concentration_is_the_upper_end_of_what_revisits_allow():
    assert (
        float(novelty_concentration(model_of(Counts.empty([2, 2, 2]).update(0, 0, 0.0, 1)))[0]) == torch.inf
    )
    few = Counts.empty([2, 2, 2]).update([0] * 4, [0] * 4, 0.0, [1] * 4)  # 3 revisits prove nothing
    assert float(novelty_concentration(model_of(few))[0]) == torch.inf
    quiet, noisy = (float(novelty_concentration(model_of(world(s)))[0]) for s in (False, True))
    assert 0 < quiet < 0.1 < noisy < torch.inf  # a deterministic world's is small
    rewards = Counts.empty([2, 2, 2]).update([0] * 40, [0] * 40, [0.0, 1.0] * 20, [1] * 40)
    assert float(novelty_concentration(model_of(rewards))[0]) > float(
        novelty_concentration(model_of(Counts.empty([2, 2, 2]).update([0] * 40, [0] * 40, 0.0, [1] * 40)))[0]
    )  # one successor, but rewards that varied


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(2, 60), st.integers(1, 3)), min_size=1, max_size=6))
def test_the_fitted_concentration_solves_its_moment_equation(pairs: list[tuple[int, int]]):
    counts = Counts.empty([1] * len(pairs) + [1, 1, 1])
    for sa, (visits, outcomes) in enumerate(pairs):
        successors = [len(pairs) + i % outcomes for i in range(visits)]
        counts.update([sa] * visits, [0] * visits, 0.0, successors)
    alpha = float(novelty_concentration(model_of(counts))[0])
    novel = sum(min(k, n) - 1 for n, k in pairs)
    bound = novel + 2 * novel**0.5 + 3
    if bound >= sum(n - 1 for n, _ in pairs):
        assert alpha == torch.inf
    else:
        expected = sum(sum(alpha / (alpha + i) for i in range(n)) - 1 for n, _ in pairs)
        assert expected == pytest.approx(bound, rel=1e-6)


def test_the_unseen_mass_adds_the_seen_frequencies_noise():
    spread = Counts.empty([2, 2, 2]).update([0] * 8, [0] * 8, 0.0, [0, 1] * 4)
    model = model_of(spread)
    mass = unseen_mass(model, torch.tensor([0.5], dtype=torch.float64))[0]
    assert float(mass[0]) == pytest.approx(0.5 / 8.5 + 2 * (0.25 / 8) ** 0.5)
    assert bool((mass[1:] == 1).all())  # untried
    single = model_of(Counts.empty([2, 2, 2]).update([0] * 8, [0] * 8, 0.0, [1] * 8))
    assert float(unseen_mass(single, torch.tensor([0.5], dtype=torch.float64))[0, 0]) == pytest.approx(
        0.5 / 8.5
    )


def test_a_deterministic_world_trusts_a_path_tried_once():
    layout = ActionLayout(torch.tensor([2] * 12))
    chosen = dominant_actions(END, [world()], layout, GAMMA)
    assert chosen[0, :2].tolist() == [1, 1]  # CE's plan: state 0 → 1 → the goal


def test_doubt_keeps_the_network_policy():
    layout = ActionLayout(torch.tensor([2] * 12))
    # in a world seen to be stochastic the path tried once may lead into the trap
    assert torch.equal(dominant_actions(END, [world(stochastic=True)], layout, GAMMA), END)
    # a network heading for untried pairs may expect more there than any reward observed: state 0 pays 1
    # per step forever (CE's plan, the best observed reward at once) or leads to state 1, never tried
    hopeful = Counts.empty([2] * 12)
    hopeful.update([0] * 80, [0] * 40 + [1] * 40, [1.0] * 40 + [0.0] * 40, [0] * 40 + [1] * 40)
    for state in range(4, 12):  # many revisits that repeated themselves: a deterministic world
        hopeful.update([state] * 80, [0, 1] * 40, -1.0, [2] * 80, True)
    heading = torch.tensor([[1] + [0] * 11])
    assert torch.equal(dominant_actions(heading, [hopeful], layout, GAMMA), heading)


def test_an_agent_with_the_dominance_switch_acts_as_before_and_exploits_ample_data():
    mdp = gridworld(3)
    data = collect_datasets(mdp, 2, OfflineConfig(sizes=(4096,)), torch.Generator().manual_seed(0))[0]
    agents = []
    for dominance in (False, True):
        torch.manual_seed(0)
        network = PolicyNetwork(width=16, heads=2, num_layers=3)
        agent = BatchedInContextAgent(network=network, dominance=dominance, handoff=0)
        agent.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
        agent.plan(data)
        agents.append(agent)
    plain, switched = agents
    assert torch.equal(plain.logits, switched.logits)
    for run in range(2):
        assert float(normalized_value(mdp, plain.greedy_policy()[run])) < 0.99  # an untrained network
        assert float(normalized_value(mdp, switched.greedy_policy()[run])) == pytest.approx(1.0)
    assert switched.hyperparameters()["dominance"] and "dominance" not in plain.hyperparameters()


def test_a_networks_file_carries_its_default_dominance_switch(tmp_path):
    path = export("default", tmp_path / "switching.pt", dominance=True)
    assert load_network(str(path)).greedy_dominance
    assert BatchedInContextAgent(checkpoint=str(path)).dominance
    assert not BatchedInContextAgent(checkpoint=str(path), dominance=False).dominance
    assert not BatchedInContextAgent(checkpoint="planner").dominance
    assert main(["export", "default", str(tmp_path / "off.pt"), "--dominance", "no"]) == 0
    assert torch.load(tmp_path / "off.pt", weights_only=True)["config"]["greedy_dominance"] is False
    with pytest.raises(SystemExit, match="2"):
        main(["export", "default", str(tmp_path / "bad.pt"), "--dominance", "maybe"])
