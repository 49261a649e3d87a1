import pytest
import torch

from rlfm.prior import FAMILIES, Prior, ReferencePrior, reference_prior
from rlfm.solve import optimal_values, start_values


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_yields_valid_mdps(family):
    prior = Prior(weights={family: 1.0}, horizon=(10, 100))
    for seed in range(25):
        mdp = prior.sample(torch.Generator().manual_seed(seed))
        mdp.validate()  # rows sum to 1, indices in range, terminal states absorbing, ...
        assert 0.9 - 1e-9 <= mdp.gamma <= 0.99 + 1e-9
        assert (mdp.num_actions >= 1).all()
        assert float(mdp.start.sum()) == pytest.approx(1.0)


def test_sampling_is_a_pure_function_of_the_generator():
    a = Prior().sample(torch.Generator().manual_seed(7))
    b = Prior().sample(torch.Generator().manual_seed(7))
    for field in ("num_actions", "transition_sa", "transition_next", "transition_prob", "reward"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert a.gamma == b.gamma


def test_reference_family_follows_its_definition():
    prior = reference_prior()
    sizes, degrees = [], []
    for seed in range(200):
        mdp = prior.sample(torch.Generator().manual_seed(seed))
        assert mdp.gamma == pytest.approx(0.95)
        assert 2 <= mdp.num_states <= 32 and 2 <= mdp.max_actions <= 4
        assert bool((mdp.num_actions == mdp.num_actions[0]).all())  # one A per MDP
        assert (mdp.reward.abs() <= 1).all()
        sizes.append(mdp.num_states)
        degrees.append(torch.bincount(mdp.transition_sa, minlength=mdp.num_state_actions))
    degree = torch.cat(degrees)
    assert int(degree.max()) <= 6 and int(degree.min()) >= 1
    assert (degree == 1).float().mean() > (degree == 6).float().mean()  # P(k) ∝ 1/k
    assert min(sizes) == 2 and max(sizes) > 20


def test_wide_reference_family_reaches_large_sizes_and_mixed_action_counts():
    wide = ReferencePrior(
        min_states=500, max_states=1000, min_actions=2, max_actions=8, per_state_actions=1.0
    )
    mdp = wide.sample(torch.Generator().manual_seed(0), gamma=0.9)
    mdp.validate()
    assert 500 <= mdp.num_states <= 1000
    assert 2 <= int(mdp.num_actions.min()) < int(mdp.num_actions.max()) <= 8
    assert mdp.num_transitions <= 6 * mdp.num_state_actions  # sparse: never S²·A


def test_mixture_weights_select_families():
    prior = Prior(weights={"chain": 1.0, "bandit": 0.0})
    names = {prior.sample(torch.Generator().manual_seed(s)).name for s in range(30)}
    assert names <= {"riverswim", "chain", "lock"} and len(names) == 3
    with pytest.raises(ValueError, match="unknown prior families"):
        Prior(weights={"mazes": 1.0})


def test_structured_families_have_their_defining_features():
    g = torch.Generator().manual_seed(3)
    grid = Prior(weights={"gridworld": 1.0}).sample(g)
    assert grid.max_actions == 4 and grid.terminal.any()  # goals are absorbing
    sea = Prior(weights={"deepsea": 1.0}).sample(g)
    _q, v = optimal_values(sea)
    assert float(start_values(sea, v)) > 0  # the treasure is worth the cost of reaching it
    bandit = Prior(weights={"bandit": 1.0}).sample(g)
    assert bandit.num_states == 1 and bandit.reward_noise >= 0


def test_shortest_path_grids_pay_only_by_ending_the_episode():
    from rlfm.prior.gridworld import GridWorldPrior

    plain, shortest = GridWorldPrior(), GridWorldPrior(shortest_path=1.0)
    for seed in range(20):
        a = plain.sample(torch.Generator().manual_seed(seed), gamma=0.95)
        b = shortest.sample(torch.Generator().manual_seed(seed), gamma=0.95)
        assert a.reward.max() > 0  # a goal pays 1
        pays = b.reward.view(-1, 4)  # (S, 4)
        assert (pays[~b.terminal] < 0).all()  # every step costs, entering a goal included
        assert b.terminal.any()  # goals (and absorbing traps) end the episode
        _q, v = optimal_values(b)
        assert float(start_values(b, v)) > float(b.reward.min()) / (1 - b.gamma)  # heads for a goal
    # off (the default), the option draws nothing and reads nothing: the grids do not depend on its settings
    a = GridWorldPrior().sample(torch.Generator().manual_seed(5), gamma=0.9)
    b = GridWorldPrior(shortest_path_cost=(0.5, 0.9)).sample(torch.Generator().manual_seed(5), gamma=0.9)
    assert torch.equal(a.reward, b.reward)
    with pytest.raises(ValueError, match="shortest_path must be a probability"):
        GridWorldPrior(shortest_path=1.5)
    with pytest.raises(ValueError, match="positive costs"):
        GridWorldPrior(shortest_path_cost=(0.0, 0.1))


def test_hub_doors_open_rarely_and_the_rarest_can_hide_the_best_room():
    prior = Prior(weights={"hub": 1.0})
    rare_and_best = 0
    for seed in range(40):
        mdp = prior.sample(torch.Generator().manual_seed(seed))
        A = mdp.max_actions
        assert mdp.num_states == A + 1 and int(mdp.start.argmax()) == 0
        door = mdp.transition_next[mdp.transition_sa < A]  # the hub's transitions
        assert set(door.tolist()) <= set(range(A + 1))
        success = torch.zeros(A, dtype=torch.float64).index_add_(
            0,
            mdp.transition_sa[(mdp.transition_sa < A) & (mdp.transition_next > 0)],
            mdp.transition_prob[(mdp.transition_sa < A) & (mdp.transition_next > 0)],
        )
        room_reward = mdp.reward[A:].view(A, A).max(dim=1).values  # (room,) what staying pays
        assert float(room_reward.max()) == pytest.approx(1.0) and (room_reward > 0).all()
        assert (mdp.reward[:A] == 0).all()  # trying a door pays nothing
        rare_and_best += int(success.argmin() == room_reward.argmax())
    assert rare_and_best >= 15  # half of the hubs put the largest reward behind the rarest door
