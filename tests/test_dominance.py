import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlfm.agents.dominance import bounded_values, dominant_actions, novelty_concentration, unseen_mass
from rlfm.agents.holdout import ce_actions
from rlfm.agents.incontext import BatchedInContextAgent
from rlfm.agents.planning import EmpiricalModel
from rlfm.benchmarks.reference import gridworld
from rlfm.cli import main
from rlfm.counts import Counts
from rlfm.evaluation.offline import OfflineConfig, collect_datasets
from rlfm.network import PolicyNetwork
from rlfm.pretrained import export, load_network
from rlfm.solve import ActionLayout, evaluate_policy, normalized_value

GAMMA = 0.9
LOOP = torch.tensor([[0, 0, 0]])  # a policy that stays in state 0


def corridor(slippery: bool = False) -> Counts:
    """State 0 loops on itself (action 0, cost 0.5 per step, tried 5 times) or moves on to state 1 (action 1,
    tried once); state 1 moves on to the goal 2, which ends the episode (action 1, once) or back (action 0,
    once). Every other step costs 1. ``slippery``: two more tries of state 1's action 0, one of which
    slipped."""
    counts = Counts.empty([2, 2, 2])
    counts.update([0] * 5, [0] * 5, -0.5, [0] * 5)
    counts.update([0, 1, 1], [1, 1, 0], -1.0, [1, 2, 0], [False, True, False])
    if slippery:
        counts.update([1, 1], [0, 0], -1.0, [2, 0])
    return counts


def model_of(*counts: Counts) -> EmpiricalModel:
    return EmpiricalModel.from_counts(list(counts), ActionLayout(counts[0].num_actions))


def test_the_concentration_reads_how_often_revisits_revealed_something_new():
    assert float(novelty_concentration(model_of(corridor()))[0]) == 0.0  # revisits always repeated
    single = Counts.empty([2, 2, 2]).update(0, 0, 0.0, 1)
    assert float(novelty_concentration(model_of(single))[0]) == torch.inf  # nothing revisited
    spread = Counts.empty([2, 2, 2]).update([0] * 6, [0] * 6, 0.0, [0, 1, 2, 0, 1, 2])
    model = model_of(spread)
    alpha = float(novelty_concentration(model)[0])
    expected = sum(alpha / (alpha + i) for i in range(6))  # E[K | N = 6, α] = 3 outcomes seen
    assert expected == pytest.approx(3.0, abs=1e-6)
    mass = unseen_mass(model, novelty_concentration(model))[0]
    noise = 6**-0.5  # the world is stochastic: the seen frequencies' sampling noise counts too
    assert float(mass[0]) == pytest.approx(alpha / (alpha + 6) + noise) and bool((mass[1:] == 1).all())
    assert float(unseen_mass(model_of(corridor()), torch.zeros(1))[0, 0]) == 0.0  # deterministic: none
    rewards = Counts.empty([2, 2, 2]).update([0] * 4, [0] * 4, [0.0, 1.0, 0.0, 1.0], [1] * 4)
    assert float(novelty_concentration(model_of(rewards))[0]) > 0  # one successor, rewards that varied


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(2, 30), st.integers(1, 3)), min_size=1, max_size=6))
def test_the_fitted_concentration_matches_the_outcomes_seen(pairs: list[tuple[int, int]]):
    counts = Counts.empty([1] * len(pairs) + [1, 1, 1])
    for sa, (visits, outcomes) in enumerate(pairs):
        successors = [len(pairs) + i % outcomes for i in range(visits)]
        counts.update([sa] * visits, [0] * visits, 0.0, successors)
    alpha = float(novelty_concentration(model_of(counts))[0])
    seen = sum(min(k, n) for n, k in pairs)
    if seen == len(pairs):
        assert alpha == 0.0
    elif seen == sum(n for n, _ in pairs):  # every visit was new
        assert alpha == torch.inf
    else:
        expected = sum(sum(alpha / (alpha + i) for i in range(n)) for n, _ in pairs)
        assert expected == pytest.approx(seen, rel=1e-6)


def test_with_no_unseen_mass_the_bounds_are_the_empirical_values():
    model = model_of(corridor())
    actions = torch.tensor([[[1, 1, 0]], [[1, 1, 0]]])
    low, high = bounded_values(model, actions, GAMMA, torch.tensor([False, True]))
    path = model.layout.one_hot(torch.tensor([[1, 1, 0]]))[0]
    assert torch.allclose(low, high) and torch.allclose(low[0], evaluate_policy(model.arrays(GAMMA), path))


def test_a_network_walking_in_a_loop_beside_a_seen_path_is_replaced_by_planning():
    chosen = dominant_actions(LOOP, [corridor()], ActionLayout(torch.tensor([2, 2, 2])), GAMMA)
    assert chosen[0, :2].tolist() == [1, 1]


def test_doubt_keeps_the_network_policy():
    layout = ActionLayout(torch.tensor([2, 2, 2]))
    # in a slippery world the path tried once may lead anywhere, as bad as a step can be forever
    assert torch.equal(dominant_actions(LOOP, [corridor(slippery=True)], layout, GAMMA), LOOP)
    # a network heading for untried pairs may expect more there than any reward observed: state 0 pays 1
    # per step forever (the largest reward seen, so CE's plan is worth V_+ at once) or leads to state 1,
    # which nobody has tried; V_+ alone would call the network's plan worse (0 + γ V_+ < V_+)
    hopeful = Counts.empty([2, 2, 2]).update(
        [0] * 10, [0] * 5 + [1] * 5, [1.0] * 5 + [0.0] * 5, [0] * 5 + [1] * 5
    )
    heading = torch.tensor([[1, 0, 0]])
    assert torch.equal(dominant_actions(heading, [hopeful], layout, GAMMA), heading)
    model = model_of(hopeful)
    values = bounded_values(
        model, torch.stack([ce_actions(model, GAMMA), heading]), GAMMA, torch.tensor([False, True])
    )
    assert float(values[0, 0, 0]) > float(values[1, 0, 0])  # what the untried rule protects against


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
