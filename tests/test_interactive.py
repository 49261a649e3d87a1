"""The step-by-step agents (rlfm.interactive), the gymnasium adapter and `rlfm solve` (rlfm.environments)."""

import json
import subprocess
import sys

import gymnasium as gym
import pytest
import torch

import rlfm
from rlfm.cli import main
from rlfm.environments import DiscreteEnv, run_episodes
from rlfm.graph import CE_ADVANTAGE, observation_graph
from rlfm.interactive import RandomAgent
from rlfm.network import PolicyNetwork
from rlfm.pretrained import predict


class Corridor(gym.Env):
    """States 0 .. L-1 in a row, start at 0; action 1 steps right, 0 left; reaching L-1 pays 1 and ends."""

    def __init__(self, length: int = 8) -> None:
        self.length = length
        self.observation_space = gym.spaces.Discrete(length)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return 0, {}

    def step(self, action):
        self.position = min(self.length - 1, max(0, self.position + (1 if action == 1 else -1)))
        done = self.position == self.length - 1
        return self.position, float(done), done, False, {}


def tiny_network() -> PolicyNetwork:
    torch.manual_seed(0)
    return PolicyNetwork(width=16, heads=2, num_layers=3).eval()


def test_rlfm_agent_learns_the_corridor():
    env = DiscreteEnv(Corridor(8))
    agent = rlfm.InContextAgent(8, 2, gamma=0.95, seed=0)
    run = run_episodes(env, agent, 20, max_steps=20, seed=0)
    floor = run_episodes(env, RandomAgent(8, 2, seed=0), 20, max_steps=20, seed=0)
    assert sum(run.returns[-10:]) >= 9 > sum(floor.returns[-10:])  # reaches the goal, random mostly does not
    assert [agent.greedy_action(s) for s in range(7)] == [1] * 7  # its exploitation policy walks right
    assert agent.plans == agent.episodes == 20  # one network call per episode
    assert agent.counts.num_observed == agent.steps == sum(run.lengths)


def test_qlearning_agent_learns_the_corridor():
    env = DiscreteEnv(Corridor(5))
    agent = rlfm.QLearningAgent(5, 2, gamma=0.9, alpha=0.5, seed=0)
    run = run_episodes(env, agent, 60, max_steps=30, seed=0)
    assert sum(run.returns[-10:]) == 10 and max(run.lengths[-10:]) <= 10
    assert [agent.greedy_action(s) for s in range(4)] == [1] * 4
    assert agent.q.shape == (10,)


def test_plans_refresh_at_episode_ends_and_every_n_steps():
    agent = rlfm.InContextAgent(3, [1, 2, 3], gamma=0.9, network=tiny_network(), num_layers=2, seed=0)
    uniform = agent.policy.clone()
    assert agent.plans == 0 and torch.allclose(
        uniform, torch.tensor([1, 1 / 2, 1 / 2, 1 / 3, 1 / 3, 1 / 3], dtype=torch.float64)
    )
    agent.observe(0, 0, 1.0, 1)
    agent.observe(1, 1, 0.0, 2)
    assert agent.plans == 0  # no plan within an episode
    agent.end_episode()
    assert agent.plans == 1 and agent.episodes == 1 and not torch.equal(agent.policy, uniform)
    agent.end_episode()  # nothing new: no second call
    assert agent.plans == 1 and agent.episodes == 1
    agent.observe(2, 2, -1.0, 0, terminated=True)  # ends the episode by itself
    assert agent.plans == 2 and agent.episodes == 2
    agent.observe(0, 0, 0.0, 1, truncated=True)
    assert agent.plans == 3 and agent.counts.num_observed == 4 and bool(agent.counts.terminal[0])

    every = rlfm.InContextAgent(3, 2, gamma=0.9, network=tiny_network(), num_layers=2, replan_every=2)
    for step in range(5):
        every.observe(step % 3, 1, 0.0, (step + 1) % 3)
    assert every.plans == 2
    every.end_episode()
    assert every.plans == 3


def test_actions_stay_in_each_states_range_and_temperature_sharpens():
    agent = rlfm.InContextAgent(3, [1, 2, 3], gamma=0.9, network=tiny_network(), seed=0)
    for state, allowed in ((0, 1), (1, 2), (2, 3)):
        assert {agent.act(state) for _ in range(60)} == set(range(allowed))
    agent.policy = agent.acting_policy = torch.tensor([1.0, 0.3, 0.7, 0.2, 0.5, 0.3], dtype=torch.float64)
    cold = rlfm.InContextAgent(3, [1, 2, 3], gamma=0.9, network=tiny_network(), temperature=0.01, seed=0)
    cold.policy = cold.acting_policy = agent.policy
    assert {cold.act(2) for _ in range(100)} == {1} and agent.greedy_action(2) == 1
    assert {agent.act(2) for _ in range(100)} == {0, 1, 2}


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda a: a.observe(3, 0, 0.0, 0), "state must be an integer in"),
        (lambda a: a.observe(0, 1, 0.0, 0), "action 1 is out of range in state 0"),
        (lambda a: a.observe(0, 0, float("nan"), 0), "reward must be a finite"),
        (lambda a: a.act(-1), "state must be an integer"),
    ],
)
def test_bad_input_is_a_clear_error(call, match):
    agent = rlfm.QLearningAgent(3, [1, 2, 3], gamma=0.9)
    with pytest.raises(ValueError, match=match):
        call(agent)
    with pytest.raises(ValueError, match="temperature"):
        rlfm.InContextAgent(3, 2, temperature=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        rlfm.QLearningAgent(3, 2, epsilon=1.5)


def test_adapter_refuses_spaces_that_are_not_discrete():
    with pytest.raises(ValueError, match="Box, not Discrete"):
        DiscreteEnv.make("CartPole-v1")
    with pytest.raises(ValueError, match="no usable gymnasium environment 'Nope-v0'"):
        DiscreteEnv.make("Nope-v0")


def test_solve_on_frozenlake_writes_returns_and_a_plot(tmp_path, capsys):
    out = tmp_path / "lake"
    argv = ["solve", "--env", "FrozenLake-v1", "--episodes", "4", "--out", str(out), "--no-progress"]
    assert main([*argv, "--agents", "rlfm,qlearning,random"]) == 0
    table = capsys.readouterr().out
    assert "| rlfm |" in table and "| qlearning |" in table and "mean return, last 1 episodes" in table
    results = json.loads((out / "returns.json").read_text())
    assert results["env"] == {"id": "FrozenLake-v1", "states": 16, "actions": 4}
    assert results["command"].startswith("rlfm solve --env FrozenLake-v1")
    assert {"machine", "versions", "wall_time_s"} <= set(results)
    rlfm_run = results["agents"]["rlfm"]
    assert (
        len(rlfm_run["returns"]) == 4 and rlfm_run["network_calls"] == 4 and max(rlfm_run["lengths"]) <= 100
    )
    assert (out / "learning_curve.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--env", "CartPole-v1"], "Box, not Discrete"),
        (["--env", "Nope-v0"], "doesn't exist"),
        (["--env", "Taxi-v4", "--agents", "ucbvi"], "unknown agent 'ucbvi'"),
        (["--env", "Taxi-v4", "--episodes", "0"], "--episodes must be at least 1"),
    ],
)
def test_solve_bad_input_is_one_line_and_exit_2(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["solve", *flags, "--out", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("rlfm solve: error:") and message in err and err.count("\n") == 1


def test_python_m_rlfm_is_the_rlfm_command():
    done = subprocess.run(
        [sys.executable, "-m", "rlfm", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "solve" in done.stdout and "benchmark" in done.stdout


def test_a_value_head_network_sets_the_agents_greedy_actions():
    torch.manual_seed(0)  # untrained heads whose argmaxes differ on this data
    network = PolicyNetwork(width=16, heads=2, num_layers=2, value_head=True, greedy_from="value").eval()
    agent = rlfm.InContextAgent(6, 3, gamma=0.9, network=network, seed=0)
    for step in range(30):
        agent.observe(step % 6, step % 3, float(step % 5 == 0), (step * 7 + 1) % 6)
    agent.end_episode()
    values = predict(agent.counts, 0.9, network).greedy_scores
    by_value = [int(values.view(6, 3)[s].argmax()) for s in range(6)]
    by_policy = [int(agent.policy.view(6, 3)[s].argmax()) for s in range(6)]
    assert [agent.greedy_action(s) for s in range(6)] == by_value != by_policy


def test_a_count_only_network_with_a_residual_value_head_is_handed_the_planner_columns():
    torch.manual_seed(0)  # untrained: the residual head adds zero, so the greedy scores are CE's advantages
    network = PolicyNetwork(
        width=16, heads=2, num_layers=2, planner_inputs=False, value_head=True, value_residual=True
    ).eval()
    agent = rlfm.InContextAgent(6, 3, gamma=0.9, network=network, seed=0)
    for step in range(30):
        agent.observe(step % 6, step % 3, float(step % 5 == 0), (step * 7 + 1) % 6)
    agent.end_episode()
    ce_advantage = observation_graph(agent.counts, 0.9, planner=True)["state_action"].x[:, CE_ADVANTAGE]
    torch.testing.assert_close(predict(agent.counts, 0.9, network).greedy_scores, ce_advantage.float())
    by_ce = [int(ce_advantage.view(6, 3)[s].argmax()) for s in range(6)]
    assert [agent.greedy_action(s) for s in range(6)] == by_ce
