"""Bad input gets a clear error at every boundary; no checkpoint runs code; resumed training is exact.

Each test names the input it throws (file loaders, ``Counts``, ``predict_policy``, checkpoints, the CLI,
training resume); the property-based tests at the end throw random malformed arrays and transitions.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from lightning.pytorch.callbacks import Callback
from torch_geometric.utils import scatter

from rlfm.benchmarks import get_benchmark
from rlfm.cli import main
from rlfm.counts import Counts
from rlfm.evaluation import command
from rlfm.evaluation.command import benchmark_main
from rlfm.evaluation.simulate import Scorer
from rlfm.mdp import TabularMDP
from rlfm.network import PolicyNetwork
from rlfm.nn import EdgeBiasedAttention
from rlfm.pretrained import FORMAT, PACKAGED_CHECKPOINT, load_network, predict_policy
from rlfm.solve import normalized_value, optimal_and_uniform_start_values

ROOT = Path(__file__).parent.parent
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def network() -> PolicyNetwork:
    torch.manual_seed(0)
    return PolicyNetwork(width=8, heads=1, num_layers=2).eval()


def assert_policy(policy: torch.Tensor, counts: Counts) -> None:
    """Finite, non-negative and summing to 1 over each state's actions."""
    assert torch.isfinite(policy).all() and (policy >= 0).all()
    sums = scatter(policy.double(), counts.sa_state, dim=0, dim_size=counts.num_states, reduce="sum")
    torch.testing.assert_close(sums, torch.ones(counts.num_states, dtype=torch.float64), atol=1e-5, rtol=0)


def chain(S: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A valid dense (P, R): two actions, the last state absorbing with reward 0."""
    P = np.zeros((S, 2, S))
    for s in range(S):
        P[s, 0, max(s - 1, 0)] = 1.0
        P[s, 1, min(s + 1, S - 1)] = 1.0
    P[S - 1] = 0.0
    P[S - 1, :, S - 1] = 1.0
    R = np.zeros((S, 2))
    R[S - 2, 1] = 1.0
    return P, R


def save(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


# ------------------------------------------------------------------------------------------ checkpoints
class Payload:
    """Unpickling it would create ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def crafted(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"format": FORMAT, "config": Payload(marker), "state_dict": {}}, path)
    torch.load(path, weights_only=False)  # the payload is live: unpickling it runs code
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_crafted_checkpoint_runs_no_code_in_load_network(crafted):
    path, marker = crafted
    with pytest.raises(ValueError, match=r"evil\.ckpt holds Python objects \(_?io\.open\) .* never run code"):
        load_network(path)
    assert not marker.exists()


def test_crafted_checkpoint_runs_no_code_in_export_and_benchmark(crafted, tmp_path, capsys):
    path, marker = crafted
    assert main(["export", str(path), str(tmp_path / "net.pt")]) == 2
    assert "rlfm export: error:" in capsys.readouterr().err and not (tmp_path / "net.pt").exists()
    with pytest.raises(SystemExit) as exit_info:
        benchmark_main(["--agents", "rlfm", "--checkpoint", str(path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "never run code" in capsys.readouterr().err
    assert not marker.exists()


def test_shipped_checkpoint_loads_with_weights_only():
    content = torch.load(PACKAGED_CHECKPOINT, weights_only=True)
    assert content["format"] == FORMAT
    assert isinstance(load_network(), PolicyNetwork)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_bytes(b"\x00garbage" * 20), "not a readable PyTorch checkpoint"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: torch.save([1, 2, 3], p), "holds a list, not a checkpoint dictionary"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: torch.save({"state_dict": {}}, p), "neither an rlfm export nor a Lightning checkpoint"),
        (
            lambda p: torch.save({"format": FORMAT, "config": {"width": 8}, "state_dict": {}}, p),
            "without a config holding",
        ),
    ],
    ids=["garbage", "empty", "list", "directory", "unknown-dict", "bad-config"],
)
def test_bad_checkpoints_are_clear_errors(tmp_path, capsys, make, message):
    path = tmp_path / "bad.ckpt"
    make(path)
    with pytest.raises(ValueError, match=message):
        load_network(path)
    with pytest.raises(SystemExit) as exit_info:
        benchmark_main(["--agents", "rlfm", "--checkpoint", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_checkpoint_with_wrong_weights_or_path_type(tmp_path, network):
    path = tmp_path / "nan.pt"
    weights = {k: torch.full_like(v, math.nan) for k, v in network.state_dict().items()}
    config = {"width": 8, "heads": 1, "num_layers": 2, "dropout": 0.0}
    torch.save({"format": FORMAT, "config": config, "state_dict": weights}, path)
    with pytest.raises(ValueError, match="holds values that are not finite"):
        load_network(path)
    torch.save({"format": FORMAT, "config": config, "state_dict": {"x": torch.ones(1)}}, path)
    with pytest.raises(ValueError, match="does not hold weights of an rlfm network"):
        load_network(path)
    with pytest.raises(ValueError, match="checkpoint must be the path of a file"):
        load_network(["a.pt", "b.pt"])
    with pytest.raises(ValueError, match="checkpoint must be the path of a file"):
        load_network("")
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "missing.pt")


# --------------------------------------------------------------------------------------------- Counts
def test_counts_reject_next_state_out_of_range():
    counts = Counts.empty([2, 2, 2])
    for bad in (3, -1):
        with pytest.raises(ValueError, match=f"next_state holds the index {bad}, but there are 3 states"):
            counts.update(state=0, action=1, reward=1.0, next_state=bad)
    assert counts.num_observed == 0 and counts.transition_key.numel() == 0  # unchanged


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"state": 3}, "state holds the index 3, but there are 3 states"),
        ({"state": -1}, "state holds the index -1"),
        ({"state": 1.5}, "state must hold integer indices"),
        ({"action": 2}, "action 2 is out of range in state 0, which has actions 0 .. 1"),
        ({"reward": math.nan}, "reward must be a finite number, got nan"),
        ({"reward": math.inf}, "reward must be a finite number, got inf"),
        ({"reward": 1e308 * 10}, "reward must be a finite number"),
        ({"reward": 1 + 2j}, "reward holds complex numbers"),
        ({"terminated": 2}, "terminated must hold booleans"),
        ({"state": [0, 1], "action": [0, 1, 0]}, "different lengths"),
    ],
)
def test_counts_reject_bad_transitions(kwargs, message):
    counts = Counts.empty([2, 2, 2])
    before = counts.copy()
    with pytest.raises(ValueError, match=message):
        counts.update(**{"state": 0, "action": 0, "reward": 0.5, "next_state": 1, **kwargs})
    assert torch.equal(counts.sa_count, before.sa_count) and torch.equal(counts.reward_sum, before.reward_sum)


def test_counts_reject_overflowing_reward_sums():
    counts = Counts.empty([1]).update(0, 0, 1e308, 0)
    with pytest.raises(ValueError, match="overflow"):
        counts.update(0, 0, 1e308, 0)
    assert counts.num_observed == 1


@pytest.mark.parametrize(
    "num_actions,message",
    [
        ([2, 0, 2], r"state 1 has no action \(num_actions\[1\] = 0\)"),
        ([], "num_actions is empty"),
        ([2.0, 1.0], "num_actions must be a 1-D array of integers"),
        ([[1, 2]], "num_actions must be a 1-D array of integers"),
    ],
)
def test_counts_empty_rejects_states_without_actions(num_actions, message):
    with pytest.raises(ValueError, match=message):
        Counts.empty(num_actions)


def test_predict_policy_validates_counts(network):
    counts = Counts.empty([2, 2])
    counts.sa_count[0] = 3  # counted visits without successors: inconsistent
    with pytest.raises(ValueError, match="pair 0 has sa_count 3 but 0 counted successors"):
        predict_policy(counts, 0.9, network=network)
    with pytest.raises(ValueError, match=r"counts must be an rlfm\.Counts"):
        predict_policy({"sa_count": []}, 0.9, network=network)


@pytest.mark.parametrize("gamma", [1.0, math.nan, 1.5, 0.0, -0.1, math.inf, [0.5, 0.5], True])
def test_predict_policy_rejects_gamma_outside_the_unit_interval(gamma, network):
    with pytest.raises(ValueError, match="gamma must"):
        predict_policy(Counts.empty([2, 2]), gamma, network=network)


def test_predict_policy_rejects_bad_num_layers(network):
    for layers in (0, -2, 1.5):
        with pytest.raises(ValueError, match="num_layers must be a positive integer"):
            predict_policy(Counts.empty([2]), 0.9, network=network, num_layers=layers)


# ------------------------------------------------------------------------------------------ MDP files
def test_empty_truncated_and_npy_files(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.npz is empty"):
        TabularMDP.from_npz(tmp_path / "empty.npz")
    P, R = chain()
    whole = save(tmp_path / "whole.npz", P=P, R=R).read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cut\.npz could not be read as an \.npz archive"):
        TabularMDP.from_npz(tmp_path / "cut.npz")
    np.save(tmp_path / "single.npy", P)
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(ValueError, match=r"holds a single \.npy array, not an \.npz archive"):
        TabularMDP.from_npz(tmp_path / "single.npz")
    with zipfile.ZipFile(tmp_path / "nothing.npz", "w"):
        pass  # a valid, empty archive
    with pytest.raises(ValueError, match=r"lacks the arrays \['P', 'R'\]"):
        TabularMDP.from_npz(tmp_path / "nothing.npz")
    with pytest.raises(ValueError, match="is a directory"):
        TabularMDP.from_npz(tmp_path)


def test_garbage_and_pickled_files(tmp_path):
    (tmp_path / "garbage.npz").write_bytes(b"this is not numpy at all" * 10)
    with pytest.raises(ValueError, match=r"garbage\.npz is not an \.npz archive") as error:
        TabularMDP.from_npz(tmp_path / "garbage.npz")
    assert "pickle" not in str(error.value).split("garbage.npz", 1)[1]
    P, R = chain()
    save(tmp_path / "objects.npz", P=P, R=R, gamma=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="holds an array of Python objects"):
        TabularMDP.from_npz(tmp_path / "objects.npz")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("gamma", np.array([0.9, 0.9]), r"gamma must be one number in \(0, 1\)"),
        ("gamma", np.float64(1.0), r"gamma must lie in \(0, 1\), got 1.0"),
        ("gamma", np.array("0.9"), "gamma must hold numbers"),
        ("start", np.float64(1.7), r"start = 1.7 is neither a state index"),
        (
            "start",
            np.array([[0.5, 0.5, 0.0]]),
            r"start must be a state index or a distribution of shape \(3,\)",
        ),
        ("start", np.array([0.5, 0.2, 0.0]), "start distribution sums to 0.7"),
        ("P", chain()[0] + 0j, "P holds complex numbers"),
        ("R", chain()[1] * (1 + 1j), "R holds complex numbers"),
        ("num_actions", np.array([2, 2]), r"num_actions must have shape \(3,\)"),
        ("num_actions", np.array([2, 3, 2]), r"num_actions\[1\] = 3, but P has only A = 2 actions"),
        ("extra", np.ones(2), r"arrays rlfm does not read: \['extra'\]"),
    ],
)
def test_file_fields_are_checked(tmp_path, field, value, message):
    P, R = chain()
    path = save(tmp_path / "m.npz", **{"P": P, "R": R, field: value})
    with pytest.raises(ValueError, match=r"m\.npz: .*" + message):
        TabularMDP.from_npz(path)


@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.uint8])
def test_terminal_of_zeros_and_ones_is_ambiguous(tmp_path, dtype):
    P, R = chain()
    path = save(tmp_path / "m.npz", P=P, R=R, terminal=np.array([0, 0, 1], dtype=dtype))
    with pytest.raises(ValueError, match="could be a mask or the state indices 0 and 1; store a bool mask"):
        TabularMDP.from_npz(path)


def test_terminal_as_bool_mask_or_integer_indices(tmp_path):
    P, R = chain(4)
    for terminal in (np.array([False, False, False, True]), np.array([3]), np.array(3), np.array([3, 3])):
        mdp = TabularMDP.from_npz(save(tmp_path / "m.npz", P=P, R=R, terminal=terminal))
        assert mdp.terminal.tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match="terminal holds floats"):
        TabularMDP.from_npz(save(tmp_path / "m.npz", P=P, R=R, terminal=np.array([3.0])))
    with pytest.raises(ValueError, match="terminal holds the index 4, but there are 4 states"):
        TabularMDP.from_npz(save(tmp_path / "m.npz", P=P, R=R, terminal=np.array([4])))


def test_declared_terminal_state_must_be_absorbing_with_reward_zero():
    P, R = chain()
    with pytest.raises(ValueError, match="terminal state 0 is not absorbing: action 1 leads to state 1"):
        TabularMDP.from_dense(P, R, terminal=np.array([True, False, False]))
    R[2, 0] = 0.5
    with pytest.raises(ValueError, match=r"terminal state 2 must have reward 0, but r\(s=2, a=0\) = 0.5"):
        TabularMDP.from_dense(P, R, terminal=[2])


def test_start_forms():
    P, R = chain()
    assert TabularMDP.from_dense(P, R, start=np.float64(2.0)).start.tolist() == [0, 0, 1]
    assert TabularMDP.from_dense(P, R, start=np.array([1])).start.tolist() == [0, 1, 0]
    assert TabularMDP.from_dense(P, R, start=[0.5, 0.5, 0.0]).start.tolist() == [0.5, 0.5, 0]
    with pytest.raises(ValueError, match=r"start = 1\.7 is neither a state index"):
        TabularMDP.from_dense(P, R, start=1.7)
    with pytest.raises(ValueError, match="got booleans"):
        TabularMDP.from_dense(P, R, start=True)


def test_complex_arrays_are_rejected():
    P, R = chain()
    with pytest.raises(ValueError, match="P holds complex numbers"):
        TabularMDP.from_dense(torch.tensor(P, dtype=torch.complex128), R)
    with pytest.raises(ValueError, match="prob holds complex numbers"):
        TabularMDP.from_transitions([1], [0], [0], [1 + 0j], [0.0])


# -------------------------------------------------------------------------------------------- scoring
def test_normalised_values_do_not_depend_on_the_reward_scale():
    mdp = get_benchmark("gridworld_3x3")
    P, R, _ = mdp.to_dense()
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(mdp.num_state_actions, generator=generator, dtype=torch.float64)
    policy = torch.softmax(logits.view(mdp.num_states, -1), dim=1).flatten()
    expected = normalized_value(mdp, policy)
    for scale in (1e-300, 1e300):
        scaled = TabularMDP.from_dense(P, R * scale, gamma=mdp.gamma, start=mdp.start, terminal=mdp.terminal)
        torch.testing.assert_close(normalized_value(scaled, policy), expected)
        torch.testing.assert_close(Scorer(scaled).normalized(policy[None]), expected)
    flat = TabularMDP.from_dense(P, R * 0, gamma=mdp.gamma, start=mdp.start, terminal=mdp.terminal)
    assert float(normalized_value(flat, policy)) == 0.0  # every policy is worth the same: 0, not NaN


def test_value_gaps_below_the_resolution_of_the_rewards_score_zero_not_huge():
    # state 1 (reward -1 forever) is entered w.p. 1e-13 per step of action 1: every policy of the start state
    # is worth 0 up to 1e-12 of the value scale max|r| / (1 - γ) = 10, so every score is 0 (it was ±10^k)
    mdp = TabularMDP.from_transitions(
        [2, 2],
        [0, 1, 1, 2, 3],
        [0, 1, 0, 1, 1],
        [1.0, 1e-13, 1 - 1e-13, 1.0, 1.0],
        [0.0, 0.0, -1.0, -1.0],
        gamma=0.9,
        start=0,
    )
    optimal, uniform = optimal_and_uniform_start_values(mdp)
    assert float(optimal) == float(uniform) == 0.0
    always_try = torch.tensor([0.0, 1.0, 0.5, 0.5], dtype=torch.float64)
    assert float(normalized_value(mdp, always_try)) == 0.0
    assert float(Scorer(mdp).normalized(always_try[None])) == 0.0


# --------------------------------------------------------------------------------------------- the CLI
def one_line_error(capsys, argv: list[str], *fragments: str) -> str:
    """Run ``rlfm benchmark argv``; assert exit status 2 and one line on stderr holding ``fragments``."""
    with pytest.raises(SystemExit) as exit_info:
        benchmark_main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and all(f in err for f in fragments), err
    return err


@pytest.mark.parametrize(
    "flags,fragment",
    [
        (["--mode", "offline", "--sizes", "8,abc"], "--sizes must be comma-separated positive integers"),
        (["--mode", "offline", "--sizes", "0"], "--sizes must be comma-separated positive integers"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--episodes", "0"], "--episodes must be at least 1, got 0"),
        (["--episodes", "-3"], "--episodes must be at least 1, got -3"),
        (["--horizon", "-1"], "--horizon must be at least 1, got -1"),
        (["--horizon", "0"], "--horizon must be at least 1, got 0"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--window", "0"], "--window must be at least 1, got 0"),
        (["--agents", ","], "--agents ',' names nothing"),
        (["--envs", " , "], "names nothing"),
        (["--mode", "offline", "--epsilon", "2"], "--epsilon must be a probability in [0, 1], got 2.0"),
        (["--agents", "rlfm", "--temperature", "nan"], "--temperature must be a positive finite number"),
        (["--threshold", "nan"], "--threshold must be a normalised score in (0, 1], got nan"),
        (["--threshold", "1.5"], "--threshold must be a normalised score in (0, 1]"),
        (["--agents", "ucbvi", "--checkpoint", "x.pt"], "--checkpoint is read only by the rlfm agent"),
        (["--threads", "abc"], "argument --threads: invalid int value: 'abc'"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, capsys, monkeypatch, flags, fragment):
    monkeypatch.setattr(command, "_run", lambda *args: pytest.fail("the run started"))
    one_line_error(capsys, [*flags, "--out", str(tmp_path / "out")], fragment)


def test_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(command, "_load_mdps", lambda args: pytest.fail("MDPs were loaded"))
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, ["--out", str(tmp_path / "file")], "is a file, not a directory")
    one_line_error(capsys, ["--out", str(tmp_path / "file" / "sub")], "is not a writable directory")

    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(command.tempfile, "TemporaryFile", unwritable)
    one_line_error(capsys, ["--out", str(tmp_path / "fresh")], "not a writable directory (Permission denied)")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write a read-only directory")
def test_read_only_out_is_refused(tmp_path, capsys):
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        one_line_error(capsys, ["--out", str(out)], "is not a writable directory")
    finally:
        out.chmod(0o700)


TINY_RUN = [
    "--envs",
    "gridworld_3x3",
    "--agents",
    "random",
    "--seeds",
    "1",
    "--episodes",
    "2",
    "--no-progress",
]


def test_results_survive_an_out_directory_that_breaks_during_the_run(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real = command._online

    def run_then_break_out(*args):
        records = real(*args)
        (out / "table.md").write_text("old")
        for child in out.iterdir():
            child.unlink()
        out.rmdir()
        out.write_text("now a file")  # writing results.json there fails after all the computing
        return records

    monkeypatch.setattr(command, "_online", run_then_break_out)
    argv = TINY_RUN
    assert benchmark_main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not write to" in err and "the results are saved in" in err
    fallback = Path(err.rsplit("the results are saved in ", 1)[1])
    assert json.loads(fallback.read_text())["results"][0]["env"] == "gridworld_3x3"
    assert out.read_text() == "now a file"


def test_results_are_written_atomically(tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = TINY_RUN
    assert benchmark_main([*argv, "--out", str(out)]) == 0
    previous = (out / "results.json").read_text()

    def failing(path, metadata, records):
        path.write_text("{ half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(command, "write_json", failing)
    assert benchmark_main([*argv, "--out", str(out)]) == 2
    assert (out / "results.json").read_text() == previous  # never half-written
    assert sorted(p.name for p in out.iterdir()) == ["online_curves.png", "results.json", "table.md"]


def test_mdp_files_with_the_same_stem_are_kept_apart(tmp_path):
    first, second = get_benchmark("gridworld_3x3"), get_benchmark("frozenlake_4x4_slip02")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first.save_npz(tmp_path / "a" / "m.npz")
    second.save_npz(tmp_path / "b" / "m.npz")
    second.save_npz(tmp_path / "m-2.npz")  # the second alone, under the name it gets when both are given
    common = ["--agents", "ucbvi", "--no-grid", "--seeds", "2", "--episodes", "3", "--no-progress"]
    both = [str(tmp_path / "a" / "m.npz"), str(tmp_path / "b" / "m.npz")]
    assert benchmark_main([*common, "--mdp", *both, "--out", str(tmp_path / "both")]) == 0
    assert (
        benchmark_main([*common, "--mdp", str(tmp_path / "m-2.npz"), "--out", str(tmp_path / "alone")]) == 0
    )
    records = json.loads((tmp_path / "both" / "results.json").read_text())["results"]
    (alone,) = json.loads((tmp_path / "alone" / "results.json").read_text())["results"]
    assert [r["env"] for r in records] == ["m", "m-2"]
    assert records[1]["learning_curve"] == alone["learning_curve"]  # scored with its own scorer
    offline = [
        "--mode",
        "offline",
        "--agents",
        "ce",
        "--no-grid",
        "--seeds",
        "1",
        "--sizes",
        "8",
        "--no-progress",
    ]
    assert benchmark_main([*offline, "--mdp", *both, "--out", str(tmp_path / "offline")]) == 0
    rows = json.loads((tmp_path / "offline" / "results.json").read_text())["results"]
    assert [r["env"] for r in rows] == ["m", "m-2"]


def test_rlfm_help_lists_every_command_and_predict_is_not_offered(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "benchmark", "speed", "export", "summary"):
        assert f"\n  {name} " in out
    assert "predict" not in out
    assert main(["predict"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown command 'predict'" in err and "predict_policy" in err
    assert main([]) == 2 and "no command given" in capsys.readouterr().err


def test_help_into_a_closed_pipe_stops_quietly():
    # `rlfm --help | head -1`: the reader is gone before rlfm writes
    process = subprocess.Popen(
        [sys.executable, "-m", "rlfm", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()
    assert process.wait(timeout=60) == 1
    assert process.stderr.read() == b""


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rlfm export: error: no checkpoint at {tmp_path / 'missing.ckpt'}"
    assert main(["export", str(PACKAGED_CHECKPOINT), str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["export", str(PACKAGED_CHECKPOINT), str(tmp_path / "h.pt"), "--handoff", "-1"]) == 2
    assert "handoff must be an integer >= 0" in capsys.readouterr().err and not (tmp_path / "h.pt").exists()
    assert main(["export", str(PACKAGED_CHECKPOINT), str(tmp_path / "h.pt"), "--handoff", "50"]) == 0
    assert torch.load(tmp_path / "h.pt", weights_only=True)["config"]["greedy_handoff"] == 50


# -------------------------------------------------------------------------------- the attention layer
def test_attention_needs_edge_attr_when_it_has_an_edge_term():
    x, edge_index = torch.randn(4, 6), torch.tensor([[0, 1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="log_bias_channel set but was called without edge_attr"):
        EdgeBiasedAttention(6, 4)(x, edge_index)
    with pytest.raises(
        ValueError, match="log_bias_channel and edge_dim set but was called without edge_attr"
    ):
        EdgeBiasedAttention(6, 4, edge_dim=2)(x, edge_index)
    with pytest.raises(ValueError, match=r"edge_attr must have shape \(E, D\), got \(3,\)"):
        EdgeBiasedAttention(6, 4)(x, edge_index, torch.rand(3))
    with pytest.raises(ValueError, match="log_bias_channel is 2, but edge_attr has 2 columns"):
        EdgeBiasedAttention(6, 4, log_bias_channel=2)(x, edge_index, torch.rand(3, 2))
    assert EdgeBiasedAttention(6, 4, log_bias_channel=None)(x, edge_index).shape == (4, 4)


def test_attention_accepts_lazy_input_sizes():
    conv = EdgeBiasedAttention(-1, 4, heads=2, edge_dim=-1, root_weight=True)
    x, edge_index, edge_attr = torch.randn(4, 5), torch.tensor([[0, 1, 2], [1, 2, 3]]), torch.rand(3, 3)
    assert conv(x, edge_index, edge_attr).shape == (4, 8)
    assert conv.lin_query.weight.shape == (8, 5) and conv.lin_edge.weight.shape == (2, 3)
    bipartite = EdgeBiasedAttention((-1, -1), 4)
    assert bipartite((torch.randn(3, 5), torch.randn(4, 7)), edge_index, edge_attr).shape == (4, 4)
    assert bipartite.lin_key.weight.shape == (4, 5) and bipartite.lin_query.weight.shape == (4, 7)


def test_shipped_checkpoint_keeps_its_attention_parameter_names():
    state = torch.load(PACKAGED_CHECKPOINT, weights_only=True)["state_dict"]
    for name in (
        "lin_query.weight",
        "lin_query.bias",
        "lin_key.weight",
        "lin_value.weight",
        "lin_edge.weight",
    ):
        assert f"block.attention.{name}" in state
    network = load_network()
    counts = Counts.empty([2, 3]).update([0, 1], [1, 2], [1.0, 0.0], [1, 0])
    assert_policy(predict_policy(counts, 0.9, network=network, num_layers=4), counts)


# ------------------------------------------------------------------------------------ resumed training
class KillAtStep(Callback):
    """SIGKILLs its own process when training reaches ``step`` (the checkpoint of ``step`` is on disk)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def _overrides(path: Path, every_step: bool, kill_at: int | None = None, average: bool = False) -> Path:
    """A config over configs/tiny.yaml: 6 steps, a checkpoint every step (no validation) or every epoch,
    optionally an exponential moving average of the weights."""
    checkpoint = {"dirpath": "checkpoints", "save_last": True}
    trainer: dict = {"max_steps": 6, "logger": False}
    if every_step:
        checkpoint["every_n_train_steps"] = 1
        trainer["limit_val_batches"] = 0
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": checkpoint}]
    if kill_at is not None:
        callbacks.append({"class_path": "tests.test_robustness.KillAtStep", "init_args": {"step": kill_at}})
    if average:
        callbacks.append(
            {"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.5}}
        )
    path.write_text(yaml.safe_dump({"trainer": {**trainer, "callbacks": callbacks}}))
    return path


# dropout and long unrolls make every step draw from both generators (the unroll depth and torch's)
MODEL_FLAGS = ["--model.dropout", "0.2", "--model.long_unroll", "0.5", "--model.long_layers", "[3, 5]"]


@pytest.mark.parametrize(
    "every_step,kill_at,average",
    [
        pytest.param(True, 3, False, id="every-step"),
        pytest.param(True, 3, True, id="every-step-averaged"),
        pytest.param(False, 2, False, id="every-epoch", marks=pytest.mark.slow),
    ],
)
def test_sigkilled_run_resumes_exactly(tmp_path, monkeypatch, every_step, kill_at, average):
    for name in ("straight", "killed", "resumed"):
        (tmp_path / name).mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # the tests run on one thread
    killed_config = _overrides(tmp_path / "killed.yaml", every_step, kill_at, average)
    fit = ["fit", "--config", str(TINY), "--config"]
    killed = subprocess.Popen(
        [sys.executable, "-m", "rlfm.cli", *fit, str(killed_config), *MODEL_FLAGS],
        cwd=tmp_path / "killed",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    config = str(_overrides(tmp_path / "run.yaml", every_step, average=average))
    monkeypatch.chdir(tmp_path / "straight")
    main([*fit, config, *MODEL_FLAGS])  # uninterrupted, meanwhile
    _, err = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, err[-3000:]
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == kill_at
    monkeypatch.chdir(tmp_path / "resumed")
    main([*fit, config, *MODEL_FLAGS, "--ckpt_path", str(last)])

    straight, resumed = (
        torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)
        for run in ("straight", "resumed")
    )
    assert straight["global_step"] == resumed["global_step"] == 6
    weights = ("state_dict", "current_model_state") if average else ("state_dict",)  # the average; trained
    for key in weights:
        assert straight[key].keys() == resumed[key].keys()
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)
    assert isinstance(load_network(tmp_path / "resumed" / "checkpoints" / "last.ckpt"), PolicyNetwork)


# ------------------------------------------------------------------------------------- property-based
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ODD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1.0, 1.7, 1e308, 1e-310])


FIELDS = ("P", "R", "gamma", "start", "terminal", "num_actions")


def broken_field(field: str, S: int, A: int) -> st.SearchStrategy:
    """Malformed values of one field of an MDP with S states and A actions."""
    odd = st.floats(-1, 2) | ODD_FLOATS
    shapes = {"P": (S, A, S), "R": (S, A)}
    if field in shapes:
        shape = shapes[field]
        return (
            hnp.arrays(np.float64, shape, elements=odd)
            | hnp.arrays(np.float64, st.sampled_from([(S * A * S,), (S, A * S), (1, *shape), (A, S)]))
            | hnp.arrays(np.complex128, shape, elements=st.complex_numbers(max_magnitude=1))
            | hnp.arrays(np.bool_, shape)
            | st.just(np.full(shape, "x"))
        )
    if field == "gamma":
        return st.sampled_from([0.0, 1.0, math.nan, -0.5, 2.0, math.inf, True, 0.5j]) | st.builds(
            np.array, st.lists(st.floats(0.1, 0.9), min_size=2, max_size=3)
        )
    if field == "start":
        return st.sampled_from([-1, S, 1.7, math.nan, True, 2 + 0j]) | hnp.arrays(
            np.float64, st.sampled_from([(S,), (S + 1,), (2, S)]), elements=st.floats(0, 1) | ODD_FLOATS
        )
    if field == "terminal":
        return (
            hnp.arrays(np.bool_, st.sampled_from([(S,), (S + 1,)]))
            | hnp.arrays(np.int64, st.integers(1, S + 1), elements=st.integers(-1, S))
            | hnp.arrays(np.float64, (S,), elements=st.sampled_from([0.0, 1.0, 0.5]))
        )
    return hnp.arrays(np.int64, st.sampled_from([(S,), (S + 1,)]), elements=st.integers(-1, A + 1)) | st.just(
        np.full(S, 1.5)
    )


@st.composite
def dense_fields(draw) -> dict:
    """The fields of an MDP file: valid, or with one or two of them malformed in any way."""
    S, A = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    weights = draw(hnp.arrays(np.float64, (S, A, S), elements=st.floats(0, 1))) + 1e-3
    P = weights / weights.sum(axis=2, keepdims=True)
    R = draw(hnp.arrays(np.float64, (S, A), elements=st.floats(-5, 5)))
    fields = {
        "P": P.astype(draw(st.sampled_from([np.float64, np.float32]))),
        "R": R,
        "gamma": draw(st.floats(0.05, 0.99)),
        "start": draw(st.integers(0, S - 1) | st.just(np.full(S, 1 / S))),
        "terminal": None,
        "num_actions": draw(st.none() | hnp.arrays(np.int64, (S,), elements=st.integers(1, A))),
    }
    if draw(st.booleans()):  # the last state declared terminal, absorbing as it must be
        fields["P"][S - 1], fields["P"][S - 1, :, S - 1], fields["R"][S - 1] = 0.0, 1.0, 0.0
        fields["terminal"] = draw(st.sampled_from([np.arange(S) == S - 1, np.array([S - 1])]))
    count = draw(st.sampled_from([0, 1, 1, 2]))
    for field in draw(st.lists(st.sampled_from(FIELDS), min_size=count, max_size=count, unique=True)):
        fields[field] = draw(broken_field(field, S, A))
    return fields


def check_mdp_or_value_error(build, network) -> None:
    """``build()`` raises ValueError or gives a valid MDP whose (empty-data) policy is a distribution."""
    try:
        mdp = build()
    except ValueError:
        return
    mdp.validate()
    counts = Counts.empty_like(mdp)
    assert_policy(predict_policy(counts, mdp.gamma, network=network, num_layers=2), counts)


@PROPERTY
@given(fields=dense_fields())
def test_property_from_dense_gives_a_valid_mdp_or_a_value_error(fields, network):
    check_mdp_or_value_error(lambda: TabularMDP.from_dense(**fields), network)


@PROPERTY
@given(
    fields=dense_fields(), drop=st.sets(st.sampled_from(["gamma", "start", "terminal", "num_actions", "R"]))
)
def test_property_from_npz_gives_a_valid_mdp_or_a_value_error(fields, drop, network, tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "m.npz"
    arrays = {k: np.asarray(v) for k, v in fields.items() if v is not None and k not in drop}
    np.savez(path, **arrays)
    check_mdp_or_value_error(lambda: TabularMDP.from_npz(path), network)


@PROPERTY
@given(data=st.binary(max_size=200))
def test_property_arbitrary_bytes_are_a_value_error(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("bytes") / "m.npz"
    path.write_bytes(data)
    with pytest.raises(ValueError):
        TabularMDP.from_npz(path)


def mostly(valid: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` about four times in five, else ``bad``."""
    return st.sampled_from(range(5)).flatmap(lambda k: bad if k == 4 else valid)


INDEX = mostly(st.integers(0, 3), st.integers(-2, 5) | st.sampled_from([1.5, math.nan, True]))
TRANSITION = st.fixed_dictionaries(
    {
        "state": INDEX,
        "action": mostly(st.integers(0, 2), st.integers(-2, 5) | st.just(0.5)),
        "reward": mostly(st.floats(-10, 10), ODD_FLOATS | st.just(1 + 1j)),
        "next_state": INDEX,
        "terminated": mostly(st.booleans(), st.integers(-1, 2) | st.just(0.5)),
    }
)


@PROPERTY
@given(
    num_actions=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    transitions=st.lists(TRANSITION | st.lists(TRANSITION, min_size=1, max_size=3), max_size=8),
    gamma=st.floats(0.01, 0.99),
)
def test_property_counts_stay_valid_under_any_updates(num_actions, transitions, gamma, network):
    counts = Counts.empty(num_actions)
    for transition in transitions:
        batch = transition if isinstance(transition, list) else [transition]
        fields = {key: [t[key] for t in batch] for key in batch[0]}
        before = counts.copy()
        try:
            counts.update(**fields)
        except ValueError:
            assert torch.equal(counts.sa_count, before.sa_count)
            assert torch.equal(counts.transition_key, before.transition_key)
            assert torch.equal(counts.terminal, before.terminal)
    counts.validate()
    assert_policy(predict_policy(counts, gamma, network=network, num_layers=2), counts)
