"""Benchmarks: how fast the prior makes training examples, what a training step costs, and what one
prediction costs.

- ``rlfm speed prior`` (:mod:`rlfm.speed.prior`): examples per second from the prior, in one process and in
  DataLoader workers.
- ``rlfm speed model`` (:mod:`rlfm.speed.model`): time and peak memory of one training step of the sparse
  network and of its dense reference.
- ``rlfm speed inference`` (:mod:`rlfm.speed.inference`): time and peak memory of one
  ``rlfm.predict_policy`` call on chains of 1k to 100k states and a 50×50 grid.

Each prints a table and writes JSON with the machine's description (:mod:`rlfm.speed.machine`); none
asserts anything about time. ``model`` and ``inference`` measure each case in a fresh subprocess
(:mod:`rlfm.speed.harness`) so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import os

__all__ = ["speed_main"]


def speed_main(argv: list[str] | None = None) -> int:
    """``rlfm speed {prior,model,inference}``: benchmark tables printed and written as JSON."""
    from rlfm.speed.inference import CASES, run_inference
    from rlfm.speed.model import MODEL_CONFIGS, run_model
    from rlfm.speed.prior import prior_samplers, run_prior

    parser = argparse.ArgumentParser(prog="rlfm speed", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    prior = commands.add_parser("prior", help="examples per second from the prior (single and parallel)")
    prior.add_argument("--configs", nargs="+", default=list(prior_samplers()), choices=list(prior_samplers()))
    prior.add_argument("--batch-size", type=int, default=128, help="examples per sample call (default 128)")
    prior.add_argument("--batches", type=int, default=8, help="timed batches per measurement (default 8)")
    prior.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes; 0: single only (default: cores)",
    )
    prior.add_argument("--seed", type=int, default=0)
    prior.add_argument("--out", default="results/speed_prior.json")

    model = commands.add_parser("model", help="training-step time and peak memory, sparse vs dense")
    model.add_argument("--configs", nargs="+", default=list(MODEL_CONFIGS), choices=list(MODEL_CONFIGS))
    model.add_argument("--impls", nargs="+", default=["sparse", "dense"], choices=["sparse", "dense"])
    model.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    model.add_argument("--repeats", type=int, default=None, help="timed steps (default 1 on CPU, 5 on CUDA)")
    model.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    model.add_argument("--timeout", type=float, default=300.0, help="seconds per measurement (default 300)")
    model.add_argument(
        "--max-dense-gb",
        type=float,
        default=None,
        help="skip dense above this estimated memory (default: 8 on CPU, 90%% of the GPU's on CUDA)",
    )
    model.add_argument(
        "--max-dense-s", type=float, default=120.0, help="skip dense above this predicted time (default 120)"
    )
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--out", default="results/speed_model.json")

    inference = commands.add_parser(
        "inference", help="time and peak memory of one rlfm.predict_policy call, per case"
    )
    inference.add_argument(
        "--cases", nargs="+", default=list(CASES), choices=list(CASES), help="default: all of them"
    )
    inference.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    inference.add_argument("--timeout", type=float, default=600.0, help="seconds per case (default 600)")
    inference.add_argument(
        "--checkpoint",
        default=None,
        help="a network file or training checkpoint, or a shipped network's name (default, planner)",
    )
    inference.add_argument("--out", default="results/speed_inference.json")

    args = parser.parse_args(argv)
    if args.command == "prior":
        return run_prior(args)
    if args.command == "model":
        return run_model(args)
    return run_inference(args)
