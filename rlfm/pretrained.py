"""Loading networks: the pretrained one shipped in the package, or any training checkpoint.

Two file formats load: a Lightning checkpoint written by ``rlfm fit`` (``.ckpt``), and the compact format
written by ``rlfm export`` (network sizes, weights and a note on how it was trained, no optimiser state),
which is what ships in ``rlfm/checkpoints/``: ``default`` (the pretrained network, count inputs) and
``planner`` (the variant that also reads the exact planners' columns: faster and better at planning on
large MDPs, better offline on the validation MDPs but a worse explorer of slippery ones; README
"Ablation"). Both formats are read with ``torch.load(weights_only=True)``, so a file can hold only tensors
and plain containers and loading it never runs code.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from rlfm.arguments import yes_no
from rlfm.counts import Counts
from rlfm.graph import observation_graph
from rlfm.mdp import check_gamma
from rlfm.network import (
    GREEDY_READOUTS,
    PolicyNetwork,
    checked_acting_temperature,
    checked_greedy_from,
    checked_handoff,
    checked_untried,
    group_softmax,
)

PACKAGED = {
    name: Path(__file__).parent / "checkpoints" / f"rlfm-{name}.pt" for name in ("default", "planner")
}
PACKAGED_CHECKPOINT = PACKAGED["default"]
# Above this many states the packaged default is the planner network (see `packaged_network`).
LARGE_MDP_STATES = 256
FORMAT = "rlfm-network-v1"
CONFIG_KEYS = ("width", "heads", "num_layers", "dropout")


def load_network(
    checkpoint: str | Path | None = None,
    map_location: str | torch.device = "cpu",
    trained_weights: bool = False,
) -> PolicyNetwork:
    """The network in ``checkpoint``, in eval mode: a file, or the name of a network shipped with rlfm
    (``"default"``, used when ``checkpoint`` is None, or ``"planner"``). A checkpoint of a run that
    averaged its weights (``EMAWeightAveraging``) gives the average; ``trained_weights=True`` gives the
    weights being trained instead.

    Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a crafted
    file cannot run code. Anything that is not an rlfm export or a Lightning checkpoint of
    :class:`~rlfm.system.PolicyLearner` with finite weights is a ``ValueError`` naming the file.
    """
    path = PACKAGED_CHECKPOINT if checkpoint is None else _checkpoint_path(checkpoint)
    content = _read_checkpoint(path, map_location)
    if trained_weights:
        if not isinstance(content.get("current_model_state"), Mapping):
            raise ValueError(
                f"{path} holds no trained weights beside an average (a Lightning checkpoint of a run with"
                " EMAWeightAveraging has them)"
            )
        content = {**content, "state_dict": content["current_model_state"]}
    config, state_dict = _network_config(content, path)
    try:
        network = PolicyNetwork(**config)
        network.load_state_dict(state_dict)
    except (TypeError, ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0]
        raise ValueError(
            f"{path} does not hold weights of an rlfm network of its stated size ({reason})"
        ) from None
    return network.eval()


def _checkpoint_path(checkpoint: Any) -> Path:
    if not isinstance(checkpoint, str | os.PathLike) or not str(checkpoint).strip():
        raise ValueError(f"checkpoint must be the path of a file, got {checkpoint!r}")
    if isinstance(checkpoint, str) and checkpoint in PACKAGED:
        return PACKAGED[checkpoint]
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not path.is_file():
        raise ValueError(f"checkpoint {path} is a directory, not a .pt or .ckpt file")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty")
    return path


def _read_checkpoint(path: Path, map_location: str | torch.device) -> Mapping[str, Any]:
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found:
            raise ValueError(
                f"{path} holds Python objects ({found.group(1)}) besides tensors and plain containers, which"
                " rlfm does not load: checkpoints are read with torch.load(weights_only=True) and never run code"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
        reason = detail.group(1).strip() if detail else type(error).__name__
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({reason})") from None
    except Exception as error:  # any damage: torch's zip reader and unpickler raise many kinds
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({reason})") from None
    if not isinstance(content, Mapping):
        raise ValueError(f"{path} holds a {type(content).__name__}, not a checkpoint dictionary")
    return content


def _network_config(content: Mapping[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The network's constructor arguments and weights, from an rlfm export or a Lightning checkpoint."""
    if content.get("format") == FORMAT:
        config, weights = content.get("config"), content.get("state_dict")
        if not isinstance(config, Mapping) or set(CONFIG_KEYS) - set(config):
            raise ValueError(f"{path} is an rlfm export without a config holding {', '.join(CONFIG_KEYS)}")
        # files written before the planner columns existed read only the count statistics
        config = {key: config[key] for key in CONFIG_KEYS} | {
            "planner_inputs": config.get("planner_inputs", False),
            "acting_temperature": config.get("acting_temperature", 1.0),
            "acting_untried_bonus": config.get("acting_untried_bonus", 0.0),
            "acting_untried_discount": config.get("acting_untried_discount", 0.0),
            "acting_untried_relative": config.get("acting_untried_relative", False),
            "greedy_handoff": config.get("greedy_handoff", 0),
            "greedy_dominance": config.get("greedy_dominance", False),
            "value_head": config.get("value_head", False),
            "greedy_from": config.get("greedy_from"),
            "value_residual": config.get("value_residual", False),
            "acting_head": config.get("acting_head", False),
        }
    elif "state_dict" in content and "hyper_parameters" in content:  # a Lightning checkpoint of PolicyLearner
        hp = content["hyper_parameters"]
        keys = ("width", "heads", "eval_layers", "dropout")
        if not isinstance(hp, Mapping) or set(keys) - set(hp):
            raise ValueError(
                f"{path} is a Lightning checkpoint without the PolicyLearner hyperparameters {keys}"
            )
        config = {
            "width": hp["width"],
            "heads": hp["heads"],
            "num_layers": hp["eval_layers"],
            "dropout": hp["dropout"],
            "planner_inputs": hp.get("planner_inputs", False),
            "value_head": hp.get("value_head", False),
            "greedy_from": None,  # a trained value head is read
            "value_residual": hp.get("value_residual", False),
            "acting_head": hp.get("acting_head", False),
            "greedy_dominance": False,  # a readout default, set at export
        }
        prefix = "network."
        state_dict = content["state_dict"]
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"{path} has a state_dict that is not a dictionary")
        weights = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    else:
        raise ValueError(
            f"{path} is neither an rlfm export nor a Lightning checkpoint of rlfm.system.PolicyLearner"
        )
    for key in ("width", "heads", "num_layers"):
        if isinstance(config[key], bool) or not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"{path}: the network's {key} must be a positive integer, got {config[key]!r}")
    if isinstance(config["dropout"], bool) or not (
        isinstance(config["dropout"], int | float) and 0 <= config["dropout"] < 1
    ):
        raise ValueError(
            f"{path}: the network's dropout must be a number in [0, 1), got {config['dropout']!r}"
        )
    try:
        checked_acting_temperature(config.get("acting_temperature", 1.0))
        checked_handoff(config.get("greedy_handoff", 0))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    for key in ("planner_inputs", "value_head", "value_residual", "acting_head", "greedy_dominance"):
        if not isinstance(config[key], bool):
            raise ValueError(f"{path}: {key} must be true or false, got {config[key]!r}")
    try:
        checked_greedy_from(config["greedy_from"], config["value_head"])
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"{path} has weights that are not a dictionary of tensors")
    for name, value in weights.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{path}: the weight {name} holds values that are not finite")
    return config, dict(weights)


def export(
    checkpoint: str | Path,
    out: str | Path,
    note: str = "",
    acting_temperature: float | None = None,
    greedy_from: str | None = None,
    trained_weights: bool = False,
    untried: tuple[float, float, bool] | None = None,
    handoff: int | None = None,
    dominance: bool | None = None,
) -> Path:
    """Write the compact format of the network in ``checkpoint`` to ``out`` (``acting_temperature``: the
    sampling temperature agents use by default with it; ``greedy_from``: the head whose argmax is its
    greedy policy, ``"policy"`` or ``"value"``; None keeps the source's for both; ``trained_weights``: of a
    run that averaged its weights, the weights being trained instead of the average; ``untried``: the
    default untried-pair bonus (β, δ, relative) of agents acting with it, None: the source's; ``handoff``:
    the default M of agents' handoff to the planner network, 0: none, None: the source's; ``dominance``:
    whether agents apply the dominance switch by default, None: the source's)."""
    network = load_network(checkpoint, trained_weights=trained_weights)
    if acting_temperature is None:
        acting_temperature = network.acting_temperature
    value_head = network.value_head is not None
    greedy_from = checked_greedy_from(network.greedy_from if greedy_from is None else greedy_from, value_head)
    config = {
        "width": network.width,
        "heads": network.heads,
        "num_layers": network.num_layers,
        "dropout": network.block.update_state[2].p,
        "planner_inputs": network.planner_inputs,
        "acting_temperature": checked_acting_temperature(acting_temperature),
        "acting_untried_bonus": network.acting_untried_bonus if untried is None else float(untried[0]),
        "acting_untried_discount": network.acting_untried_discount if untried is None else float(untried[1]),
        "acting_untried_relative": network.acting_untried_relative if untried is None else bool(untried[2]),
        "greedy_handoff": checked_handoff(network.greedy_handoff if handoff is None else handoff),
        "greedy_dominance": network.greedy_dominance if dominance is None else bool(dominance),
        "value_head": value_head,
        "greedy_from": greedy_from,
        "value_residual": network.value_residual,
        "acting_head": network.acting_head is not None,
    }
    content = {"format": FORMAT, "config": config, "state_dict": network.state_dict(), "note": note}
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{out} is a directory; give the path of the file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(content, buffer)
    _write_atomically(out, buffer.getvalue())
    return out


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it: ``path`` is never half-written."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as file:
        temporary = Path(file.name)
        try:
            file.write(data)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    temporary.chmod(0o644)
    os.replace(temporary, path)


def export_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlfm export", description=export.__doc__)
    parser.add_argument(
        "checkpoint", help="a Lightning checkpoint from `rlfm fit` (e.g. .../checkpoints/last.ckpt)"
    )
    parser.add_argument("out", help="where to write the compact network file")
    parser.add_argument("--note", default="", help="how the network was trained, kept in the file")
    parser.add_argument(
        "--acting-temperature",
        type=float,
        default=None,
        help="T that agents sample the network's policy with by default, π^(1/T) (default: the source's, 1)",
    )
    parser.add_argument(
        "--greedy-from",
        choices=GREEDY_READOUTS,
        default=None,
        help="the head whose argmax is the greedy policy; 'value' needs a value head (default: the source's)",
    )
    parser.add_argument(
        "--untried",
        default=None,
        metavar="BETA,DELTA,RELATIVE",
        help="the untried-pair bonus agents act with by default, e.g. 3,0.5,yes (default: the source's; 0,0,no: none)",
    )
    parser.add_argument(
        "--handoff",
        type=int,
        default=None,
        metavar="M",
        help="agents hand the greedy choice to the planner network in states whose reachable pairs all have M"
        " visits (default: the source's; 0: never)",
    )
    parser.add_argument(
        "--dominance",
        type=yes_no,
        default=None,
        metavar="yes|no",
        help="whether agents apply the dominance switch to the greedy policy by default (default: the source's)",
    )
    parser.add_argument(
        "--trained-weights",
        action="store_true",
        help="of a run that averaged its weights (EMAWeightAveraging): the weights being trained, not the average",
    )
    args = parser.parse_args(argv)
    try:
        path = export(
            args.checkpoint,
            args.out,
            args.note,
            args.acting_temperature,
            args.greedy_from,
            args.trained_weights,
            None if args.untried is None else _untried_setting(args.untried),
            args.handoff,
            args.dominance,
        )
    except (ValueError, OSError) as error:  # FileNotFoundError is an OSError
        print(f"rlfm export: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def _untried_setting(text: str) -> tuple[float, float, bool]:
    """``"3,0.5,yes"`` → (3.0, 0.5, True), checked."""
    parts = [part.strip().lower() for part in text.split(",")]
    if len(parts) != 3 or parts[2] not in ("yes", "no"):
        raise ValueError(f"--untried takes BETA,DELTA,yes|no, e.g. 3,0.5,yes; got {text!r}")
    try:
        bonus, discount = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"--untried takes BETA,DELTA,yes|no, e.g. 3,0.5,yes; got {text!r}") from None
    bonus, discount = checked_untried(bonus, discount)
    return bonus, discount, parts[2] == "yes"


_cache: dict[str, PolicyNetwork] = {}


def packaged_name(num_states: int) -> str:
    """The name of the shipped network :func:`packaged_network` gives an MDP of ``num_states`` states."""
    return "planner" if num_states > LARGE_MDP_STATES else "default"


def network_label(checkpoint: str | Path | None, packaged: str | None) -> str:
    """The network as an agent's settings name it: ``"packaged NAME"`` for the shipped network chosen by
    the MDP's size (``packaged``: its name, else None), the checkpoint given, or ``"given network"``."""
    if packaged is not None:
        return f"packaged {packaged}"
    return "given network" if checkpoint is None else str(checkpoint)


def packaged_network(num_states: int) -> PolicyNetwork:
    """The shipped network used when none is given, for an MDP of ``num_states`` states (loaded once).

    Up to :data:`LARGE_MDP_STATES` states: ``"default"`` (count inputs). Above: ``"planner"``. The count-only
    network was trained on MDPs of at most about 100 states and carries values one step per sweep, so on
    larger MDPs it needs hundreds of sweeps and still plans poorly (on the 576-state validation grid it
    scores below the planner network offline and never converges online, where the planner network
    converges in 94 episodes); the planner network reads exact value iteration on the counts and runs 8
    sweeps at any size. The validation MDPs below 256 states are all far smaller than the threshold."""
    name = packaged_name(num_states)
    if name not in _cache:
        _cache[name] = load_network(name)
    return _cache[name]


@torch.no_grad()
def predict_policy(
    counts: Counts, gamma: float, network: PolicyNetwork | None = None, num_layers: int | None = None
) -> torch.Tensor:
    """π(a | s, data) (SA,) for one MDP's observed ``counts``, in one forward pass, no training.

    Args:
        counts: what has been observed (:class:`~rlfm.counts.Counts`), checked with ``counts.validate()``.
        gamma: the discount of the task, a real number with 0 < gamma < 1.
        network: the network to use (default: a network shipped with rlfm, loaded once: the count-only
            one up to 256 states, the planner network above, :func:`packaged_network`).
        num_layers: tied sweeps, a positive integer (default: the network's own rule,
            :meth:`~rlfm.network.PolicyNetwork.infer`).

    Its argmax over each state's actions is the greedy policy, except for a network that reads its greedy
    policy from a value head (``network.greedy_from == "value"``): :func:`predict` gives both.
    Raises ``ValueError`` for any input outside these ranges.
    """
    return predict(counts, gamma, network, num_layers)[0]


class Prediction(NamedTuple):
    """What :func:`predict` returns, each over the MDP's pairs (SA,)."""

    policy: torch.Tensor  # π(a | s, data): the policy head's softmax
    greedy_scores: torch.Tensor | None  # a value head's advantages, where the greedy policy is read there
    acting_policy: torch.Tensor  # the policy agents sample: the acting head's softmax, else ``policy``


@torch.no_grad()
def predict(
    counts: Counts, gamma: float, network: PolicyNetwork | None = None, num_layers: int | None = None
) -> Prediction:
    """:func:`predict_policy`'s π (SA,); for a network that reads its greedy policy from its value head,
    the predicted advantages (SA,) whose argmax over each state's actions is that policy (else None: the
    greedy policy is π's argmax); and the policy an agent samples (the acting head's, or π)."""
    if not isinstance(counts, Counts):
        raise ValueError(f"counts must be an rlfm.Counts, got {type(counts).__name__}")
    counts.validate()
    gamma = check_gamma(gamma)
    if num_layers is not None and (
        isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1
    ):
        raise ValueError(f"num_layers must be a positive integer or None, got {num_layers!r}")
    if network is None:
        network = packaged_network(counts.num_states)
    data = observation_graph(counts, gamma, planner=network.reads_planner_columns)
    settled = network.infer(data, num_layers=num_layers)
    logits, greedy_scores, acting = settled.logits, settled.greedy_scores, settled.acting_logits
    policy, acting_policy = group_softmax(logits, data), group_softmax(acting, data)
    if not all(torch.isfinite(x).all() for x in (policy, greedy_scores, acting_policy)):
        raise ValueError("the network returned a policy that is not finite; are its weights damaged?")
    return Prediction(policy, greedy_scores if network.greedy_from == "value" else None, acting_policy)
