import math

import pytest
import torch

from datamodules import PriorDataModule
from rlfm.benchmarks import BENCHMARKS, REPORTED_SUITES, SUITES, VALIDATION, get_benchmark, suite
from rlfm.benchmarks.classic import SIXARMS_REWARD, cliff_grid, walled_gridworld
from rlfm.benchmarks.validation import open_grid, same_mdp
from rlfm.mdp import TabularMDP
from rlfm.solve import ActionLayout, evaluate_policy, optimal_values, start_values, uniform_policy
from tests.conftest import DATA

SIZES = {  # name: (states, state-action pairs)
    "gridworld_3x3": (9, 36),
    "gridworld_5x5": (25, 100),
    "frozenlake_4x4_slip02": (16, 64),
    "frozenlake_4x4_slip067": (16, 64),
    "frozenlake_8x8_slip067": (64, 256),
    "cliffwalking": (48, 192),
    "taxi": (500, 3000),
    "riverswim": (6, 12),
    "sixarms": (7, 42),
    "nchain_5": (5, 10),
    "deepsea_10": (56, 112),
    "deepsea_20": (211, 422),
    "gridworld_walls_10x10": (77, 308),
    "gridworld_walls_20x20": (288, 1152),
    "garnet_50_5": (50, 200),
    "random_dense_20": (20, 60),
}


def optimal_actions(mdp: TabularMDP) -> torch.Tensor:
    q, _ = optimal_values(mdp)
    return mdp.sa_action[ActionLayout(mdp.num_actions).greedy_policy(q) > 0]


def optimal_start_value(mdp: TabularMDP) -> float:
    return float(start_values(mdp, optimal_values(mdp)[1]))


def test_registry_and_suites():
    assert set(SIZES) == set(BENCHMARKS)
    assert [m.name for m in suite("reference")] == ["gridworld_3x3", "gridworld_5x5", "frozenlake_4x4_slip02"]
    assert set(SUITES["reference"]) < set(SUITES["standard"]) == set(BENCHMARKS)
    assert all(name == name.lower() for name in BENCHMARKS)
    with pytest.raises(KeyError, match="unknown benchmark"):
        get_benchmark("gridworld_4x4")
    assert [m.name for m in suite("validation")] == list(VALIDATION)


def test_validation_mdps_are_in_no_reported_suite():
    """Choices are made on the validation MDPs, so none of them may be a reported benchmark."""
    reported = [get_benchmark(name) for suite_name in REPORTED_SUITES for name in SUITES[suite_name]]
    for name in VALIDATION:
        mdp = get_benchmark(name)
        assert name not in BENCHMARKS
        assert not any(same_mdp(mdp, other) for other in reported if other.num_states == mdp.num_states)
    assert not set(SUITES["validation"]) & (set(SUITES["reference"]) | set(SUITES["standard"]))
    with pytest.raises(ValueError, match="never used for validation"):
        PriorDataModule(val_benchmarks=("gridworld_5x5",))
    assert set(PriorDataModule().val_benchmarks) == set(VALIDATION)
    with pytest.raises(KeyError, match="unknown suite"):
        suite("everything")


def test_every_standard_mdp_is_valid_with_its_stated_size_and_discount():
    for mdp in suite("standard"):
        mdp.validate()
        assert (mdp.num_states, mdp.num_state_actions) == SIZES[mdp.name], mdp.name
        assert mdp.gamma in (0.95, 0.99)
        if mdp.name in SUITES["reference"]:
            assert mdp.gamma == 0.95
        uniform = float(start_values(mdp, evaluate_policy(mdp, uniform_policy(mdp))))
        assert optimal_start_value(mdp) > uniform + 1e-6, mdp.name  # the normaliser is positive


@pytest.mark.parametrize("name", SUITES["reference"])
def test_reference_benchmarks_match_the_published_arrays(name):
    ours, published = get_benchmark(name), TabularMDP.from_npz(DATA / f"{name}.npz")
    for a, b in zip(ours.to_dense(), published.to_dense(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(ours.terminal, published.terminal) and ours.gamma == published.gamma


def test_riverswim_optimal_policy_swims_right_and_starts_in_state_1_or_2():
    mdp = get_benchmark("riverswim")
    assert optimal_actions(mdp).tolist() == [1] * 6
    assert mdp.start.tolist() == [0.0, 0.5, 0.5, 0.0, 0.0, 0.0]
    P, R, _ = mdp.to_dense()
    assert R[0, 0] == 5.0 and R[5, 1] == pytest.approx(0.3 * 10_000)
    assert (
        P[2, 1, 3] == pytest.approx(0.3)
        and P[2, 1, 2] == pytest.approx(0.6)
        and P[2, 1, 1] == pytest.approx(0.1)
    )


def test_sixarms_best_room_is_the_hardest_to_enter():
    mdp = get_benchmark("sixarms")
    actions = optimal_actions(mdp)
    assert actions[0] == 5  # from the hub, try for room 6 (entered w.p. 0.01)
    P, R, _ = mdp.to_dense()
    assert P[0, 5, 6] == pytest.approx(0.01) and R[6, 5] == SIXARMS_REWARD[-1]
    assert R[1, 4] == 0 and P[1, 4, 0] == 1  # the one action leaving room 1


def test_cliff_grid_follows_cliffwalking_rules():
    mdp = cliff_grid(3, 7, gamma=0.9)
    P, R, _ = mdp.to_dense()
    start = int(mdp.start.argmax())
    assert mdp.num_states == 3 * 7 - 5 and mdp.terminal.sum() == 1
    assert (
        R[start, 3] == -100 and P[start, 3, start] == 1
    )  # right from the start: into the cliff, back to start
    _q, v = optimal_values(mdp)
    safe_path = 1 + 6 + 1  # up, along the edge of the cliff, down into the goal
    assert float(start_values(mdp, v)) == pytest.approx(-sum(0.9**k for k in range(safe_path)))


def test_nchain_optimal_policy_goes_forward():
    mdp = get_benchmark("nchain_5")
    assert optimal_actions(mdp).tolist() == [0] * 5
    P, R, _ = mdp.to_dense()
    assert P[4, 0, 4] == pytest.approx(0.8) and R[4, 0] == pytest.approx(0.8 * 10 + 0.2 * 2)


@pytest.mark.parametrize("size", [10, 20])
def test_deepsea_treasure_needs_the_all_right_path(size):
    mdp = get_benchmark(f"deepsea_{size}")
    assert int(mdp.terminal.sum()) == 1 and mdp.terminal[-1]
    gamma, cost = mdp.gamma, 0.01 / size
    expected = gamma ** (size - 1) - cost * sum(gamma**t for t in range(size))
    assert optimal_start_value(mdp) == pytest.approx(expected, rel=1e-6)
    assert float(mdp.reward.max()) == pytest.approx(1.0 - cost)  # only one pair pays


@pytest.mark.parametrize("name,distance", [("gridworld_walls_10x10", 18), ("gridworld_walls_20x20", 39)])
def test_walled_grids_goal_distance(name, distance):
    mdp = get_benchmark(name)
    assert optimal_start_value(mdp) == pytest.approx(mdp.gamma ** (distance - 1), rel=1e-6)


def test_walled_gridworld_walls_block_moves():
    mdp = walled_gridworld(("S#G", "..."), name="tiny")
    P, _, _ = mdp.to_dense()
    assert P[0, 3, 0] == 1  # right from S runs into the wall: stays
    assert optimal_start_value(mdp) == pytest.approx(mdp.gamma**3)


def test_random_families_are_outside_the_prior_shape():
    garnet = get_benchmark("garnet_50_5")
    successors = torch.bincount(garnet.transition_sa, minlength=garnet.num_state_actions)
    assert (successors == 5).all()
    assert float(garnet.reward.min()) >= 0 and float(garnet.reward.max()) <= 1
    dense = get_benchmark("random_dense_20")
    assert (torch.bincount(dense.transition_sa) == 20).all()  # every pair reaches every state
    assert torch.equal(get_benchmark("garnet_50_5").transition_prob, garnet.transition_prob)  # seeded


def test_gymnasium_benchmarks():
    lake = get_benchmark("frozenlake_4x4_slip067")
    P = lake.to_dense()[0]
    assert P[14, 2, 15] == pytest.approx(1 / 3) and lake.gamma == 0.99
    taxi = get_benchmark("taxi")
    assert math.isclose(float(taxi.start.sum()), 1.0) and int((taxi.start > 0).sum()) == 300


def test_the_open_grid_starts_everywhere_but_the_goal_and_is_planned_over_its_diagonal():
    mdp = open_grid(4, gamma=0.9, name="open_grid_4x4")
    assert mdp.num_states == 16 and int(mdp.terminal.sum()) == 1
    assert float(mdp.start[mdp.terminal].sum()) == 0.0
    torch.testing.assert_close(mdp.start[~mdp.terminal], torch.full((15,), 1 / 15, dtype=torch.float64))
    _, values = optimal_values(mdp)
    assert float(values[0]) == pytest.approx(0.9**5)  # six moves from the far corner, the last one paid 1
