import math

import pytest
import torch

import rlfm.agents
from rlfm.agents import CLASSICAL, agent_class, agent_names, make_agent
from rlfm.agents.base import per_run
from rlfm.agents.guard import evidence_scores, guarded_actions, reaches_unvisited
from rlfm.agents.planning import EmpiricalModel, untried_reach
from rlfm.benchmarks import get_benchmark
from rlfm.counts import Counts
from rlfm.evaluation.offline import OfflineConfig, collect_datasets, run_offline
from rlfm.evaluation.online import OnlineConfig, run_online
from rlfm.mdp import TabularMDP
from rlfm.solve import ActionLayout, evaluate_policy, optimal_values, start_values

MODEL_BASED = ("ucbvi", "ucbvi_bernstein", "psrl", "ce", "vi_lcb", "pevi")


def exact_counts(
    mdp: TabularMDP, visits: int = 1000, reward_factor: float = 1.0, unvisited: int | None = None
) -> Counts:
    """Counts whose P̂ and r̂ equal the true model in every non-terminal state (N(s,a,s') = visits·P), but
    for the pair ``unvisited``, never tried."""
    live = ~mdp.terminal[mdp.sa_state]
    if unvisited is not None:
        live[unvisited] = False
    sa_count = torch.where(live, visits, 0)
    edge_live = live[mdp.transition_sa]
    key = (mdp.transition_sa * mdp.num_states + mdp.transition_next)[edge_live]
    count = (mdp.transition_prob[edge_live] * visits).round().long()
    reward = mdp.reward * reward_factor
    return Counts(
        num_actions=mdp.num_actions,
        sa_count=sa_count,
        reward_sum=reward * sa_count,
        transition_key=key,
        transition_count=count,
        terminal=mdp.terminal.clone(),
        max_abs_reward=float(reward.abs().max()),
    )


def solved(agent_name: str, mdp: TabularMDP, counts: list[Counts], **hyperparameters) -> tuple:
    agent = make_agent(agent_name, **hyperparameters)
    agent.start(mdp.num_actions, mdp.gamma, len(counts), torch.Generator().manual_seed(0))
    return agent, agent.solve(EmpiricalModel.from_counts(counts, agent.layout))


# ------------------------------------------------------------------------------------------- registry
def test_registry_names_and_modes():
    assert set(CLASSICAL) == {
        "ucbvi",
        "ucbvi_bernstein",
        "qlearning",
        "psrl",
        "vi_lcb",
        "pevi",
        "ce",
        "random",
    }
    assert "qlearning" in agent_names("online") and "qlearning" not in agent_names("offline")
    assert "vi_lcb" in agent_names("offline") and "pevi" not in agent_names("online")
    assert repr(make_agent("ucbvi", c=0.3)) == "UCBVI(c=0.3, exploit=empirical)"
    with pytest.raises(KeyError, match="unknown agent"):
        make_agent("dqn")
    with pytest.raises(TypeError, match="no hyperparameter"):
        make_agent("vi_lcb", epsilon=0.1)


def test_rlfm_agent_is_a_lazy_import_with_a_clear_error(monkeypatch):
    monkeypatch.setitem(rlfm.agents.LAZY, "rlfm", "rlfm.agents.not_written_yet:InContextAgent")
    with pytest.raises(RuntimeError, match=r"needs the module rlfm\.agents\.not_written_yet"):
        make_agent("rlfm", checkpoint="x.ckpt")


def test_every_baseline_has_a_grid_containing_its_default():
    for name, cls in CLASSICAL.items():
        for key, values in cls.grid.items():
            assert cls.defaults[key] in values, (name, key)


def test_per_run_hyperparameters():
    assert per_run(0.3, 4).tolist() == [0.3] * 4
    assert per_run([0.1, 0.2], 2).tolist() == [0.1, 0.2]
    with pytest.raises(ValueError, match="3 values for 4 runs"):
        per_run([0.1, 0.2, 0.3], 4)


# --------------------------------------------------------------------------------------------- layout
def test_action_layout_with_different_action_counts():
    layout = ActionLayout(torch.tensor([2, 1, 3]))
    q = torch.tensor([[1.0, 3.0, 5.0, 2.0, 2.0, 0.0]])
    assert layout.state_max(q).tolist() == [[3.0, 5.0, 2.0]]
    priority = torch.tensor([[0.0, 0.0, 0.0, 0.1, 0.9, 0.5]])
    assert layout.greedy_actions(q, priority).tolist() == [[1, 0, 1]]  # the tie in state 2 goes to priority
    policy = layout.one_hot(torch.tensor([[1, 0, 1]]))
    assert policy.tolist() == [[0.0, 1.0, 1.0, 0.0, 1.0, 0.0]]
    assert layout.uniform(1)[0, 3:].tolist() == pytest.approx([1 / 3] * 3)


def test_empirical_model_unions_runs():
    mdp = get_benchmark("gridworld_3x3")
    a, b = Counts.empty_like(mdp), Counts.empty_like(mdp)
    a.update(0, 3, -1.0, 1)
    b.update(4, 1, -1.0, 7).update(4, 1, -1.0, 7)
    model = EmpiricalModel.from_counts([a, b], ActionLayout(mdp.num_actions))
    assert model.edge_sa.tolist() == [3, 36 + 17] and model.edge_next.tolist() == [1, 9 + 7]
    assert model.count[1, 17] == 2 and model.p_hat.tolist() == [1.0, 1.0]


# ------------------------------------------------------------------------------------ planning values
@pytest.mark.parametrize("name", ["gridworld_5x5", "frozenlake_4x4_slip02"])
def test_exact_counts_give_the_true_values(name):
    mdp = get_benchmark(name)
    q_star = optimal_values(mdp)[0]
    live = ~mdp.terminal[mdp.sa_state]
    counts = [exact_counts(mdp)]
    _, (q_ce, _) = solved("ce", mdp, counts)
    assert torch.allclose(q_ce[0, live], q_star[live], atol=1e-5)
    _, (q_ucb, _) = solved("ucbvi", mdp, counts, c=0.1)
    assert (q_ucb[0, live] >= q_star[live] - 1e-6).all()  # optimism
    _, (q_lcb, _) = solved("vi_lcb", mdp, counts, c=0.1)
    assert (q_lcb[0, live] <= q_star[live] + 1e-6).all()  # pessimism
    _, (_, q_mean) = solved("psrl", mdp, counts, prior=0.01)
    assert torch.allclose(q_mean[0, live], q_star[live], atol=0.05 * float(q_star.abs().max()))


def test_unvisited_pair_conventions():
    mdp = get_benchmark("gridworld_3x3")
    counts = [Counts.empty_like(mdp).update(0, 1, -1.0, 3)]
    vmax = 1.0 / (1 - mdp.gamma)  # observed reward scale 1
    _, (q_ucb, _) = solved("ucbvi", mdp, counts)
    assert torch.isinf(q_ucb[0, 0])  # optimistic: untried actions first
    bonus = vmax * math.sqrt(math.log(2 * 36 * 2 / 0.1))  # c V̂max sqrt(L / N), N = 1, t = 1
    assert q_ucb[0, 1] == pytest.approx(-1.0 + bonus + mdp.gamma * vmax)  # V capped at V̂max, Q is not
    _, (q_lcb, _) = solved("vi_lcb", mdp, counts)
    assert q_lcb[0, 0] == -vmax  # pessimistic
    _, (q_ce, _) = solved("ce", mdp, counts)
    assert q_ce[0, 0] == 0.0 and q_ce[0, 1] == pytest.approx(-1.0)  # neutral
    _, (q_pevi, _) = solved("pevi", mdp, counts, c=0.1)
    penalty = 0.1 * vmax * math.sqrt(math.log(2 * 36 * 2 / 0.1))  # c V̂max sqrt(L / (N + λ)), N = 0, λ = 1
    assert q_pevi[0, 0] == pytest.approx(-penalty)  # pessimistic through the ridge, no special case


@pytest.mark.parametrize("name", MODEL_BASED)
def test_policies_do_not_depend_on_the_reward_scale(name):
    mdp = get_benchmark("frozenlake_4x4_slip02")
    data = collect_datasets(mdp, 3, OfflineConfig(sizes=(200,)), torch.Generator().manual_seed(1))[0]
    scaled = [c.copy() for c in data]
    for c in scaled:
        c.reward_sum *= 10.0
        c.reward_sq_sum *= 100.0
        c.max_abs_reward *= 10.0
    policies = []
    for counts in (data, scaled):
        agent = make_agent(name)
        agent.start(mdp.num_actions, mdp.gamma, 3, torch.Generator().manual_seed(0))
        agent.plan(counts)
        states = torch.zeros(3, dtype=torch.long)
        policies.append((agent.greedy_policy(), agent.act(states)))
    assert torch.equal(policies[0][0], policies[1][0]) and torch.equal(policies[0][1], policies[1][1])


def test_qlearning_update_rule():
    mdp = get_benchmark("gridworld_3x3")
    agent = make_agent("qlearning", epsilon=0.0, alpha=0.5, optimism=0.0)
    agent.start(mdp.num_actions, mdp.gamma, 2, torch.Generator().manual_seed(0))
    states, actions = torch.tensor([0, 0]), torch.tensor([3, 3])
    agent.observe(
        states,
        actions,
        torch.tensor([-1.0, -1.0]),
        torch.tensor([1, 1]),
        torch.tensor([False, False]),
        torch.tensor([True, False]),
    )
    q = agent.q_values()
    assert q[0, 3] == pytest.approx(0.5 * (-1.0 + mdp.gamma * 0.0))  # Q += α (r + γ max Q' − Q)
    assert q[1, 3] == 0.0  # inactive run untouched
    optimistic = make_agent("qlearning", optimism=1.0)
    optimistic.start(mdp.num_actions, mdp.gamma, 1, torch.Generator().manual_seed(0))
    assert optimistic.q_values()[0, 0] == pytest.approx(1 / (1 - mdp.gamma))  # scale 1 before any reward


# -------------------------------------------------------------------------------- solving a grid world
@pytest.mark.parametrize("name", ["ucbvi", "ucbvi_bernstein", "psrl"])
def test_exploring_baselines_solve_gridworld_online(name):
    """Measured: every seed converged by episode 23; bound 40."""
    mdp = get_benchmark("gridworld_3x3")
    run = run_online(mdp, make_agent(name), 8, OnlineConfig(episodes=50), torch.Generator().manual_seed(0))
    episodes = run.episodes_to_converge(OnlineConfig())
    assert all(e is not None and e <= 40 for e in episodes), episodes
    assert (run.scores[:, -1] > 0.99).all()


def test_certainty_equivalence_mostly_solves_gridworld_online():
    """CE has no exploration guarantee: measured 7 or 8 of 8 seeds by episode 19; bound 6 of 8 by 40."""
    mdp = get_benchmark("gridworld_3x3")
    run = run_online(mdp, make_agent("ce"), 8, OnlineConfig(episodes=50), torch.Generator().manual_seed(0))
    episodes = run.episodes_to_converge(OnlineConfig())
    assert sum(e is not None and e <= 40 for e in episodes) >= 6, episodes


def test_qlearning_solves_gridworld_online_with_the_reference_setting():
    """ε = 0.1, α = 0.1, optimistic: measured median ≈ 350, max 394 episodes; bound: all by 700."""
    mdp = get_benchmark("gridworld_3x3")
    run = run_online(
        mdp, make_agent("qlearning"), 6, OnlineConfig(episodes=800), torch.Generator().manual_seed(0)
    )
    episodes = run.episodes_to_converge(OnlineConfig())
    assert all(e is not None and e <= 700 for e in episodes), episodes


@pytest.mark.parametrize("name", MODEL_BASED)
def test_offline_baselines_solve_gridworld_with_ample_uniform_data(name):
    mdp = get_benchmark("gridworld_3x3")
    data = collect_datasets(mdp, 6, OfflineConfig(sizes=(2048,)), torch.Generator().manual_seed(0))
    values = run_offline(mdp, make_agent(name), data, torch.Generator().manual_seed(1))
    assert (values >= 0.95).all(), values


def test_random_agent_scores_zero_and_acts_uniformly():
    mdp = get_benchmark("gridworld_3x3")
    agent = make_agent("random")
    agent.start(mdp.num_actions, mdp.gamma, 4000, torch.Generator().manual_seed(0))
    actions = agent.act(torch.zeros(4000, dtype=torch.long))
    assert torch.bincount(actions, minlength=4).min() > 900
    values = run_offline(mdp, agent, [[Counts.empty_like(mdp)]], torch.Generator().manual_seed(0))
    assert values.abs().max() < 1e-9


def test_grid_settings_run_as_one_batch():
    mdp = get_benchmark("gridworld_3x3")
    data = collect_datasets(mdp, 2, OfflineConfig(sizes=(64,)), torch.Generator().manual_seed(0))[0]
    _, (batched, _) = solved("vi_lcb", mdp, data * 2, c=[0.01, 0.01, 1.0, 1.0])
    alone = [solved("vi_lcb", mdp, data, c=c)[1][0] for c in (0.01, 1.0)]
    assert torch.allclose(batched, torch.cat(alone), atol=1e-9)
    assert agent_class("vi_lcb").vectorized


# ------------------------------------------------------------------------------------ consistency guard
def worst_actions(mdp: TabularMDP) -> torch.Tensor:
    """(1, S) each state's worst action under Q*."""
    layout = ActionLayout(mdp.num_actions)
    return layout.greedy_actions(-optimal_values(mdp)[0][None])


def ample_data_readout(readout: str, mdp: TabularMDP) -> torch.Tensor:
    """(1, S) the greedy actions of ``readout`` over the worst actions, with every pair visited 10⁷ times."""
    layout, worst = ActionLayout(mdp.num_actions), worst_actions(mdp)
    ample = [exact_counts(mdp, visits=10**7)]
    if readout == "guard":
        return guarded_actions(worst, ample, layout, mdp.gamma, strength=0.1)
    scores = evidence_scores(5.0 * layout.one_hot(worst), ample, layout, mdp.gamma, strength=1.0)
    return layout.greedy_actions(scores)


@pytest.mark.parametrize("readout", ["guard", "evidence"])
@pytest.mark.parametrize("name", ["gridworld_3x3", "frozenlake_4x4_slip02", "sixarms"])
def test_a_consistency_readout_plans_optimally_once_data_are_ample(readout, name):
    mdp = get_benchmark(name)
    actions = ample_data_readout(readout, mdp)
    policy = ActionLayout(mdp.num_actions).one_hot(actions)[0]
    assert torch.allclose(
        start_values(mdp, evaluate_policy(mdp, policy)), start_values(mdp, optimal_values(mdp)[1])
    )
    assert not torch.equal(actions, worst_actions(mdp))


def test_the_guard_keeps_the_given_actions_where_the_data_are_thin():
    mdp = get_benchmark("gridworld_3x3")  # deterministic: one visit per pair gives the exact model
    layout = ActionLayout(mdp.num_actions)
    worst = worst_actions(mdp)
    one_visit = [exact_counts(mdp, visits=1)]
    # one visit: the bonus (V̂max sqrt(L), c = 1) exceeds any gap of the values
    assert torch.equal(guarded_actions(worst, one_visit, layout, mdp.gamma, strength=1.0), worst)
    empty = [Counts.empty_like(mdp)]
    assert torch.equal(guarded_actions(worst, empty, layout, mdp.gamma, strength=1.0), worst)
    # a weak guard trusts even one visit of a deterministic world
    assert not torch.equal(guarded_actions(worst, one_visit, layout, mdp.gamma, strength=0.001), worst)
    with pytest.raises(ValueError, match="strength"):
        guarded_actions(worst, one_visit, layout, mdp.gamma, strength=0.0)


def test_the_guard_never_acts_on_values_an_unexplored_pair_can_change():
    mdp = get_benchmark("gridworld_3x3")  # every state reaches every other
    layout = ActionLayout(mdp.num_actions)
    worst = worst_actions(mdp)
    assert not mdp.terminal[0]
    one_gap = [exact_counts(mdp, visits=1, unvisited=0)]  # state 0's first action never tried
    # one visit of everything else, the weakest guard: its bounds would be sure, but the unseen pair could
    # hold any reward, and every pair that can come back to state 0 reaches it (all but the moves into
    # the goal, which ends the episode)
    unexplored = reaches_unvisited(EmpiricalModel.from_counts(one_gap, layout))[0]
    assert unexplored[:4].all() and not unexplored[-4:].any() and unexplored.sum() > layout.num_pairs // 2
    assert torch.equal(guarded_actions(worst, one_gap, layout, mdp.gamma, strength=0.001), worst)


def test_pairs_of_terminal_states_are_not_unexplored():
    mdp = get_benchmark("frozenlake_4x4_slip02")  # holes and goal end the episode: never tried
    layout = ActionLayout(mdp.num_actions)
    complete = EmpiricalModel.from_counts([exact_counts(mdp, visits=3)], layout)
    assert not reaches_unvisited(complete).any()
    assert reaches_unvisited(EmpiricalModel.from_counts([Counts.empty_like(mdp)], layout)).all()


def test_untried_reach_is_the_discount_to_the_power_of_the_steps_to_the_nearest_untried_pair():
    # a path 0 → 1 → 2 → 3 by action 1; action 0 tried only in state 2 (it stays), nothing in state 3;
    # state 4 was seen to end an episode
    counts = Counts.empty([2, 2, 2, 2, 2]).update(
        [0, 1, 2, 2, 1], [1, 1, 1, 0, 1], 0.0, [1, 2, 3, 2, 4], [0, 0, 0, 0, 1]
    )
    model = EmpiricalModel.from_counts([counts], ActionLayout(counts.num_actions))
    reach = untried_reach(model, 0.5)[0].view(5, 2)  # (state, action)
    # state 0's action 1 leads to state 1, whose action 0 is untried: 0.5; state 1's action 1 led once to 2
    # (best 0.5) and once to the terminal 4: 0.5 · (0.5 · 0.5 + 0.5 · 0); state 2's action 0 stays: 0.5 · 0.5
    expected = torch.tensor([[1.0, 0.5], [1.0, 0.125], [0.25, 0.5], [1.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(reach, expected.double())
    untried = untried_reach(model, 0.0)[0].view(5, 2)
    assert torch.equal(untried, (expected == 1.0).double())
    with pytest.raises(ValueError, match="discount"):
        untried_reach(model, 1.0)


def test_a_known_threshold_keeps_pairs_tried_fewer_than_m_times_unexplored():
    # state 0's action 0 tried three times (stays), action 1 once (→ 1); state 1 both actions twice (stay)
    counts = Counts.empty([2, 2]).update(
        [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0, 1, 1], 0.0, [0, 0, 0, 1, 1, 1, 1, 1]
    )
    model = EmpiricalModel.from_counts([counts], ActionLayout(counts.num_actions))
    assert not untried_reach(model, 0.5, known=1).any()  # everything tried once: nothing left
    # m = 2: state 0's action 1 (one try) is unknown; action 0 stays in state 0, so 0.5 · 1
    torch.testing.assert_close(untried_reach(model, 0.5, known=2)[0], torch.tensor([0.5, 1, 0, 0]).double())
    # m = 3: state 1's pairs too; state 0's action 1 is itself unknown
    torch.testing.assert_close(untried_reach(model, 0.5, known=3)[0], torch.tensor([0.5, 1, 1, 1]).double())
    assert torch.equal(untried_reach(model, 0.0, known=4)[0], torch.ones(4).double())
    with pytest.raises(ValueError, match="known"):
        untried_reach(model, 0.5, known=0)


# ------------------------------------------------------------------------------------ evidence readout
def test_the_evidence_readout_keeps_the_network_where_the_data_are_few_or_unexplored():
    mdp = get_benchmark("gridworld_3x3")
    layout = ActionLayout(mdp.num_actions)
    worst = worst_actions(mdp)
    logits = 5.0 * layout.one_hot(worst)  # the worst action 5 nats above the others
    for counts in ([Counts.empty_like(mdp)], [exact_counts(mdp, visits=1, unvisited=0)]):
        scores = evidence_scores(logits, counts, layout, mdp.gamma, strength=1000.0)
        assert torch.equal(layout.greedy_actions(scores), worst)  # nothing explored: the network's choice
    one_visit = [exact_counts(mdp, visits=1)]  # every pair once: the weight grows with κ
    weak = evidence_scores(logits, one_visit, layout, mdp.gamma, strength=0.01)
    strong = evidence_scores(logits, one_visit, layout, mdp.gamma, strength=1000.0)
    assert torch.equal(layout.greedy_actions(weak), worst)
    assert not torch.equal(layout.greedy_actions(strong), worst)
    with pytest.raises(ValueError, match="strength"):
        evidence_scores(logits, one_visit, layout, mdp.gamma, strength=0.0)
