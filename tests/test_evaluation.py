import json
import math

import pytest
import torch

from rlfm.agents.base import Agent
from rlfm.benchmarks import get_benchmark
from rlfm.cli import main
from rlfm.counts import Counts
from rlfm.evaluation.command import benchmark_main
from rlfm.evaluation.compare import compare, format_report
from rlfm.evaluation.offline import OfflineConfig, collect_datasets
from rlfm.evaluation.online import OnlineConfig, OnlineRun, episodes_to_converge, run_online
from rlfm.evaluation.report import bootstrap_ci, markdown_table, summarize_online
from rlfm.evaluation.scorecard import scorecard_main
from rlfm.evaluation.simulate import Scorer, Simulator
from rlfm.solve import ActionLayout, normalized_value, optimal_values


class OracleAgent(Agent):
    """Knows the optimal policy (test helper only); records the counts it is given."""

    name = "oracle"

    def __init__(self, mdp):
        q = optimal_values(mdp)[0]
        self.policy = ActionLayout(mdp.num_actions).greedy_policy(q)
        self.actions = mdp.sa_action[self.policy > 0]
        self.seen: list[list[Counts]] = []

    def start(self, num_actions, gamma, runs, generator):
        self.runs = runs

    def plan(self, counts):
        self.seen.append([c.copy() for c in counts])

    def act(self, states):
        return self.actions[states]

    def greedy_policy(self):
        return self.policy.expand(self.runs, -1)


# ------------------------------------------------------------------------------- episodes to converge
def test_episodes_to_converge_on_hand_made_sequences():
    assert episodes_to_converge([0.9] + [0.96] * 8) == [2]  # 1-based
    assert episodes_to_converge([0.96] * 8) == [1]
    assert episodes_to_converge([0.5] * 20) == [None]
    assert episodes_to_converge([0.96] * 7) == [None]  # too short for a run of 8
    dip = [0.96] * 5 + [0.5] + [0.96] * 8
    assert episodes_to_converge(dip) == [7]  # the dip restarts the run
    assert episodes_to_converge([0.95] * 8) == [1]  # the threshold itself counts
    late_dip = [0.96] * 8 + [0.1] * 3
    assert episodes_to_converge(late_dip) == [1]  # later dips do not matter
    rows = torch.tensor([[0.0] * 10, [0.0, 0.0] + [1.0] * 8])
    assert episodes_to_converge(rows) == [None, 3]
    assert episodes_to_converge([0.9] * 3 + [0.99] * 4, window=4, threshold=0.99) == [4]


# ------------------------------------------------------------------------------ simulation and scores
def test_simulator_samples_the_true_transitions():
    mdp = get_benchmark("frozenlake_4x4_slip02")
    simulator = Simulator(mdp, torch.Generator().manual_seed(0))
    n = 40_000
    states, actions = torch.full((n,), 14), torch.full((n,), 3)  # right, next to the goal
    sa, nxt, reward, terminated = simulator.step(states, actions)
    frequency = torch.bincount(nxt, minlength=16).double() / n
    P, R, _ = mdp.to_dense()
    assert torch.allclose(frequency, P[14, 3], atol=0.01)
    assert (
        torch.equal(terminated, mdp.terminal[nxt]) and (reward == R[14, 3]).all() and (sa == 14 * 4 + 3).all()
    )
    assert (simulator.reset(100) == 0).all()


def test_scorer_matches_normalized_value_and_caches():
    mdp = get_benchmark("gridworld_5x5")
    scorer = Scorer(mdp)
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(3, mdp.num_state_actions, generator=g, dtype=torch.float64)
    totals = torch.zeros(3, mdp.num_states, dtype=torch.float64).index_add_(1, mdp.sa_state, raw)
    policies = raw / totals[:, mdp.sa_state]
    expected = torch.cat([normalized_value(mdp, p) for p in policies])
    assert torch.allclose(scorer.normalized(policies), expected, atol=1e-10)
    optimal = ActionLayout(mdp.num_actions).greedy_policy(optimal_values(mdp)[0])
    uniform = ActionLayout(mdp.num_actions).uniform(1)
    assert scorer.normalized(torch.stack([optimal, optimal, uniform[0]])).tolist() == pytest.approx([1, 1, 0])
    assert len(scorer._cache) == 5


def test_finite_horizon_values_match_backward_induction():
    mdp = get_benchmark("frozenlake_4x4_slip02")
    P, R, _ = mdp.to_dense()
    optimal, uniform = torch.zeros(16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64)
    for _ in range(7):
        optimal = (R + mdp.gamma * P @ optimal).max(dim=1).values
        uniform = (R + mdp.gamma * P @ uniform).mean(dim=1)
    scorer = Scorer(mdp, horizon=7)
    assert torch.allclose(scorer.optimal_horizon, optimal) and torch.allclose(scorer.uniform_horizon, uniform)


# ------------------------------------------------------------------------------------------- online
def test_online_protocol_regret_and_counts():
    mdp = get_benchmark("gridworld_3x3")
    oracle = OracleAgent(mdp)
    run = run_online(mdp, oracle, 3, OnlineConfig(episodes=4), torch.Generator().manual_seed(0))
    # the optimal policy in a deterministic MDP collects exactly V*_H: zero regret, score 1 throughout
    assert run.regret.abs().max() < 1e-9 and ((run.scores - 1).abs() < 1e-12).all()
    assert (run.steps == 4).all()  # the goal is 4 steps away and ends the episode
    assert len(oracle.seen) == 5  # a plan before the first episode and after each one
    assert [c.num_observed for c in oracle.seen[0]] == [0, 0, 0]
    last = oracle.seen[-1][0]
    assert last.num_observed == 16 and last.terminal.tolist() == [False] * 8 + [True]
    assert episodes_to_converge(run.scores, window=4) == [1, 1, 1]


def test_uniform_play_costs_about_one_unit_of_regret_per_episode():
    from rlfm.agents import make_agent

    mdp = get_benchmark("frozenlake_4x4_slip02")
    run = run_online(
        mdp, make_agent("random"), 200, OnlineConfig(episodes=5), torch.Generator().manual_seed(0)
    )
    assert float(run.regret.mean()) == pytest.approx(1.0, abs=0.1)
    assert (run.scores == 0).all()


def test_planning_on_the_agents_own_data_is_scored_beside_it():
    from rlfm.agents import make_agent

    mdp = get_benchmark("gridworld_3x3")  # deterministic: once every pair is seen, CE plans optimally
    config = OnlineConfig(episodes=30)
    random = make_agent("random")  # reads no counts: they are collected for the planner all the same
    run = run_online(mdp, random, 4, config, torch.Generator().manual_seed(0), plan_on_data=True)
    assert run.planning_scores is not None and run.planning_scores.shape == run.scores.shape
    assert (run.scores == 0).all() and torch.allclose(
        run.planning_scores[:, -1], torch.ones(4, dtype=torch.float64)
    )
    assert run.select(slice(1, 3)).planning_scores.shape == (2, 30)
    plain = run_online(mdp, make_agent("random"), 4, config, torch.Generator().manual_seed(0))
    assert plain.planning_scores is None and torch.equal(
        plain.regret, run.regret
    )  # the agent's runs unchanged


def test_the_online_command_reports_planning_on_the_agents_data(tmp_path):
    out = tmp_path / "online"
    argv = ["--mode", "online", "--suite", "reference", "--envs", "gridworld_3x3", "--agents", "random"]
    assert (
        benchmark_main(
            [*argv, "--seeds", "2", "--episodes", "30", "--plan-on-data", "--out", str(out), "--no-progress"]
        )
        == 0
    )
    (record,) = json.loads((out / "results.json").read_text())["results"]
    assert record["planning_on_data"]["final_normalized_value"] == pytest.approx(1.0)
    assert record["planning_on_data"]["converged_seeds"] == 2 and record["converged_seeds"] == 0
    assert len(record["planning_on_data"]["learning_curve"]["mean"]) == 30
    assert "## Certainty equivalence on each agent's own data" in (out / "table.md").read_text()
    assert (out / "online_curves.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------ offline
@pytest.mark.parametrize("behaviour", ["uniform", "epsilon_greedy", "narrow", "generative"])
def test_offline_datasets_are_nested_prefixes(behaviour):
    mdp = get_benchmark("gridworld_5x5")
    config = OfflineConfig(sizes=(8, 64, 512), behaviour=behaviour)
    datasets = collect_datasets(mdp, 3, config, torch.Generator().manual_seed(0))
    assert [[c.num_observed for c in d] for d in datasets] == [[8] * 3, [64] * 3, [512] * 3]
    small, large = datasets[1][0], datasets[2][0]
    assert (small.sa_count <= large.sa_count).all()
    if behaviour in ("epsilon_greedy", "narrow"):
        optimal = ActionLayout(mdp.num_actions).greedy_policy(optimal_values(mdp)[0]) > 0
        share = float(large.sa_count[optimal].sum()) / 512
        assert share > (0.9 if behaviour == "narrow" else 0.7)


def test_narrow_data_covers_less_than_uniform_data():
    mdp = get_benchmark("gridworld_5x5")
    covered = {}
    for behaviour in ("uniform", "narrow"):
        data = collect_datasets(mdp, 4, OfflineConfig(sizes=(512,), behaviour=behaviour), torch.Generator())
        covered[behaviour] = sum(int((c.sa_count > 0).sum()) for c in data[0])
    assert covered["narrow"] < covered["uniform"] / 2


@pytest.mark.parametrize("size", [1, 97, 196, 400, 1000])
def test_generative_data_visit_every_pair_equally_and_never_an_absorbing_one(size):
    mdp = get_benchmark("cliffwalking")
    absorbing = mdp.terminal[mdp.sa_state]
    assert absorbing.any()  # its goal
    pairs = int((~absorbing).sum())
    data = collect_datasets(mdp, 3, OfflineConfig(sizes=(size,), behaviour="generative"), torch.Generator())
    for counts in data[0]:
        assert counts.num_observed == size
        assert (counts.sa_count[absorbing] == 0).all()
        visits = counts.sa_count[~absorbing]
        assert set(visits.unique().tolist()) <= {size // pairs, -(-size // pairs)}
    assert OfflineConfig(behaviour="generative").behaviour_epsilon is None


# ------------------------------------------------------------------------------------------- report
def test_bootstrap_intervals():
    assert bootstrap_ci([2.0, 2.0, 2.0]) == [2.0, 2.0]
    low, high = bootstrap_ci([float(v) for v in range(100)])
    assert 40 < low < 49.5 < high < 59
    assert bootstrap_ci([1.0, math.inf, math.inf], "median") == [1.0, None]
    assert bootstrap_ci([], "median") == [None, None]


# ------------------------------------------------------------------------------------------ command
def censored_median(per_seed: list[int | None]) -> float | None:
    """The headline as the README defines it: nulls are +∞, null if the median is infinite."""
    ordered = sorted(math.inf if e is None else float(e) for e in per_seed)
    median = (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
    return None if math.isinf(median) else median


@pytest.mark.parametrize(
    ("first_good", "expected"),
    [([1, None, None, None], None), ([1, 2, 3, None], 2.5), ([4, 4, None, None], None), ([5, 1, 3, 2], 2.5)],
)
def test_headline_is_the_median_over_all_seeds(first_good, expected):
    config = OnlineConfig(episodes=20, window=3)
    scores = torch.zeros(len(first_good), config.episodes, dtype=torch.float64)
    for seed, first in enumerate(first_good):
        if first is not None:
            scores[seed, first - 1 :] = 1.0
    run = OnlineRun(scores, torch.zeros_like(scores), torch.ones_like(scores, dtype=torch.long))
    summary = summarize_online(run, config, {})
    assert summary["per_seed"]["episodes_to_converge"] == first_good
    assert summary["episodes_to_converge"] == expected == censored_median(first_good)
    assert summary["converged_seeds"] == sum(e is not None for e in first_good)
    record = {**summary, "env": "e", "agent": "a", "episodes": 20, "grid": [summary]}
    meta = {"command": "c", "protocol": {"window": 3, "threshold": 0.95, "episodes": 20}}
    row = next(
        line for line in markdown_table("online", [record], meta).splitlines() if line.startswith("| e |")
    )
    assert ("> 20" in row) == (expected is None)


def test_online_command_writes_results(tmp_path):
    out = tmp_path / "online"
    args = ["--mode", "online", "--suite", "reference", "--envs", "gridworld_3x3", "--agents", "ucbvi,random"]
    assert (
        benchmark_main([*args, "--seeds", "2", "--episodes", "12", "--out", str(out), "--no-progress"]) == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "online" and results["command"].startswith("rlfm benchmark --mode online")
    for key in ("date", "machine", "versions", "protocol"):
        assert key in results
    assert [(r["env"], r["agent"]) for r in results["results"]] == [
        ("gridworld_3x3", "ucbvi"),
        ("gridworld_3x3", "random"),
    ]
    for record in results["results"]:
        assert record["episodes_to_converge"] == censored_median(record["per_seed"]["episodes_to_converge"])
        assert isinstance(record["converged_seeds"], int) and record["seeds"] == 2
        assert isinstance(record["cumulative_regret"], float) and len(record["cumulative_regret_ci"]) == 2
        assert len(record["learning_curve"]["mean"]) == 12 and isinstance(record["hyperparameters"], dict)
    ucbvi, random = results["results"]
    assert len(ucbvi["grid"]) == 5 and ucbvi["hyperparameters"]["c"] in (0.01, 0.03, 0.1, 0.3, 1.0)
    assert random["converged_seeds"] == 0 and random["episodes_to_converge"] is None
    assert (out / "table.md").read_text().startswith("# rlfm benchmark — online")
    assert (out / "online_curves.png").stat().st_size > 0


def test_offline_command_with_a_users_mdp(tmp_path):
    path = tmp_path / "mine.npz"
    get_benchmark("gridworld_3x3").save_npz(path)
    out = tmp_path / "offline"
    argv = [
        "--mode",
        "offline",
        "--mdp",
        str(path),
        "--agents",
        "ce,vi_lcb",
        "--seeds",
        "2",
        "--sizes",
        "16,8",
    ]
    assert benchmark_main([*argv, "--no-grid", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    records = results["results"]
    assert [(r["env"], r["agent"], r["dataset_size"]) for r in records] == [
        ("mine", "ce", 8),
        ("mine", "ce", 16),
        ("mine", "vi_lcb", 8),
        ("mine", "vi_lcb", 16),
    ]
    for r in records:
        assert isinstance(r["normalized_value_mean"], float) and isinstance(r["normalized_value_std"], float)
        assert r["seeds"] == 2 and r["behaviour"] == "uniform"
    assert records[2]["hyperparameters"] == {"c": 0.1}  # --no-grid: the default
    assert (out / "offline_values.png").stat().st_size > 0


def test_command_passes_temperature_to_the_rlfm_agent(tmp_path):
    out = tmp_path / "rlfm"
    argv = ["--envs", "gridworld_3x3", "--agents", "rlfm", "--temperature", "0.25", "--seeds", "2"]
    assert benchmark_main([*argv, "--episodes", "3", "--out", str(out), "--no-progress"]) == 0
    (record,) = json.loads((out / "results.json").read_text())["results"]
    assert record["agent"] == "rlfm" and record["hyperparameters"]["temperature"] == 0.25


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_workers_do_not_change_the_results(tmp_path, mode):
    argv = ["--mode", mode, "--suite", "reference", "--agents", "ce" if mode == "offline" else "ucbvi,random"]
    argv += ["--seeds", "2", "--episodes", "4", "--sizes", "8,32", "--no-grid", "--no-progress"]
    records = {}
    for workers in (1, 2):
        out = tmp_path / str(workers)
        assert benchmark_main([*argv, "--workers", str(workers), "--out", str(out)]) == 0
        results = json.loads((out / "results.json").read_text())["results"]
        records[workers] = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in results]
    assert len(records[1]) == 6 and records[2] == records[1]  # 3 MDPs x (2 agents | 2 sizes)


def test_command_rejects_bad_requests(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark_main(["--agents", "rlfm", "--temperature", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        benchmark_main(["--mode", "offline", "--agents", "qlearning", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        benchmark_main(["--agents", "dqn", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        benchmark_main(["--workers", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        benchmark_main(["--mdp", str(tmp_path / "missing.npz"), "--out", str(tmp_path)])
    for flags in (
        ["--agents", "rlfm", "--replan-growth", "0"],
        ["--agents", "ucbvi", "--replan-growth", "0.1"],
        ["--mode", "offline", "--agents", "rlfm", "--replan-growth", "0.1"],
    ):
        with pytest.raises(SystemExit):
            benchmark_main([*flags, "--out", str(tmp_path)])
    assert "--replan-growth" in capsys.readouterr().err
    for flag, flags in (
        ("--guard", ["--agents", "rlfm", "--guard", "0"]),
        ("--guard", ["--agents", "ce", "--guard", "0.1"]),
        ("--evidence", ["--agents", "rlfm", "--evidence", "0"]),
        ("--evidence", ["--agents", "ce", "--evidence", "1"]),
        ("--evidence", ["--agents", "rlfm", "--evidence", "1", "--guard", "0.1"]),
        ("--holdout", ["--agents", "ce", "--holdout"]),
        ("--holdout", ["--agents", "rlfm", "--holdout", "--evidence", "1"]),
        ("--plan-on-data", ["--mode", "offline", "--agents", "ce", "--plan-on-data"]),
        ("--dominance", ["--agents", "ce", "--dominance", "yes"]),
        ("--dominance", ["--agents", "rlfm", "--dominance", "maybe"]),
        ("--handoff", ["--agents", "rlfm", "--handoff", "-1"]),
        ("--handoff", ["--agents", "ce", "--handoff", "100"]),
        ("--handoff", ["--agents", "rlfm", "--handoff", "100", "--guard", "0.1"]),
        ("--handoff", ["--agents", "rlfm", "--handoff", "100", "--greedy-checkpoint", "planner"]),
        ("--episode-commit", ["--agents", "ce", "--episode-commit"]),
        ("--bootstrap", ["--mode", "offline", "--agents", "rlfm", "--bootstrap"]),
        ("--episode-commit", ["--mode", "offline", "--agents", "rlfm", "--episode-commit"]),
        ("--untried-bonus", ["--agents", "rlfm", "--untried-bonus", "-1"]),
        ("--untried-bonus", ["--agents", "ce", "--untried-bonus", "1"]),
        ("--untried-bonus", ["--mode", "offline", "--agents", "rlfm", "--untried-bonus", "1"]),
        ("--untried-discount", ["--agents", "rlfm", "--untried-discount", "1"]),
        ("--untried-relative", ["--agents", "rlfm", "--untried-relative", "maybe"]),
        ("--explored-temperature", ["--agents", "rlfm", "--explored-temperature", "0"]),
        ("--explored-temperature", ["--agents", "ce", "--explored-temperature", "1"]),
        ("--explored-temperature", ["--mode", "offline", "--agents", "rlfm", "--explored-temperature", "1"]),
        ("--untried-known", ["--agents", "rlfm", "--untried-known", "0"]),
        ("--untried-known", ["--agents", "ce", "--untried-known", "2"]),
        ("--untried-known", ["--mode", "offline", "--agents", "rlfm", "--untried-known", "2"]),
        ("--greedy-checkpoint", ["--agents", "ce", "--greedy-checkpoint", "default"]),
        ("--greedy-checkpoint", ["--agents", "rlfm", "--greedy-checkpoint", "default", "--evidence", "1"]),
        ("--ensemble", ["--agents", "ce", "--ensemble", "default"]),
        ("--ensemble", ["--agents", "rlfm", "--ensemble", ","]),
        ("--ensemble", ["--agents", "rlfm", "--ensemble", "default", "--greedy-checkpoint", "planner"]),
        ("--ensemble-greedy", ["--agents", "rlfm", "--ensemble-greedy", "no"]),
        ("--default-checkpoint", ["--agents", "ce", "--default-checkpoint", "default"]),
        (
            "--default-checkpoint",
            ["--agents", "rlfm", "--default-checkpoint", "planner", "--checkpoint", "default"],
        ),
        ("no-such-file.pt", ["--agents", "rlfm", "--default-checkpoint", "no-such-file.pt"]),
        ("--ensemble-greedy", ["--agents", "rlfm", "--ensemble", "default", "--ensemble-greedy", "maybe"]),
    ):
        with pytest.raises(SystemExit):
            benchmark_main([*flags, "--out", str(tmp_path)])
        assert flag in capsys.readouterr().err


def _results(mode: str, per_seed: dict[str, list], seed: int = 0) -> dict:
    """A minimal benchmark results file: one rlfm record per MDP (offline: at dataset size 64)."""
    protocol = {"episodes": 100} if mode == "online" else {"sizes": [64]}
    records = []
    for env, values in per_seed.items():
        record = {"env": env, "agent": "rlfm"}
        if mode == "offline":
            record |= {"dataset_size": 64, "per_seed": values}
        else:
            episodes, regret = values
            record |= {"per_seed": {"episodes_to_converge": episodes, "cumulative_regret": regret}}
        records.append(record)
    return {"mode": mode, "protocol": protocol, "seeds": 4, "seed": seed, "results": records}


def test_compare_offline_is_paired_over_seeds():
    base = _results("offline", {"a": [0.1, 0.5, 0.9, 0.3], "b": [0.0, 1.0, 0.2, 0.4]})
    shifted = _results("offline", {"a": [0.2, 0.6, 1.0, 0.4], "b": [0.1, 1.1, 0.3, 0.5]})
    report = compare(base, shifted)
    # a constant gain on every seed has no sampling noise however different the seeds are
    assert report["statistic"] == pytest.approx(0.1) and report["ci"] == pytest.approx([0.1, 0.1])
    assert report["passes"] and report["per_mdp"]["a"]["mean_value"] == pytest.approx([0.45, 0.55])
    assert report["per_mdp"]["a"]["ci"] == pytest.approx([0.1, 0.1])
    worse = _results("offline", {"a": [0.1, 0.5, 0.9, 0.3], "b": [0.0, 1.0, 0.2, 0.2]})
    report = compare(base, worse)
    assert report["statistic"] == pytest.approx(-0.025) and report["ci"][0] < -0.01 and not report["passes"]
    # each MDP's own interval: "a" is unchanged; "b" lost 0.2 on one seed of four, so a resample's mean is
    # −0.05 per draw of that seed, and 3 or 4 draws of it (probability 13/256 > 2.5 %) set the lower bound
    assert report["per_mdp"]["a"]["ci"] == [0.0, 0.0]
    assert report["per_mdp"]["b"]["ci"] == pytest.approx([-0.15, 0.0])


def test_compare_offline_names_the_dataset_that_moves_the_mean_most():
    base = _results("offline", {"a": [0.9, 0.9, 0.9, 0.9], "b": [0.5, 0.6, 0.7, 0.8]})
    candidate = _results("offline", {"a": [0.9, 0.9, 0.9, -8.1], "b": [0.6, 0.7, 0.8, 0.9]})
    report = compare(base, candidate)
    single = report["largest_dataset"]
    assert (single["env"], single["size"], single["seed_index"]) == ("a", 64, 3)
    assert single["values"] == pytest.approx([0.9, -8.1])
    assert single["share"] == pytest.approx(-9.0 / 8)  # 2 cells × 4 seeds
    assert report["statistic"] - single["share"] == pytest.approx(0.4 / 8)  # the rest: +0.1 on b's seeds
    assert "largest single dataset: a at 64 transitions, seed index 3: 0.900 → -8.100" in format_report(
        report, "base", "candidate"
    )
    # floored at −1, the fall counts −1.9 instead of −9: Δ = (−1.9 + 0.4) / 8
    floored = compare(base, candidate, floor=-1.0)
    assert floored["statistic"] == pytest.approx(-1.5 / 8) and floored["floor"] == -1.0
    assert "each dataset floored at -1" in format_report(floored, "base", "candidate")
    with pytest.raises(ValueError, match="offline"):
        compare(
            _results("online", {"a": ([1] * 4, [1.0] * 4)}),
            _results("online", {"a": ([1] * 4, [1.0] * 4)}),
            floor=-1.0,
        )


def test_compare_reads_two_agents_of_one_run():
    """``base_agent`` compares agent against agent on the same seeds, e.g. rlfm against certainty equivalence."""
    run = _results("offline", {"a": [0.1, 0.5, 0.9, 0.3]})
    ce = {"env": "a", "agent": "ce", "dataset_size": 64, "per_seed": [0.1, 0.7, 0.9, 0.3]}
    run["results"].append(ce)
    report = compare(run, run, base_agent="ce")
    assert report["base_agent"] == "ce" and report["agent"] == "rlfm"
    assert report["statistic"] == pytest.approx(-0.05) and report["per_mdp"]["a"]["ci"] == pytest.approx(
        [-0.15, 0.0]
    )
    assert "ce → rlfm" in format_report(report, "run", "run")
    with pytest.raises(ValueError, match="no records of agent 'psrl'"):
        compare(run, run, base_agent="psrl")


def test_compare_online_counts_never_as_cap_plus_one():
    base = _results("online", {"a": ([10, 20, None, 30], [5.0, 6.0, 9.0, 7.0])})
    better = _results("online", {"a": ([5, 10, 50, 15], [4.0, 5.0, 6.0, 5.0])})
    report = compare(base, better)
    # medians: base (20 + 30) / 2 = 25, candidate (10 + 15) / 2 = 12.5
    assert report["statistic"] == pytest.approx(math.log(13.5 / 26))
    assert report["per_mdp"]["a"]["converged_seeds"] == [3, 4]
    assert report["ci"][1] < 0 and report["log_regret_ratio"] < 0 and report["passes"]
    assert not compare(base, base)["passes"]  # the same network does not replace itself
    with pytest.raises(ValueError, match="differ in seed"):
        compare(base, _results("online", {"a": ([1, 1, 1, 1], [1.0] * 4)}, seed=7))
    with pytest.raises(ValueError, match="different MDPs"):
        compare(base, _results("online", {"b": ([1, 1, 1, 1], [1.0] * 4)}))


def test_compare_groups_of_networks_count_training_noise():
    a = [0.1, 0.5, 0.9, 0.3]
    base = [_results("offline", {"a": a}), _results("offline", {"a": [v + 0.2 for v in a]})]
    candidate = [_results("offline", {"a": [v + d for v in a]}) for d in (0.1, 0.3)]
    # each candidate network beats its own base network by 0.1 on every seed: alone, a zero-width interval
    assert compare(base[1], candidate[1])["ci"] == pytest.approx([0.1, 0.1])
    # as recipes, the networks drawn decide: Δ = 0.1 + 0.2 (share of the better candidate − of the better
    # base); both draws at the extremes (probability 1/16 each) set the 95 % interval
    report = compare(base, candidate)
    assert report["networks"] == [2, 2] and report["statistic"] == pytest.approx(0.1)
    assert report["ci"] == pytest.approx([-0.1, 0.3]) and not report["passes"]
    assert report["per_mdp"]["a"]["mean_value"] == pytest.approx([0.55, 0.65])
    # online, the drawn networks' seeds are pooled before the median
    first = _results("online", {"a": ([10, 20, None, 30], [5.0, 6.0, 9.0, 7.0])})
    second = _results("online", {"a": ([40, 40, 40, 40], [8.0] * 4)})
    report = compare([first, second], first)
    # pooled: 10 20 30 40 40 40 40 101 → median 40; the candidate alone: 25
    assert report["statistic"] == pytest.approx(math.log(26 / 41))
    assert report["per_mdp"]["a"]["converged_seeds"] == [7, 3]
    assert report["per_mdp"]["a"]["mean_regret"] == pytest.approx([59 / 8, 6.75])
    # an MDP where both pay no regret counts 0 in the regret sum; regret against none is infinitely worse
    free = _results("online", {"a": ([0] * 4, [0.0] * 4), "b": ([3] * 4, [2.0] * 4)})
    cheaper = _results("online", {"a": ([0] * 4, [0.0] * 4), "b": ([3] * 4, [1.0] * 4)})
    assert compare(free, cheaper)["log_regret_ratio"] == pytest.approx(math.log(0.5))
    costly = _results("online", {"a": ([0] * 4, [1.0] * 4), "b": ([3] * 4, [1.0] * 4)})
    assert compare(cheaper, costly)["log_regret_ratio"] == math.inf
    with pytest.raises(ValueError, match="differ in seed"):
        compare([first, _results("online", {"a": ([1] * 4, [1.0] * 4)}, seed=7)], first)


def test_compare_command_on_real_runs(tmp_path, capsys):
    argv = ["--mode", "offline", "--suite", "reference", "--envs", "gridworld_3x3", "--agents", "ce"]
    out = tmp_path / "run"
    assert benchmark_main([*argv, "--seeds", "3", "--sizes", "8,32", "--out", str(out), "--no-progress"]) == 0
    assert (
        main(
            [
                "compare",
                str(out),
                str(out / "results.json"),
                "--agent",
                "ce",
                "--json",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["statistic"] == 0 and report["ci"] == [0, 0] and report["passes"]
    assert "passes (lower bound ≥ −0.01): True" in capsys.readouterr().out
    # two runs on one side: networks 2 vs 1
    assert main(["compare", f"{out},{out}", str(out), "--agent", "ce"]) == 0
    assert "3 paired seeds × networks 2 vs 1" in capsys.readouterr().out
    assert main(["compare", str(out), str(tmp_path / "missing")]) == 2


def _write(path, mode: str, records: list[dict], seed: int = 0):
    protocol = {"episodes": 100} if mode == "online" else {"sizes": [16, 64]}
    path.mkdir()
    (path / "results.json").write_text(
        json.dumps({"mode": mode, "protocol": protocol, "seeds": 2, "seed": seed, "results": records})
    )
    return str(path)


def _offline(env: str, agent: str, size: int, values: list[float]) -> dict:
    return {"env": env, "agent": agent, "dataset_size": size, "per_seed": values}


def _online(env: str, agent: str, median, converged: int, regret: float, grid_regrets=()) -> dict:
    grid = [{"cumulative_regret": r} for r in grid_regrets]
    record = {"env": env, "agent": agent, "episodes_to_converge": median, "converged_seeds": converged}
    return record | {"seeds": 2, "cumulative_regret": regret, "grid": grid}


def test_the_offline_scorecard_compares_rlfm_with_the_best_other_agent_at_every_size(tmp_path, capsys):
    rlfm = _write(
        tmp_path / "rlfm",
        "offline",
        [
            _offline("a", "rlfm", 16, [0.5, 0.7]),
            _offline("a", "rlfm", 64, [0.9, 0.9]),
            _offline("b", "rlfm", 16, [0.2, 0.2]),
            _offline("b", "rlfm", 64, [0.5, 0.5]),
        ],
    )
    baselines = _write(
        tmp_path / "baselines",
        "offline",
        [_offline(env, "ce", 16, [0.1, 0.1]) for env in "ab"]
        + [_offline("a", "ce", 64, [0.9, 0.9]), _offline("b", "ce", 64, [0.8, 0.8])]
        + [_offline("a", "vi_lcb", 16, [0.6, 0.6]), _offline("b", "vi_lcb", 16, [0.0, 0.0])],
    )
    assert scorecard_main([rlfm, baselines, "--json", str(tmp_path / "card.json")]) == 0
    out = capsys.readouterr().out
    assert "at or above the best other agent at every size: 1 of 2" in out
    assert "at or above CE at the largest size: 1 of 2" in out
    rows = {r["env"]: r for r in json.loads((tmp_path / "card.json").read_text())["rows"]}
    assert rows["a"]["every_size"] and rows["a"]["at_least_ce"]
    assert not rows["b"]["every_size"] and rows["b"]["worst_size"] == 64
    assert rows["b"]["worst_gap"] == pytest.approx(-0.3)


def test_the_online_scorecard_counts_fewest_episodes_lowest_regret_and_convergence(tmp_path, capsys):
    run = _write(
        tmp_path / "run",
        "online",
        [
            _online("a", "rlfm", 3.0, 2, 10.0),
            _online(
                "a", "ucbvi", 5.0, 2, 12.0, grid_regrets=(12.0, 8.0)
            ),  # fewer regret elsewhere on its grid
            _online("b", "rlfm", None, 0, 90.0),
            _online("b", "psrl", 40.0, 1, 95.0),  # converges on half the seeds
            _online("c", "rlfm", None, 0, 90.0),
            _online("c", "psrl", None, 0, 95.0),  # nobody converges: a tie
        ],
    )
    assert scorecard_main([run, "--json", str(tmp_path / "card.json")]) == 0
    assert "fewest episodes: 2 of 3; lowest regret: 2 of 3; converges wherever" in capsys.readouterr().out
    rows = {r["env"]: r for r in json.loads((tmp_path / "card.json").read_text())["rows"]}
    assert rows["a"]["fewest"] and not rows["a"]["lowest_regret"]
    assert not rows["b"]["fewest"] and rows["b"]["lowest_regret"] and not rows["b"]["converges"]
    assert rows["c"]["fewest"] and rows["c"]["converges"]


def test_the_scorecard_refuses_runs_on_other_seeds(tmp_path, capsys):
    first = _write(tmp_path / "first", "offline", [_offline("a", "rlfm", 16, [0.5, 0.5])])
    other = _write(tmp_path / "other", "offline", [_offline("a", "ce", 16, [0.5, 0.5])], seed=1)
    with pytest.raises(SystemExit):
        scorecard_main([first, other])
    assert "differ in ['seed']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        scorecard_main([first])
    assert "no MDP has records" in capsys.readouterr().err
