import json
import os
import subprocess
import sys
from pathlib import Path

from rlfm.pretrained import load_network

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_pretraining_script_trains_and_exports_a_loadable_network(tmp_path):
    """Its smoke test on the CPU: a few steps of the shipped recipe, the network, logs and its offline
    validation benchmark (one seed here) written to $OUT."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OUT": str(tmp_path),
        "ACCELERATOR": "cpu",
        "WORKERS": "0",
        "EXTRA": "--trainer.max_steps 2 --trainer.enable_progress_bar false",
        "JUDGE_SEEDS": "1",
        "JUDGE_WORKERS": "1",
        "JUDGE_SIZES": "16",
    }
    script = ROOT / "scripts" / "gpu-pretrain.sh"
    done = subprocess.run(
        ["bash", str(script), "run", "1"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert load_network(tmp_path / "network.pt").width == 64  # the shipped recipe's size
    assert "trained for" in (tmp_path / "fit.log").read_text()
    assert (tmp_path / "tensorboard.tgz").stat().st_size > 0
    judged = json.loads((tmp_path / "validation" / "results.json").read_text())
    assert "--default-checkpoint" in judged["command"] and judged["seed"] == 3000
    assert len(list((tmp_path).rglob("*"))) <= 9  # 7 files and a folder: the device returns at most 8 files
    usage = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr
