"""Loading networks: the pretrained one shipped in the package, or any training checkpoint.

Two file formats load: a Lightning checkpoint written by ``rlfm fit`` (``.ckpt``), and the compact format
written by ``rlfm export`` (network sizes, weights and a note on how it was trained, no optimiser state),
which is what ships in ``rlfm/checkpoints/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from rlfm.counts import Counts
from rlfm.graph import observation_graph
from rlfm.network import PolicyNetwork, group_softmax

PACKAGED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "rlfm-default.pt"
FORMAT = "rlfm-network-v1"


def load_network(
    checkpoint: str | Path | None = None, map_location: str | torch.device = "cpu"
) -> PolicyNetwork:
    """The network in ``checkpoint`` (default: the pretrained one shipped with rlfm), in eval mode."""
    path = Path(checkpoint) if checkpoint is not None else PACKAGED_CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    content = torch.load(path, map_location=map_location, weights_only=False)
    config, state_dict = _network_config(content, path)
    network = PolicyNetwork(**config)
    network.load_state_dict(state_dict)
    return network.eval()


def _network_config(content: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if content.get("format") == FORMAT:
        return content["config"], content["state_dict"]
    if "state_dict" in content and "hyper_parameters" in content:  # a Lightning checkpoint of PolicyLearner
        hp = content["hyper_parameters"]
        config = {
            "width": hp["width"],
            "heads": hp["heads"],
            "num_layers": hp["eval_layers"],
            "dropout": hp["dropout"],
        }
        prefix = "network."
        weights = {k[len(prefix) :]: v for k, v in content["state_dict"].items() if k.startswith(prefix)}
        return config, weights
    raise ValueError(
        f"{path} is neither an rlfm export nor a Lightning checkpoint of rlfm.system.PolicyLearner"
    )


def export(checkpoint: str | Path, out: str | Path, note: str = "") -> Path:
    """Write the compact format of the network in ``checkpoint`` to ``out``."""
    network = load_network(checkpoint)
    config = {
        "width": network.width,
        "heads": network.heads,
        "num_layers": network.num_layers,
        "dropout": network.block.update_state[2].p,
    }
    content = {"format": FORMAT, "config": config, "state_dict": network.state_dict(), "note": note}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, out)
    return out


def export_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlfm export", description=export.__doc__)
    parser.add_argument(
        "checkpoint", help="a Lightning checkpoint from `rlfm fit` (e.g. .../checkpoints/last.ckpt)"
    )
    parser.add_argument("out", help="where to write the compact network file")
    parser.add_argument("--note", default="", help="how the network was trained, kept in the file")
    args = parser.parse_args(argv)
    path = export(args.checkpoint, args.out, args.note)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


_cache: dict[str, PolicyNetwork] = {}


@torch.no_grad()
def predict_policy(
    counts: Counts, gamma: float, network: PolicyNetwork | None = None, num_layers: int | None = None
) -> torch.Tensor:
    """π(a | s, data) (SA,) for one MDP's observed ``counts``, in one forward pass, no training.

    Args:
        counts: what has been observed (:class:`~rlfm.counts.Counts`).
        gamma: the discount of the task.
        network: the network to use (default: the pretrained one shipped with rlfm, loaded once).
        num_layers: tied sweeps (default: unroll until the policy settles).
    """
    if network is None:
        if "packaged" not in _cache:
            _cache["packaged"] = load_network()
        network = _cache["packaged"]
    data = observation_graph(counts, gamma)
    if num_layers is None:
        logits, _ = network.settle(data)
    else:
        logits = network(data, num_layers)
    return group_softmax(logits, data)
