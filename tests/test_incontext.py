import pytest
import torch

from rlfm.agents import make_agent
from rlfm.agents.incontext import BatchedInContextAgent
from rlfm.agents.planning import EmpiricalModel, untried_reach
from rlfm.benchmarks.reference import gridworld
from rlfm.counts import Counts
from rlfm.evaluation.offline import OfflineConfig, collect_datasets
from rlfm.interactive import InContextAgent
from rlfm.mdp import TabularMDP
from rlfm.network import PolicyNetwork
from rlfm.pretrained import PACKAGED_CHECKPOINT, export, load_network, predict_policy
from rlfm.solve import ActionLayout, normalized_value
from rlfm.speed.inference import greedy_path, grid_counts


def small_agent(**kwargs) -> BatchedInContextAgent:
    torch.manual_seed(0)
    return BatchedInContextAgent(network=PolicyNetwork(width=16, heads=2, num_layers=3), **kwargs)


def test_policies_respect_each_states_actions():
    P = torch.zeros(3, 3, 3, dtype=torch.float64)
    P[:, :, 0] = 1.0
    mdp = TabularMDP.from_dense(P, torch.zeros(3, 3), num_actions=[1, 3, 2])
    agent = small_agent(num_layers=4)
    agent.start(mdp.num_actions, mdp.gamma, runs=5, generator=torch.Generator().manual_seed(0))
    counts = [Counts.empty_like(mdp) for _ in range(5)]
    counts[1].update(1, 2, 1.0, 0)
    agent.plan(counts)
    for state, allowed in ((0, 1), (1, 3), (2, 2)):
        actions = torch.cat([agent.act(torch.full((5,), state)) for _ in range(40)])
        assert int(actions.min()) >= 0 and int(actions.max()) < allowed
    greedy = agent.greedy_policy()
    assert greedy.shape == (5, 6)
    blocks = torch.stack([greedy[:, :1].sum(1), greedy[:, 1:4].sum(1), greedy[:, 4:].sum(1)], dim=1)
    assert torch.equal(blocks, torch.ones(5, 3, dtype=torch.float64))
    assert agent.layers_used == [4]


def test_sampling_follows_the_temperature():
    mdp = gridworld(3)
    cold, hot = small_agent(temperature=0.01), small_agent(temperature=100.0)
    for agent in (cold, hot):
        agent.start(mdp.num_actions, mdp.gamma, runs=1, generator=torch.Generator().manual_seed(1))
        agent.plan([Counts.empty_like(mdp)])
    logits = torch.zeros(400, 36, dtype=torch.float64)
    logits[:, 2] = 1.0  # state 0 prefers "left"
    cold.logits, hot.logits = logits, logits
    states = torch.zeros(400, dtype=torch.long)
    assert set(cold.act(states).tolist()) == {2}  # nearly greedy
    assert set(hot.act(states).tolist()) == {0, 1, 2, 3}  # nearly uniform
    with pytest.raises(ValueError, match="temperature"):
        small_agent(temperature=0.0)


def test_an_episode_committed_agent_keeps_one_action_per_state_until_the_next_episode():
    mdp = gridworld(3)
    committed, stepwise = small_agent(episode_commit=True), small_agent()
    for agent in (committed, stepwise):
        agent.start(mdp.num_actions, mdp.gamma, runs=50, generator=torch.Generator().manual_seed(1))
        agent.plan([Counts.empty_like(mdp)] * 50)  # no data: every action is likely in every state
    states = torch.arange(50) % mdp.num_states
    first = committed.act(states)
    assert all(torch.equal(committed.act(states), first) for _ in range(5))  # the same within an episode
    assert not all(torch.equal(stepwise.act(states), stepwise.act(states)) for _ in range(5))
    committed.plan([Counts.empty_like(mdp)] * 50)  # the next episode draws afresh
    again = committed.act(states)
    assert not torch.equal(again, first)
    assert len(set(again[states == 0].tolist())) > 1  # independently per run
    assert committed.hyperparameters()["episode_commit"] is True


def test_a_bootstrapped_agent_acts_on_resampled_counts_and_reads_greedy_from_the_counts():
    mdp = gridworld(3)
    data = Counts.empty_like(mdp).update([0, 1, 2, 5, 4, 4], [1, 1, 3, 3, 2, 1], 0.5, [1, 2, 5, 8, 3, 5])
    booted, plain = small_agent(bootstrap=True), small_agent()
    for agent in (booted, plain):
        agent.start(mdp.num_actions, mdp.gamma, runs=4, generator=torch.Generator().manual_seed(1))
        agent.plan([data.copy() for _ in range(4)])
    assert torch.equal(booted.greedy_scores, plain.greedy_scores)  # the greedy policy reads the counts
    assert not torch.allclose(booted.logits, plain.logits)  # the actions read a resampled dataset
    assert not torch.allclose(booted.logits[0], booted.logits[1])  # one resample per run
    assert booted.hyperparameters()["bootstrap"] is True


def test_the_shipped_agent_plans_with_the_diameter_depth_rule_when_asked():
    mdp = gridworld(5)
    data = collect_datasets(mdp, 2, OfflineConfig(sizes=(200,)), torch.Generator().manual_seed(0))[0]
    agents = {rule: make_agent("rlfm", depth_rule=rule) for rule in (None, "diameter")}
    for agent in agents.values():
        agent.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
        agent.plan(data)
    assert agents[None].hyperparameters()["num_layers"] == "settle<= 256"
    assert agents["diameter"].hyperparameters()["num_layers"] == "max(16, diameter)<= 256"
    assert agents["diameter"].layers_used == [16]  # a 5x5 grid is at most 8 steps wide: the network's own 16
    with pytest.raises(ValueError, match="depth_rule"):
        make_agent("rlfm", depth_rule="deepest")


def test_an_untried_bonus_draws_untried_actions_more_often_and_leaves_the_greedy_policy():
    mdp = gridworld(3)  # state 0 has tried up, down and left, never right (3)
    data = Counts.empty_like(mdp).update([0, 0, 0, 1], [0, 1, 2, 3], 0.0, [0, 3, 0, 2])
    bonus, plain = small_agent(untried_bonus=20.0), small_agent()
    for agent in (bonus, plain):
        agent.start(mdp.num_actions, mdp.gamma, runs=200, generator=torch.Generator().manual_seed(1))
        agent.plan([data] * 200)
    at_start = torch.zeros(200, dtype=torch.long)
    assert set(bonus.act(at_start).tolist()) == {3}  # e^20 times as likely as each tried action
    assert len(set(plain.act(at_start).tolist())) > 1
    at_one = torch.ones(200, dtype=torch.long)  # state 1 tried only "right": the other three share the bonus
    assert set(bonus.act(at_one).tolist()) == {0, 1, 2}
    assert torch.equal(bonus.greedy_policy(), plain.greedy_policy())
    assert bonus.hyperparameters()["untried_bonus"] == 20.0
    with pytest.raises(ValueError, match="untried_bonus"):
        small_agent(untried_bonus=-1.0)
    assert small_agent(untried_bonus=0.0).untried_bonus == 0.0  # off
    steered = small_agent(untried_bonus=1.0, untried_discount=0.5)  # the bonus also lies on the way there
    steered.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
    steered.plan([data] * 2)
    model = EmpiricalModel.from_counts([data] * 2, ActionLayout(mdp.num_actions))
    assert torch.equal(steered.untried, untried_reach(model, 0.5))
    assert steered.untried[0, 1] == 0.5  # state 0's "down" led to state 3, which has untried actions
    assert steered.hyperparameters()["untried_discount"] == 0.5
    relative = small_agent(untried_bonus=1.0, untried_discount=0.5, untried_relative=True)
    relative.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
    relative.plan([data] * 2)
    largest = relative.layout.state_max(steered.untried)[:, relative.layout.sa_state]
    torch.testing.assert_close(
        relative.untried, steered.untried / largest
    )  # every state reaches an untried pair
    assert torch.equal(relative.layout.state_max(relative.untried), torch.ones(2, mdp.num_states).double())
    known = small_agent(untried_bonus=1.0, untried_discount=0.5, untried_known=2)  # one try is not enough
    known.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
    known.plan([data] * 2)
    assert torch.equal(known.untried, untried_reach(model, 0.5, known=2))
    assert known.untried[0, 0] == 1.0 and known.hyperparameters()["untried_known"] == 2
    assert "untried_known" not in steered.hyperparameters()
    with pytest.raises(ValueError, match="untried_known"):
        small_agent(untried_known=0)


def test_an_explored_temperature_applies_only_where_nothing_untried_is_in_reach():
    P = torch.zeros(2, 2, 2, dtype=torch.float64)
    P[0, :, 0] = P[1, :, 1] = 1.0  # two states that never meet
    mdp = TabularMDP.from_dense(P, torch.zeros(2, 2))
    data = Counts.empty_like(mdp).update([0, 0, 1], [0, 1, 0], 0.0, [0, 0, 1])  # state 1 never tried 1
    agent = small_agent(temperature=100.0, untried_bonus=1.0, explored_temperature=0.01)
    agent.start(mdp.num_actions, mdp.gamma, runs=400, generator=torch.Generator().manual_seed(1))
    agent.plan([data] * 400)
    agent.logits = torch.tensor([[0.0, 1.0, 0.0, 1.0]], dtype=torch.float64).expand(400, -1)
    assert set(agent.act(torch.zeros(400, dtype=torch.long)).tolist()) == {1}  # explored: T = 0.01
    assert set(agent.act(torch.ones(400, dtype=torch.long)).tolist()) == {0, 1}  # T = 100
    assert agent.hyperparameters()["explored_temperature"] == 0.01
    assert (
        "explored_temperature"
        not in small_agent(untried_bonus=0.0, explored_temperature=1.0).hyperparameters()
    )
    with pytest.raises(ValueError, match="explored_temperature"):
        small_agent(explored_temperature=0.0)


def test_adaptive_depth_is_used_by_default():
    mdp = gridworld(3)
    agent = small_agent(max_layers=7)
    agent.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(0))
    agent.plan([Counts.empty_like(mdp), Counts.empty_like(mdp)])
    assert 3 <= agent.layers_used[0] <= 7


def test_a_warm_started_agent_continues_from_its_last_plan():
    """With ``warm_start`` the first plan settles from the inputs, the next ones from where the last one
    settled: planning again on the same counts keeps the policy and needs fewer sweeps."""
    mdp = gridworld(3)
    counts = [Counts.empty_like(mdp).update([0, 1, 4], [1, 1, 3], -1.0, [1, 2, 3]) for _ in range(2)]
    network = load_network("default")
    cold, warm = (BatchedInContextAgent(network=network, warm_start=w) for w in (False, True))
    for agent in (cold, warm):
        agent.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(0))
        agent.plan(counts)
    torch.testing.assert_close(warm.logits, cold.logits, atol=0, rtol=0)  # the first plan is a cold one
    first = warm.logits
    warm.plan(counts)
    assert warm.layers_used[1] < warm.layers_used[0], warm.layers_used
    assert torch.equal(warm.greedy_policy(), cold.greedy_policy())
    assert (
        float(
            (
                torch.softmax(warm.layout.padded(warm.logits), -1)
                - torch.softmax(warm.layout.padded(first), -1)
            )
            .abs()
            .max()
        )
        < 0.05
    )
    assert warm.hyperparameters()["warm_start"] and "warm_start" not in cold.hyperparameters()
    warm.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(0))
    assert warm.embeddings is None  # a new protocol run starts cold


def test_replan_growth_plans_a_run_only_once_its_data_grew_enough():
    """With ``replan_growth`` κ a run keeps its policy until its transitions reach (1 + κ) times those of its
    last plan; the runs that do re-plan get exactly the policy an every-call agent gives them."""
    mdp = gridworld(3)
    agent, every = small_agent(num_layers=3, replan_growth=0.5), small_agent(num_layers=3)
    for a in (agent, every):
        a.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(0))
    empty = [Counts.empty_like(mdp) for _ in range(2)]
    agent.plan(empty)
    first = [Counts.empty_like(mdp).update([*range(9), 0], [1] * 10, -1.0, [2] * 10) for _ in range(2)]
    agent.plan(first)  # planned before any data: both runs plan on their first data
    assert agent.plans.tolist() == [2, 2]
    grown = [c.copy() for c in first]
    grown[0].update([0, 1, 2, 3, 4], [0] * 5, 0.0, [1] * 5)  # 15 >= 1.5 * 10: due
    grown[1].update([5, 6, 7, 8], [0] * 4, 0.0, [1] * 4)  # 14 < 15: keeps its policy
    before = agent.logits[1].clone()
    agent.plan(grown)
    every.plan(grown)
    assert agent.plans.tolist() == [3, 2] and agent.planned_at.tolist() == [15.0, 10.0]
    torch.testing.assert_close(agent.logits[0], every.logits[0], atol=1e-5, rtol=1e-5)  # float32, other batch
    assert torch.equal(agent.logits[1], before) and not torch.equal(agent.logits[1], every.logits[1])
    agent.plan(grown)  # nothing new: no network call
    assert agent.plans.tolist() == [3, 2] and len(agent.layers_used) == 3
    assert agent.hyperparameters()["replan_growth"] == 0.5 and "replan_growth" not in every.hyperparameters()
    for bad in (
        {"replan_growth": 0.0},
        {"replan_growth": float("nan")},
        {"replan_growth": 1.0, "warm_start": True},
    ):
        with pytest.raises(ValueError, match="replan_growth"):
            small_agent(**bad)


def test_packaged_network_loads_by_name():
    assert PACKAGED_CHECKPOINT.exists(), "the pretrained network must ship inside the package"
    agent = make_agent("rlfm")
    assert (
        isinstance(agent, BatchedInContextAgent)
        and agent.hyperparameters()["checkpoint"] == "packaged default"
    )


def test_packaged_network_solves_the_reference_grids_from_ample_data():
    from rlfm.evaluation.offline import OfflineConfig, collect_datasets, run_offline

    for mdp in (gridworld(3), gridworld(5)):
        generator = torch.Generator().manual_seed(0)
        datasets = collect_datasets(mdp, seeds=3, config=OfflineConfig(sizes=(2048,)), generator=generator)
        scores = run_offline(mdp, make_agent("rlfm"), datasets, generator)
        assert float(scores.min()) > 0.95


def test_a_runs_policy_and_actions_do_not_depend_on_the_other_runs():
    """Each run settles on its own: its policy is the same planned alone as in a batch of other runs."""
    mdp = gridworld(3)
    generator = torch.Generator().manual_seed(3)
    counts = []
    for transitions in (0, 5, 40, 200):
        c = Counts.empty_like(mdp)
        s = torch.randint(0, mdp.num_states, (transitions,), generator=generator)
        a = torch.randint(0, 4, (transitions,), generator=generator)
        sa = mdp.action_ptr[s] + a
        nxt = torch.tensor(
            [int(mdp.transition_next[mdp.transition_sa == i][0]) for i in sa.tolist()], dtype=torch.long
        )
        counts.append(c.add(sa, nxt, mdp.reward[sa], mdp.terminal[nxt]))
    batch_agent = small_agent(max_layers=40)
    batch_agent.start(mdp.num_actions, mdp.gamma, runs=len(counts), generator=torch.Generator())
    batch_agent.plan(counts)
    batch_logits, batch_greedy = batch_agent.logits, batch_agent.greedy_policy()
    for run, run_counts in enumerate(counts):
        alone = small_agent(max_layers=40)
        alone.start(mdp.num_actions, mdp.gamma, runs=1, generator=torch.Generator())
        alone.plan([run_counts])
        torch.testing.assert_close(alone.logits[0], batch_logits[run], atol=1e-5, rtol=1e-5)
        assert torch.equal(alone.greedy_policy()[0], batch_greedy[run])
        # sampling: the same action distribution in every state, so the same actions from the same draws
        for agent, logits in ((alone, alone.logits[0]), (batch_agent, batch_logits[run])):
            agent.generator.manual_seed(11)
            agent.logits = logits.expand(9, -1)
        states = torch.arange(9)
        assert torch.equal(alone.act(states), batch_agent.act(states))


def test_the_shipped_planner_network_loads_by_name_and_plans_a_large_grid():
    network = load_network("planner")
    assert network.planner_inputs and not load_network("default").planner_inputs
    side = 20
    policy = predict_policy(grid_counts(side), 0.99, network=network)
    steps = greedy_path(policy, side, max_steps=4 * side * side)
    assert steps == 2 * (side - 1)  # the shortest path


def test_agents_sample_at_the_networks_acting_temperature_unless_told(tmp_path):
    path = export("planner", tmp_path / "hot.pt", acting_temperature=2.5)
    assert load_network(path).acting_temperature == 2.5
    assert export(path, tmp_path / "copy.pt") and load_network(tmp_path / "copy.pt").acting_temperature == 2.5
    assert BatchedInContextAgent(path).temperature == 2.5
    assert BatchedInContextAgent(path, temperature=0.5).temperature == 0.5
    assert InContextAgent(4, 2, checkpoint=path).temperature == 2.5
    assert InContextAgent(4, 2, checkpoint=path, temperature=1.0).temperature == 1.0
    with pytest.raises(ValueError, match="acting_temperature"):
        export("planner", tmp_path / "bad.pt", acting_temperature=0.0)


def test_agents_act_with_the_networks_untried_bonus_unless_told(tmp_path):
    shipped = load_network("default")  # chosen on the validation MDPs
    assert (shipped.acting_untried_bonus, shipped.acting_untried_discount) == (3.0, 0.5)
    assert shipped.acting_untried_relative
    path = export("default", tmp_path / "plain.pt", untried=(0.0, 0.0, False))
    assert load_network(path).acting_untried_bonus == 0.0
    assert (
        export(path, tmp_path / "copy.pt") and load_network(tmp_path / "copy.pt").acting_untried_bonus == 0.0
    )
    assert BatchedInContextAgent("default").hyperparameters()["untried_bonus"] == 3.0
    assert "untried_bonus" not in BatchedInContextAgent("default", untried_bonus=0.0).hyperparameters()
    assert "untried_bonus" not in BatchedInContextAgent(path).hyperparameters()
    told = BatchedInContextAgent(path, untried_bonus=1.0)
    assert (told.untried_bonus, told.untried_discount, told.untried_relative) == (1.0, 0.0, False)
    # the step-by-step agent: state 0 of a 2-state MDP tried only action 0, so action 1 gets the bonus
    agent = InContextAgent(2, 2, gamma=0.9, checkpoint=path, untried_bonus=30.0, seed=0)
    assert agent.hyperparameters()["untried_bonus"] == 30.0
    agent.observe(0, 0, 0.0, 1, terminated=False)
    agent.observe(1, 0, 0.0, 0, terminated=False)
    agent.observe(1, 1, 0.0, 0, truncated=True)  # the episode ends: a plan
    assert {agent.act(0) for _ in range(50)} == {1}
    assert InContextAgent(2, 2, checkpoint="default").untried_bonus == 3.0
    with pytest.raises(ValueError, match="untried_bonus"):
        InContextAgent(2, 2, untried_bonus=-1.0)


def test_the_packaged_default_is_the_planner_network_above_256_states():
    from rlfm.pretrained import LARGE_MDP_STATES, packaged_network

    small, large = packaged_network(LARGE_MDP_STATES), packaged_network(LARGE_MDP_STATES + 1)
    assert not small.planner_inputs and large.planner_inputs  # "default" and "planner"
    assert packaged_network(1) is small and packaged_network(10**5) is large  # loaded once
    for states, name in ((LARGE_MDP_STATES, "default"), (LARGE_MDP_STATES + 1, "planner")):
        counts = Counts.empty([2] * states)
        counts.update(
            torch.arange(states),
            torch.zeros(states, dtype=torch.long),
            torch.zeros(states),
            (torch.arange(states) + 1) % states,
        )
        expected = predict_policy(counts, 0.9, load_network(name))
        torch.testing.assert_close(predict_policy(counts, 0.9), expected)
        agent = InContextAgent(states, 2, gamma=0.9)
        assert agent.temperature == load_network(name).acting_temperature
        # the benchmarks' agent chooses the same network once it sees the MDP, unless given one
        batched, forced = BatchedInContextAgent(), BatchedInContextAgent(checkpoint="default")
        for each in (batched, forced):
            each.start(torch.full((states,), 2), 0.9, runs=1, generator=torch.Generator().manual_seed(0))
        assert batched.network is packaged_network(states)
        assert batched.hyperparameters()["checkpoint"] == f"packaged {name}"
        assert batched.untried_bonus == load_network(name).acting_untried_bonus
        assert not forced.network.planner_inputs and forced.hyperparameters()["checkpoint"] == "default"
        # an ensemble joins the count-only network: above 256 states the planner network plans alone
        alone, joined = BatchedInContextAgent(), BatchedInContextAgent(ensemble=["default"])
        for each in (alone, joined):
            each.start(torch.full((states,), 2), 0.9, runs=1, generator=torch.Generator().manual_seed(0))
            each.plan([counts])
        assert torch.equal(alone.greedy_scores, joined.greedy_scores) == (name == "planner")
        # a candidate for the default takes the count-only network's place: the size rule stays
        candidate = BatchedInContextAgent(default_checkpoint="planner")
        candidate.start(torch.full((states,), 2), 0.9, runs=1, generator=torch.Generator().manual_seed(0))
        assert candidate.network.planner_inputs  # the stand-in below 256 states, the planner network above
        assert (candidate.network is packaged_network(states)) == (name == "planner")
        assert candidate.hyperparameters()["checkpoint"] == (
            "planner (as the packaged default)" if name == "default" else "packaged planner"
        )
    with pytest.raises(ValueError, match="default_checkpoint"):
        BatchedInContextAgent(checkpoint="default", default_checkpoint="planner")


@pytest.mark.parametrize("readout, strength", [("guard", 0.001), ("evidence", 1.0)])
def test_a_consistency_readout_changes_the_greedy_policy_not_how_the_agent_acts(readout, strength):
    mdp = gridworld(3)
    data = collect_datasets(mdp, 2, OfflineConfig(sizes=(4096,)), torch.Generator().manual_seed(0))[0]
    plain, read = small_agent(), small_agent(**{readout: strength})
    for agent in (plain, read):
        agent.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
        agent.plan(data)
    assert torch.equal(plain.logits, read.logits)
    for run in range(2):
        assert float(normalized_value(mdp, plain.greedy_policy()[run])) < 0.99  # an untrained network
        assert float(normalized_value(mdp, read.greedy_policy()[run])) == pytest.approx(1.0)
    assert read.hyperparameters()[readout] == strength and readout not in plain.hyperparameters()
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match=readout):
            small_agent(**{readout: bad})
    with pytest.raises(ValueError, match="choose one"):
        small_agent(guard=0.001, evidence=1.0)


def test_a_handoff_gives_the_planner_networks_greedy_action_where_the_data_ahead_are_thick():
    mdp = gridworld(3)
    config = OfflineConfig(sizes=(8, 4096), behaviour="generative")
    thin, thick = collect_datasets(mdp, 2, config, torch.Generator().manual_seed(0))
    planner = BatchedInContextAgent(checkpoint="planner")
    plain, handed, never = small_agent(), small_agent(handoff=10), small_agent(handoff=10**9)
    for data in (thin, thick):
        for agent in (plain, handed, never, planner):
            agent.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
            agent.plan(data)
        assert torch.equal(plain.logits, handed.logits)  # acting is the small network's
        assert torch.equal(never.greedy_policy(), plain.greedy_policy())
    # 4,096 transitions visit each of the 3x3 grid's pairs about 130 times: every state is handed over
    assert torch.equal(handed.greedy_policy(), planner.greedy_policy())
    assert not torch.equal(plain.greedy_policy(), planner.greedy_policy())  # an untrained network
    assert handed.hyperparameters()["handoff"] == 10 and "handoff" not in plain.hyperparameters()
    for bad in (-3, 2.5, True):
        with pytest.raises(ValueError, match="handoff"):
            small_agent(handoff=bad)
    with pytest.raises(ValueError, match="choose one"):
        small_agent(handoff=10, guard=0.001)
    with pytest.raises(ValueError, match="handoff"):
        small_agent(handoff=10, greedy_checkpoint="default")


def test_a_handoff_after_few_visits_keeps_the_networks_choice_where_data_ahead_are_thin():
    mdp = gridworld(3)
    data = collect_datasets(mdp, 2, OfflineConfig(sizes=(8,), behaviour="generative"), torch.Generator())[0]
    plain, handed = small_agent(), small_agent(handoff=1)
    for agent in (plain, handed):
        agent.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
        agent.plan(data)
    # 8 transitions leave most pairs untried, so no state has every reachable pair tried
    assert torch.equal(handed.greedy_policy(), plain.greedy_policy())


def test_a_networks_file_carries_its_default_handoff_which_other_readouts_turn_off(tmp_path):
    path = export("default", tmp_path / "handing.pt", handoff=10)
    assert load_network("default").greedy_handoff == 100  # the shipped network's, rule (xlix)
    assert load_network("default").greedy_dominance  # and its dominance switch, rule (liii)
    assert load_network(str(path)).greedy_handoff == 10
    with pytest.raises(ValueError, match="handoff"):
        export("default", tmp_path / "bad.pt", handoff=-1)
    assert BatchedInContextAgent(checkpoint=str(path)).handoff == 10
    assert BatchedInContextAgent(checkpoint=str(path), handoff=0).handoff == 0
    assert BatchedInContextAgent(checkpoint=str(path), guard=0.001).handoff == 0
    assert BatchedInContextAgent(checkpoint=str(path), greedy_checkpoint="default").handoff == 0
    assert BatchedInContextAgent(checkpoint="planner").handoff == 0


def test_a_greedy_checkpoint_reads_the_greedy_policy_while_the_network_acts():
    mdp = gridworld(3)
    data = collect_datasets(mdp, 2, OfflineConfig(sizes=(64,)), torch.Generator().manual_seed(0))[0]
    plain, paired = small_agent(), small_agent(greedy_checkpoint="default")
    shipped = BatchedInContextAgent(checkpoint="default")
    for agent in (plain, paired, shipped):
        agent.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
        agent.plan(data)
    assert torch.equal(plain.logits, paired.logits)  # the small network still acts
    assert torch.equal(paired.greedy_policy(), shipped.greedy_policy())
    assert not torch.equal(plain.greedy_policy(), shipped.greedy_policy())
    assert paired.hyperparameters()["greedy_checkpoint"] == "default"
    with pytest.raises(ValueError, match="greedy_checkpoint"):
        small_agent(greedy_checkpoint="default", evidence=1.0)


def test_an_ensemble_acts_and_reads_greedily_on_the_networks_mean_log_policy():
    mdp = gridworld(3)
    data = collect_datasets(mdp, 2, OfflineConfig(sizes=(64,)), torch.Generator().manual_seed(0))[0]
    plain, with_shipped, pair = (
        small_agent(),
        small_agent(ensemble=["default"]),
        small_agent(ensemble=["planner"]),
    )
    partner_alone = BatchedInContextAgent(checkpoint="planner")  # reads other graph columns: its own batch
    acting_only = small_agent(ensemble=["planner"], ensemble_greedy=False)
    for agent in (plain, pair, partner_alone, with_shipped, acting_only):
        agent.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
        agent.plan(data)
    layout = plain.layout

    def log_policy(logits: torch.Tensor) -> torch.Tensor:  # [R, SA] per-state log-softmax
        padded = layout.padded(logits)
        return torch.log_softmax(padded, dim=-1)[padded.isfinite()].view_as(logits)

    mean = (log_policy(plain.logits) + log_policy(partner_alone.logits)) / 2
    assert torch.allclose(pair.logits, mean, atol=1e-6)
    greedy_mean = (log_policy(plain.greedy_scores) + log_policy(partner_alone.greedy_scores)) / 2
    assert torch.allclose(pair.greedy_scores, greedy_mean, atol=1e-6)
    assert pair.hyperparameters()["ensemble"] == ["planner"] and "ensemble" not in plain.hyperparameters()
    assert not torch.equal(with_shipped.greedy_scores, plain.greedy_scores)
    assert torch.equal(acting_only.logits, pair.logits)  # the ensemble acts
    assert torch.equal(acting_only.greedy_scores, plain.greedy_scores)  # the first network reads greedily
    assert acting_only.hyperparameters()["ensemble_greedy"] is False
    with pytest.raises(ValueError, match="ensemble"):
        small_agent(ensemble=["default"], greedy_checkpoint="default")
    with pytest.raises(ValueError, match="ensemble"):
        small_agent(ensemble=["default"], warm_start=True)


def test_an_ensemble_of_a_network_with_itself_is_that_network():
    mdp = gridworld(3)
    data = collect_datasets(mdp, 2, OfflineConfig(sizes=(64,)), torch.Generator().manual_seed(0))[0]
    alone, doubled = BatchedInContextAgent("default"), BatchedInContextAgent("default", ensemble=["default"])
    for agent in (alone, doubled):
        agent.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
        agent.plan(data)
    assert torch.equal(alone.greedy_policy(), doubled.greedy_policy())
    states = torch.tensor([0, 4])
    assert torch.equal(alone.act(states), doubled.act(states))  # same sampling probabilities, same draws


@pytest.mark.parametrize("num_layers", [None, 3])
def test_agents_sample_the_acting_head_and_read_the_greedy_policy_from_the_policy_head(num_layers):
    mdp = gridworld(3)
    data = collect_datasets(mdp, 2, OfflineConfig(sizes=(64,)), torch.Generator().manual_seed(0))[0]
    torch.manual_seed(0)
    network = PolicyNetwork(width=16, heads=2, num_layers=3, planner_inputs=False, acting_head=True)
    torch.nn.init.zeros_(network.acting_head[-1].weight)  # the acting head's policy: uniform
    agent = BatchedInContextAgent(network=network, num_layers=num_layers)
    agent.start(mdp.num_actions, mdp.gamma, runs=2, generator=torch.Generator().manual_seed(1))
    agent.plan(data)
    assert torch.equal(agent.logits, torch.full_like(agent.logits, float(network.acting_head[-1].bias)))
    policy_greedy = agent.layout.one_hot(agent.layout.greedy_actions(agent.greedy_scores))
    assert torch.equal(agent.greedy_policy(), policy_greedy)
    assert agent.greedy_scores.std() > 0  # the policy head's logits, not the acting head's
    interactive = InContextAgent(mdp.num_states, mdp.num_actions, mdp.gamma, network=network, seed=0)
    interactive._counts = data[0]
    interactive.plan()
    uniform = 1 / mdp.num_actions.double().repeat_interleave(mdp.num_actions)
    torch.testing.assert_close(interactive.acting_policy, uniform)
    assert not torch.allclose(interactive.policy, uniform)
