"""``rlfm speed model``: time and peak memory of one training step, sparse network vs its dense reference.

One step is a train-mode forward, the soft cross-entropy and the backward pass, of the sparse network and
of its dense reference (:mod:`rlfm.dense`), at the reference's scale and beyond. Each measurement runs in a
fresh subprocess (:mod:`rlfm.speed.harness`) so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch_geometric.data import Batch

from rlfm.examples import ExampleSampler
from rlfm.experience import ExperienceConfig
from rlfm.prior import Prior, ReferencePrior, reference_prior
from rlfm.speed.harness import run_in_subprocess
from rlfm.speed.machine import (
    load_text,
    machine_facts,
    meminfo_gb,
    package_versions,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
)
from rlfm.speed.report import table, write_json

STATUS = {"ok": "ok", "timeout": "skipped", "error": "failed"}  # the harness's status → this table's


@dataclass(frozen=True)
class ModelConfig:
    """One ``rlfm speed model`` configuration: a batch from a prior and a network size."""

    prior: str  # "reference" (S ≤ 32), "wide" (S ≤ max_states) or "default" (rlfm's prior and experience)
    batch_size: int
    width: int
    heads: int
    num_layers: int
    max_states: int = 32
    dropout: float = 0.05
    planner_inputs: bool = True  # the network reads the planner columns (False: counts only)


MODEL_CONFIGS = {
    "reference": ModelConfig("reference", batch_size=128, width=256, heads=8, num_layers=20),
    "wide": ModelConfig("wide", batch_size=16, width=256, heads=8, num_layers=20, max_states=512),
    "small": ModelConfig("reference", batch_size=128, width=64, heads=4, num_layers=12),
    # configs/default.yaml's step: 32 MDPs of rlfm's prior with its experience, K = 16 (the mean of 8-24)
    "default": ModelConfig("default", batch_size=32, width=64, heads=4, num_layers=16, planner_inputs=False),
    "default-128": ModelConfig(
        "default", batch_size=128, width=64, heads=4, num_layers=16, planner_inputs=False
    ),
}
DENSE_BYTES_PER_ENTRY = 4 * 6  # fp32 attention-map copies kept per layer (logits, exp, weights, ...)
DENSE_BYTES_PER_ROW = 4 * 14  # fp32 values kept per padded row and channel per layer (MLP, norm, concat)


def model_batch(config: ModelConfig, seed: int) -> Batch:
    """The benchmark batch: the reference's generative data on MDPs of the config's prior (rlfm's own
    experience for the "default" prior)."""
    if config.prior == "default":
        sampler = ExampleSampler(planner_columns=config.planner_inputs)
        return Batch.from_data_list(sampler.sample(config.batch_size, torch.Generator().manual_seed(seed)))
    if config.prior == "reference":
        prior = reference_prior()
    else:
        prior = Prior(
            weights={"reference": 1.0},
            horizon=(20.0, 20.0),
            reference=ReferencePrior(max_states=config.max_states),
        )
    sampler = ExampleSampler(prior=prior, experience=ExperienceConfig(weights={"generative": 1.0}))
    return Batch.from_data_list(sampler.sample(config.batch_size, torch.Generator().manual_seed(seed)))


def batch_shape(data: Batch) -> dict[str, int]:
    """Sizes of a batch, sparse and padded."""
    num_actions = torch.bincount(
        data["state_action", "of", "state"].edge_index[1], minlength=data["state"].num_nodes
    )
    return {
        "graphs": int(data.num_graphs),
        "states": int(data["state"].num_nodes),
        "state_actions": int(data["state_action"].num_nodes),
        "edges": int(data["state", "from", "state_action"].num_edges),
        "S_max": int(data["state"].ptr.diff().max()),
        "A_max": int(num_actions.max()),
    }


def dense_memory_estimate(config: ModelConfig, shape: dict[str, int]) -> float:
    """A rough upper estimate (GB) of a dense training step's activations, from the padded sizes."""
    B, S, A, d = shape["graphs"], shape["S_max"], shape["A_max"], config.width
    attention = B * config.heads * S * A * S * DENSE_BYTES_PER_ENTRY
    rows = B * S * (A + 1) * d * DENSE_BYTES_PER_ROW
    edges = B * S * A * S * (2 * 4 + 1)  # dense edge features and mask
    return (config.num_layers * (attention + rows) + edges) / 2**30


def measure_step(spec: dict[str, Any]) -> dict[str, Any]:
    """Time and peak memory of training steps of one implementation on one config (run in a fresh process).

    ``spec``: config (a :class:`ModelConfig` as dict), impl ("sparse" or "dense"), device, repeats, threads,
    seed. Returns the measurements as a dict.
    """
    from rlfm.dense import DensePolicyNetwork, to_dense
    from rlfm.network import PolicyNetwork, group_softmax

    torch.set_num_threads(spec["threads"])
    config, impl, device = ModelConfig(**spec["config"]), spec["impl"], torch.device(spec["device"])
    cuda = device.type == "cuda"
    data = model_batch(config, spec["seed"])
    torch.manual_seed(spec["seed"])
    net = PolicyNetwork(config.width, config.heads, config.num_layers, config.dropout, config.planner_inputs)
    net = net.to(device).train()
    result = {"parameters": sum(p.numel() for p in net.parameters())}
    start = time.perf_counter()
    if impl == "dense":
        dense_net = DensePolicyNetwork(net)
        batch = to_dense(data).to(device)
        result["convert_s"] = time.perf_counter() - start
    data = data.to(device)
    target, num_states = data["state_action"].target, data["state"].num_nodes

    def step(num_layers: int | None = None) -> None:
        if impl == "dense":
            policy = batch.to_sparse(dense_net.policy(batch, num_layers))
        else:
            policy = group_softmax(net(data, num_layers), data)
        loss = -(target * policy.clamp(min=1e-30).log()).sum() / num_states  # soft cross-entropy
        loss.backward()
        net.zero_grad(set_to_none=True)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    step(num_layers=1)  # warm-up: kernels, allocator, lazy initialisation
    sync()
    gc.collect()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result["memory_method"] = "torch.cuda.max_memory_allocated minus memory_allocated before the step"
    else:
        base = rss_mb()
        result["memory_method"] = reset_peak_rss() + ", minus VmRSS before the step"
    times = []
    for repeat in range(spec["repeats"]):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
        if repeat == 0:
            if cuda:
                peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            else:
                peak = peak_rss_mb(result["memory_method"]) - base
            result["peak_mb"] = peak
    result.update(step_s=min(times), step_s_mean=sum(times) / len(times), step_s_all=times)
    return result


def run_model(args: argparse.Namespace) -> int:
    """Measure ``args.configs`` × ``args.impls``, print the table and write ``args.out``."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    cuda = args.device.startswith("cuda")
    repeats = args.repeats or (5 if cuda else 1)
    threads = args.threads or os.cpu_count() or 1
    if cuda:  # default: most of the accelerator's memory
        total = torch.cuda.get_device_properties(torch.device(args.device)).total_memory / 2**30
        memory_limit_gb = args.max_dense_gb or 0.9 * total
    else:  # default: 8 GB, and never more than 60 % of the memory available now
        memory_limit_gb = min(args.max_dense_gb or 8.0, 0.6 * (meminfo_gb("MemAvailable") or math.inf))
    rows = []
    for name in args.configs:
        config = MODEL_CONFIGS[name]
        shape = batch_shape(model_batch(config, args.seed))
        estimate = dense_memory_estimate(config, shape)
        sparse_s = None
        for impl in args.impls:
            row = {"config": name, "impl": impl, **asdict(config), **shape}
            if impl == "dense":
                row["dense_estimate_gb"] = round(estimate, 2)
                padded = shape["graphs"] * shape["S_max"] * (shape["A_max"] + 1)
                predicted = None
                if sparse_s is not None:  # dense work grows with the padded rows
                    predicted = sparse_s * padded / (shape["states"] + shape["state_actions"])
                if estimate > memory_limit_gb:
                    row.update(
                        status="skipped", reason=f"estimated {estimate:.1f} GB > {memory_limit_gb:.1f} GB"
                    )
                elif predicted is not None and predicted > args.max_dense_s:
                    row.update(
                        status="skipped", reason=f"predicted {predicted:.0f} s > {args.max_dense_s:.0f} s"
                    )
            if "status" not in row:
                spec = {
                    "config": asdict(config),
                    "impl": impl,
                    "device": args.device,
                    "repeats": repeats,
                    "threads": threads,
                    "seed": args.seed,
                }
                result = run_in_subprocess(f"{__name__}:measure_step", spec, args.timeout)
                row.update(result, status=STATUS[result["status"]])
            if row.get("status") == "ok":
                row["examples_per_s"] = round(config.batch_size / row["step_s"], 1)
            if impl == "sparse" and row.get("status") == "ok":
                sparse_s = row["step_s"]
            rows.append(row)
            summary = (
                f"{row['step_s']:.2f} s, {row['peak_mb']:.0f} MB"
                if row.get("status") == "ok"
                else f"{row['status']}: {row.get('reason')}"
            )
            print(f"{name} / {impl}: {summary}", flush=True)
    for row in rows:
        for key in ("step_s", "step_s_mean", "peak_mb", "convert_s"):
            if isinstance(row.get(key), float):
                row[key] = round(row[key], 3 if key != "peak_mb" else 1)
        row["padded"] = f"{row['graphs']}/{row['S_max']}/{row['A_max']}"
    print()
    print(
        table(
            rows,
            [
                ("config", "config"),
                ("impl", "impl"),
                ("width", "d"),
                ("heads", "H"),
                ("num_layers", "K"),
                ("padded", "B/S_max/A_max"),
                ("states", "S"),
                ("state_actions", "SA"),
                ("edges", "E"),
                ("step_s", "fwd+bwd s"),
                ("examples_per_s", "MDPs/s"),
                ("peak_mb", "peak MB"),
                ("status", "status"),
            ],
        )
    )
    print(
        f"(torch threads {threads}, {repeats} timed step(s) after a K = 1 warm-up; load average {load_text()})"
    )
    for row in rows:
        if row.get("status") != "ok":
            print(f"  {row['config']} / {row['impl']}: {row['status']}: {row.get('reason')}")
    write_json(
        args.out,
        {
            "benchmark": "model",
            "machine": machine_facts(args.device),
            "versions": package_versions(),
            "settings": {
                "device": args.device,
                "threads": threads,
                "repeats": repeats,
                "seed": args.seed,
                "timeout_s": args.timeout,
                "dense_memory_limit_gb": round(memory_limit_gb, 2),
                "max_dense_s": args.max_dense_s,
                "step": "train-mode forward with the config's K, soft cross-entropy on the targets, "
                "backward; a K = 1 warm-up step first; step_s is the fastest of the repeats",
                "data": "the reference's generative experience: "
                "ExperienceConfig(weights={'generative': 1.0})",
                "memory_method": "each measurement in a fresh subprocess; see each row's memory_method",
            },
            "results": rows,
        },
    )
    return 0
