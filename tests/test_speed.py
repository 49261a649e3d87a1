"""``rlfm speed``: the inference benchmark's cases and output, the machine facts, and a light ``--help``."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from rlfm.cli import main
from rlfm.speed import speed_main
from rlfm.speed.inference import REFERENCE, TARGETS, chain_counts, greedy_path, grid_counts, meets_target
from rlfm.speed.machine import machine_facts, package_versions

ROW_FIELDS = {"case", "states", "state_actions", "transitions", "gamma", "seconds", "peak_rss_gb", "status"}


def test_inference_writes_rows_machine_facts_reference_and_targets(tmp_path, capsys):
    out = tmp_path / "x.json"
    assert speed_main(["inference", "--cases", "chain-1k", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("chain-1k: ") and "peak RSS GB" in printed and f"wrote {out}" in printed
    results = json.loads(out.read_text())
    assert results["benchmark"] == "inference"
    assert results["reference"] == REFERENCE and results["targets"] == TARGETS
    assert {"node", "cpus", "torch_threads"} <= set(results["machine"])
    assert {"python", "torch", "lightning"} <= set(results["versions"])
    assert results["settings"]["threads"] == 1 and results["settings"]["network"]["source"] == "shipped"
    [row] = results["results"]
    assert set(row) >= ROW_FIELDS and "meets_target" not in row  # chain-1k has no target
    assert (row["case"], row["states"], row["state_actions"], row["transitions"]) == (
        "chain-1k",
        1000,
        4000,
        4000,
    )
    assert row["status"] == "ok", row["reason"]
    assert row["seconds"] > 0 and row["peak_rss_gb"] >= row["rss_before_gb"] > 0


def test_a_bad_checkpoint_is_a_one_line_error_before_any_case_runs(tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    argv = [
        "speed",
        "inference",
        "--cases",
        "chain-1k",
        "--checkpoint",
        str(missing),
        "--out",
        str(tmp_path / "x.json"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rlfm speed: error:") and str(missing) in err


def test_cases_are_built_as_specified():
    chain = chain_counts(50)
    assert (chain.num_states, chain.num_state_actions, chain.num_observed) == (50, 200, 200)
    steps = (chain.transition_next - chain.transition_sa // 4) % 50
    assert set(steps.tolist()) <= {0, 1, 2, 3, 47, 48, 49}  # successors within 3 states, around the ring
    grid = grid_counts(3)
    assert grid.num_observed == 3 * 4 * 8 and grid.terminal.tolist() == [False] * 8 + [True]
    assert grid.sa_count.view(9, 4)[8].sum() == 0 and grid.sa_count.view(9, 4)[:8].eq(3).all()
    assert grid.reward_sum.sum() == 3 * 2  # down from (1, 2) and right from (2, 1), 3 times each


def test_greedy_path_follows_the_policy_on_the_grid():
    down, right, up = (torch.eye(4)[a] for a in (1, 3, 0))
    down_then_right = torch.stack([down if s < 6 else right for s in range(9)]).flatten()
    assert greedy_path(down_then_right, side=3, max_steps=90) == 4
    assert greedy_path(up.repeat(9), side=3, max_steps=90) is None  # into the wall, forever


def test_meets_target_needs_an_ok_row_within_every_limit():
    target = TARGETS["grid-50x50"]
    ok = {"status": "ok", "seconds": 1.5, "value_fraction": 0.97}
    assert meets_target(ok, target)
    assert not meets_target({**ok, "value_fraction": 0.5}, target)
    assert not meets_target({**ok, "seconds": 3.0}, target)
    assert not meets_target({"status": "timeout", "seconds": None}, target)


def test_machine_facts_hold_the_benchmark_metadata_keys():
    facts, versions = machine_facts(), package_versions()
    assert {"node", "platform", "processor", "cpus", "torch_threads", "load_average", "device"} <= set(facts)
    assert facts["torch_threads"] == torch.get_num_threads() and facts["device"] == "cpu"
    packages = ("python", "rlfm", "torch", "torch_geometric", "lightning", "scipy", "gymnasium", "numpy")
    assert set(packages) <= set(versions) and versions["torch"] is not None
    json.dumps({"machine": facts, "versions": versions})


def test_help_does_not_import_lightning():
    code = (
        "import sys\n"
        "from rlfm.cli import main\n"
        "for argv in (['--help'], ['speed', '--help'], ['speed', 'inference', '--help'], ['benchmark', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('LIGHTNING', sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "LIGHTNING []"
    assert "inference" in done.stdout  # the help texts were printed
