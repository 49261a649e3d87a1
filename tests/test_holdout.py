import pytest
import torch

from rlfm.agents.holdout import ce_actions, holdout_actions, reaches_untried
from rlfm.agents.incontext import BatchedInContextAgent
from rlfm.agents.planning import EmpiricalModel
from rlfm.benchmarks.reference import gridworld
from rlfm.counts import Counts
from rlfm.evaluation.offline import OfflineConfig, collect_datasets
from rlfm.network import PolicyNetwork
from rlfm.solve import ActionLayout, evaluate_policy, normalized_value

GAMMA = 0.9


def two_rooms(tried_everywhere: bool = True, visits: int = 40) -> Counts:
    """State 0 leads to room 1 (action 0) or room 2 (action 1); room 1 pays 1 per step for staying (action 0),
    room 2 pays 0.1; each room's action 1 pays nothing. Room 2's action 1 is untried unless told."""
    counts = Counts.empty([2, 2, 2])
    for state, action, reward, successor in (
        (0, 0, 0.0, 1),
        (0, 1, 0.0, 2),
        (1, 0, 1.0, 1),
        (1, 1, 0.0, 1),
        (2, 0, 0.1, 2),
        (2, 1, 0.0, 2),
    ):
        if (state, action) != (2, 1) or tried_everywhere:
            counts.update([state] * visits, [action] * visits, reward, [successor] * visits)
    return counts


def network(actions: list[int]):
    """A stand-in for the network: the same greedy actions on any counts."""
    return lambda counts: torch.tensor([actions] * len(counts))


def test_the_model_arrays_value_a_policy_as_certainty_equivalence_does():
    counts = two_rooms(tried_everywhere=False)
    layout = ActionLayout(counts.num_actions)
    arrays = EmpiricalModel.from_counts([counts], layout).arrays(GAMMA)
    stay = layout.one_hot(torch.tensor([[1, 0, 0]]))[0]
    values = evaluate_policy(arrays, stay)
    assert torch.allclose(
        values,
        torch.tensor([GAMMA * 0.1 / (1 - GAMMA), 1 / (1 - GAMMA), 0.1 / (1 - GAMMA)], dtype=torch.float64),
    )
    untried = layout.one_hot(torch.tensor([[1, 0, 1]]))[0]  # room 2's untried action: worth 0, ends there
    assert float(evaluate_policy(arrays, untried)[2]) == 0.0


def test_a_policy_reaches_untried_pairs_only_along_its_own_actions():
    counts = two_rooms(tried_everywhere=False)
    model = EmpiricalModel.from_counts([counts], ActionLayout(counts.num_actions))
    assert reaches_untried(model, torch.tensor([[1, 0, 1]])).tolist() == [[True, False, True]]
    assert not reaches_untried(model, torch.tensor([[1, 0, 0]])).any()
    assert not reaches_untried(model, torch.tensor([[0, 0, 1]]))[0, :2].any()


def test_held_out_data_replace_a_worse_network_policy_by_certainty_equivalence():
    counts = two_rooms()
    layout = ActionLayout(counts.num_actions)
    assert ce_actions(EmpiricalModel.from_counts([counts], layout), GAMMA).tolist() == [[0, 0, 0]]
    worse = torch.tensor([[1, 0, 0]])  # heads for the room that pays 0.1
    chosen = holdout_actions(
        network([1, 0, 0]), worse, [counts], layout, GAMMA, torch.Generator().manual_seed(0)
    )
    assert chosen.tolist() == [[0, 0, 0]]


def test_the_network_keeps_its_policy_when_it_is_as_good_or_heads_for_untried_pairs():
    layout = ActionLayout(torch.tensor([2, 2, 2]))
    same = torch.tensor([[0, 0, 0]])
    kept = holdout_actions(network([0, 0, 0]), same, [two_rooms()], layout, GAMMA, torch.Generator())
    assert kept.tolist() == same.tolist()
    hoping = torch.tensor([[1, 0, 1]])  # to room 2, then its untried action: a bet no data can check
    counts = two_rooms(tried_everywhere=False)
    kept = holdout_actions(network([1, 0, 1]), hoping, [counts], layout, GAMMA, torch.Generator())
    assert kept.tolist() == hoping.tolist()


def test_runs_are_selected_independently():
    runs = [two_rooms(), two_rooms(tried_everywhere=False)]
    layout = ActionLayout(runs[0].num_actions)
    actions = torch.tensor([[1, 0, 1], [1, 0, 1]])
    chosen = holdout_actions(
        network([1, 0, 1]), actions, runs, layout, GAMMA, torch.Generator().manual_seed(3)
    )
    assert chosen.tolist() == [[0, 0, 0], [1, 0, 1]]


def test_with_little_data_the_network_keeps_its_choice():
    mdp = gridworld(3)
    layout = ActionLayout(mdp.num_actions)
    data = collect_datasets(mdp, 4, OfflineConfig(sizes=(4,)), torch.Generator().manual_seed(0))[0]
    actions = torch.zeros(4, mdp.num_states, dtype=torch.long)
    assert torch.equal(
        holdout_actions(network([0] * 9), actions, data, layout, GAMMA, torch.Generator()), actions
    )


def test_an_agent_with_held_out_selection_acts_as_before_and_exploits_ample_data():
    mdp = gridworld(3)
    data = collect_datasets(mdp, 2, OfflineConfig(sizes=(4096,)), torch.Generator().manual_seed(0))[0]
    agents = []
    for holdout in (False, True):
        torch.manual_seed(0)
        agent = BatchedInContextAgent(network=PolicyNetwork(width=16, heads=2, num_layers=3), holdout=holdout)
        agent.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
        agent.plan(data)
        agents.append(agent)
    plain, selected = agents
    assert torch.equal(plain.logits, selected.logits)
    states = torch.tensor([0, 4])
    assert torch.equal(
        torch.stack([plain.act(states) for _ in range(20)]),
        torch.stack([selected.act(states) for _ in range(20)]),
    )
    for run in range(2):
        assert float(normalized_value(mdp, plain.greedy_policy()[run])) < 0.99  # an untrained network
        assert float(normalized_value(mdp, selected.greedy_policy()[run])) == pytest.approx(1.0)
    assert selected.hyperparameters()["holdout"] and "holdout" not in plain.hyperparameters()
    with pytest.raises(ValueError, match="choose one"):
        BatchedInContextAgent(
            network=PolicyNetwork(width=16, heads=2, num_layers=3), holdout=True, guard=0.01
        )
