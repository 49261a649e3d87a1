import gymnasium as gym
import numpy as np
import pytest
import torch

from rlfm.benchmarks.reference import frozenlake_style, gridworld
from rlfm.mdp import TabularMDP
from tests.conftest import DATA, random_dense_mdp


def test_dense_round_trip(generator):
    P, R = random_dense_mdp(generator, 7, 3)
    mdp = TabularMDP.from_dense(P, R, gamma=0.9, start=2)
    P2, R2, mask = mdp.to_dense()
    assert torch.allclose(P2, P) and torch.allclose(R2, R) and mask.all()
    assert mdp.num_states == 7 and mdp.num_state_actions == 21
    assert mdp.start.tolist() == [0, 0, 1, 0, 0, 0, 0]


def test_per_state_action_counts(generator):
    P, R = random_dense_mdp(generator, 4, 3)
    mdp = TabularMDP.from_dense(P, R, num_actions=[1, 3, 2, 3])
    assert mdp.num_state_actions == 9
    assert mdp.action_ptr.tolist() == [0, 1, 4, 6, 9]
    assert mdp.sa_state.tolist() == [0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert mdp.sa_action.tolist() == [0, 0, 1, 2, 0, 1, 0, 1, 2]
    assert int(mdp.sa_index(2, 1)) == 5


def test_from_transitions_sums_duplicates():
    mdp = TabularMDP.from_transitions([2], [0, 0, 1, 0], [0, 0, 0, 0], [0.25, 0.75, 1.0, 0.0], [1.0, 2.0])
    assert mdp.transition_sa.tolist() == [0, 1]
    assert mdp.transition_prob.tolist() == [1.0, 1.0]


def test_terminal_states_become_absorbing(generator):
    P, R = random_dense_mdp(generator, 5, 2)
    with pytest.raises(
        ValueError, match="terminal state 3 is not absorbing"
    ):  # declared data is not rewritten
        TabularMDP.from_dense(P, R, terminal=[3])
    s, a, t = torch.nonzero(P, as_tuple=True)
    mdp = TabularMDP.from_transitions([2] * 5, s * 2 + a, t, P[s, a, t], R.flatten(), terminal=[3])
    P2, R2, _ = mdp.to_dense()
    assert torch.equal(P2[3, :, 3], torch.ones(2)) and torch.equal(R2[3], torch.zeros(2))
    assert mdp.terminal.tolist() == [False, False, False, True, False]


def test_npz_round_trip(tmp_path, generator):
    P, R = random_dense_mdp(generator, 6, 2)
    P[5], P[5, :, 5], R[5] = 0.0, 1.0, 0.0  # a declared terminal state must be absorbing already
    mdp = TabularMDP.from_dense(P, R, gamma=0.8, terminal=[5], num_actions=[2, 2, 1, 2, 2, 2])
    mdp.save_npz(tmp_path / "m.npz")
    back = TabularMDP.from_npz(tmp_path / "m.npz")
    assert back.gamma == pytest.approx(0.8)
    assert torch.equal(back.num_actions, mdp.num_actions) and torch.equal(back.terminal, mdp.terminal)
    assert torch.allclose(back.transition_prob, mdp.transition_prob) and torch.allclose(
        back.reward, mdp.reward
    )


@pytest.mark.parametrize(
    "name,builder",
    [
        ("gridworld_3x3", lambda: gridworld(3)),
        ("gridworld_5x5", lambda: gridworld(5)),
        ("frozenlake_4x4_slip02", frozenlake_style),
    ],
)
def test_reference_benchmarks_match_published_arrays(name, builder):
    published = TabularMDP.from_npz(DATA / f"{name}.npz")
    built = builder()
    for a, b in zip(published.to_dense(), built.to_dense(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(published.terminal, built.terminal)  # absorbing states are detected in the file


@pytest.mark.parametrize(
    "env_id,kwargs,S,A,terminals",
    [
        ("FrozenLake-v1", {}, 16, 4, 5),
        ("FrozenLake-v1", {"map_name": "8x8"}, 64, 4, 11),
        ("CliffWalking-v1", {}, 48, 4, 1),
        ("Taxi-v4", {}, 500, 6, 4),
    ],
)
def test_gymnasium_conversion(env_id, kwargs, S, A, terminals):
    mdp = TabularMDP.from_gymnasium(gym.make(env_id, **kwargs), gamma=0.99)
    assert mdp.num_states == S and mdp.max_actions == A and mdp.num_state_actions == S * A
    assert int(mdp.terminal.sum()) == terminals
    assert mdp.gamma == 0.99
    mdp.validate()


def test_gymnasium_frozenlake_dynamics():
    mdp = TabularMDP.from_gymnasium(gym.make("FrozenLake-v1"))
    P, R, _ = mdp.to_dense()
    # from state 14, "right" (action 2 in gymnasium) reaches the goal 15 w.p. 1/3: reward 1/3 in expectation
    assert P[14, 2, 15] == pytest.approx(1 / 3) and R[14, 2] == pytest.approx(1 / 3)
    assert mdp.terminal[15] and mdp.terminal[5] and not mdp.terminal[0]


# ---------------------------------------------------------------------------------------- bad input
def dense_ok():
    P = torch.zeros(3, 2, 3, dtype=torch.float64)
    P[:, :, 0] = 1.0
    return P, torch.zeros(3, 2, dtype=torch.float64)


def test_rows_not_summing_to_one():
    P, R = dense_ok()
    P[1, 0, 0] = 0.7
    with pytest.raises(ValueError, match=r"P\(\. \| s=1, a=0\) sums to 0.7, not 1"):
        TabularMDP.from_dense(P, R)


def test_negative_probability():
    P, R = dense_ok()
    P[2, 1, 1] = -0.5
    with pytest.raises(ValueError, match="negative probability"):
        TabularMDP.from_dense(P, R)


def test_nan_values():
    P, R = dense_ok()
    P[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        TabularMDP.from_dense(P, R)
    P, R = dense_ok()
    R[1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"reward r\(s=1, a=1\) is not finite"):
        TabularMDP.from_dense(P, R)


def test_index_out_of_range():
    with pytest.raises(ValueError, match="next_state holds the index 5, but there are 2 states"):
        TabularMDP.from_transitions([1, 1], [0, 1], [5, 0], [1.0, 1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="start holds the index 9"):
        TabularMDP.from_dense(*dense_ok(), start=9)


def test_state_without_action():
    P, R = dense_ok()
    with pytest.raises(ValueError, match=r"state 1 has no action \(num_actions\[1\] = 0\)"):
        TabularMDP.from_dense(P, R, num_actions=[2, 0, 2])


@pytest.mark.parametrize("gamma", [0.0, 1.0, 1.5, -0.1])
def test_gamma_outside_unit_interval(gamma):
    with pytest.raises(ValueError, match="gamma must lie in \\(0, 1\\)"):
        TabularMDP.from_dense(*dense_ok(), gamma=gamma)


def test_bad_shapes_and_files(tmp_path):
    with pytest.raises(ValueError, match=r"P must have shape \(S, A, S\)"):
        TabularMDP.from_dense(torch.ones(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"R must have shape \(S, A\)"):
        TabularMDP.from_dense(dense_ok()[0], torch.zeros(3))
    np.savez(tmp_path / "bad.npz", P=np.ones((2, 1, 2)) / 2)
    with pytest.raises(ValueError, match=r"lacks the arrays \['R'\]"):
        TabularMDP.from_npz(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        TabularMDP.from_npz(tmp_path / "missing.npz")


def test_start_distribution_and_terminal_checks():
    with pytest.raises(ValueError, match=r"start distribution sums to 0\.5"):
        TabularMDP.from_dense(*dense_ok(), start=torch.tensor([0.5, 0.0, 0.0]))
    mdp = TabularMDP.from_dense(*dense_ok())
    with pytest.raises(ValueError, match="terminal state 1 is not absorbing"):
        TabularMDP(
            mdp.num_actions,
            mdp.transition_sa,
            mdp.transition_next,
            mdp.transition_prob,
            mdp.reward,
            mdp.start,
            0.9,
            torch.tensor([False, True, False]),
        )
