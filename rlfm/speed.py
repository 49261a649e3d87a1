"""Benchmarks: how fast the prior makes training examples, and what a training step costs, sparse vs dense.

``rlfm speed prior``: examples per second from :meth:`rlfm.examples.ExampleSampler.sample` (MDPs sampled,
solved for their targets, experience drawn, observation graphs built) for the reference prior with the
reference's generative data, the reference prior with rlfm's default experience, and rlfm's default
mixture prior; in one process and with N worker processes (a ``DataLoader`` over an ``IterableDataset``,
one torch thread per worker, each batch collated in its worker and sent to the main process).

``rlfm speed model``: time and peak memory of one training step (forward, soft cross-entropy, backward) of
the sparse network and of its dense reference (:mod:`rlfm.dense`), at the reference's scale and beyond.
Each measurement runs in a fresh subprocess so that its peak memory is its own.

Both print a table and write JSON with the machine's description; neither asserts anything about time.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch_geometric.data import Batch

from rlfm.examples import ExampleSampler
from rlfm.experience import ExperienceConfig
from rlfm.prior import Prior, ReferencePrior, reference_prior

# ---------------------------------------------------------------------------------------------- common


def machine_info(device: str = "cpu") -> dict:
    """CPU model, cores, memory, library versions and the accelerator's name."""
    cpu_model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_gb": _meminfo_gb("MemTotal"),
        "memory_available_gb": _meminfo_gb("MemAvailable"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_geometric": _version("torch_geometric"),
        "device": device,
        "device_name": cpu_model,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def _meminfo_gb(field: str) -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**20  # kB → GB
    except OSError:
        pass
    return None


def _write_json(path: str, payload: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Rows of dicts as a fixed-width text table; ``columns`` are (key, header)."""
    cells = [[header for _, header in columns]]
    cells += [["" if row.get(key) is None else str(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- prior


def prior_samplers() -> dict[str, ExampleSampler]:
    """The three example samplers compared by ``rlfm speed prior``."""
    return {
        "reference+generative": ExampleSampler(
            prior=reference_prior(), experience=ExperienceConfig(weights={"generative": 1.0})
        ),
        "reference+default": ExampleSampler(prior=reference_prior()),
        "default": ExampleSampler(),
    }


class ExampleStream(IterableDataset):
    """Endless batches of training examples, collated into one PyG ``Batch`` per item.

    Each worker seeds its own generator from ``seed`` and its worker id, so workers never repeat each other.
    """

    def __init__(self, sampler: ExampleSampler, batch_size: int, seed: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        generator = torch.Generator().manual_seed(self.seed * 1009 + worker)
        while True:
            yield Batch.from_data_list(self.sampler.sample(self.batch_size, generator))


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)


def _identity(item: Batch) -> Batch:
    return item


def time_single_process(sampler: ExampleSampler, batch_size: int, batches: int, seed: int) -> dict:
    """Examples/s of ``sampler.sample`` alone, and with collation into a ``Batch``, in this process."""
    generator = torch.Generator().manual_seed(seed)
    sampler.sample(batch_size, generator)  # warm-up
    sample_s = collate_s = 0.0
    for _ in range(batches):
        start = time.perf_counter()
        graphs = sampler.sample(batch_size, generator)
        middle = time.perf_counter()
        Batch.from_data_list(graphs)
        sample_s += middle - start
        collate_s += time.perf_counter() - middle
    examples = batch_size * batches
    return {
        "examples_per_s": examples / sample_s,
        "examples_per_s_with_collate": examples / (sample_s + collate_s),
        "ms_per_batch": 1000 * sample_s / batches,
        "collate_ms_per_batch": 1000 * collate_s / batches,
    }


def time_workers(sampler: ExampleSampler, batch_size: int, batches: int, workers: int, seed: int) -> dict:
    """Examples/s delivered to this process by ``workers`` DataLoader workers (sample + collate + transfer),
    timed after each worker has delivered one batch (start-up excluded)."""
    loader = DataLoader(
        ExampleStream(sampler, batch_size, seed),
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_one_thread,
        collate_fn=_identity,
        prefetch_factor=2,
    )
    iterator = iter(loader)
    try:
        for _ in range(workers):
            next(iterator)
        start = time.perf_counter()
        examples = sum(next(iterator).num_graphs for _ in range(batches))
        elapsed = time.perf_counter() - start
    finally:
        del iterator  # shuts the workers down
    return {"examples_per_s": examples / elapsed, "ms_per_batch": 1000 * elapsed / batches}


def run_prior(args: argparse.Namespace) -> int:
    samplers = prior_samplers()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for name in args.configs:
            sampler = samplers[name]
            single = time_single_process(sampler, args.batch_size, args.batches, args.seed)
            rows.append({"config": name, "mode": "single", "workers": 1, **single})
            print(f"{name}: single process {single['examples_per_s']:.0f} examples/s", flush=True)
            if args.workers > 0:
                parallel = time_workers(sampler, args.batch_size, args.batches, args.workers, args.seed)
                rows.append({"config": name, "mode": "workers", "workers": args.workers, **parallel})
                print(
                    f"{name}: {args.workers} workers {parallel['examples_per_s']:.0f} examples/s", flush=True
                )
    finally:
        torch.set_num_threads(threads)
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float):
                row[key] = round(value, 1)
    print()
    print(
        _table(
            rows,
            [
                ("config", "config"),
                ("mode", "mode"),
                ("workers", "procs"),
                ("examples_per_s", "examples/s"),
                ("examples_per_s_with_collate", "incl. collate"),
                ("ms_per_batch", "ms/batch"),
            ],
        )
    )
    print(
        f"(batch of {args.batch_size}; 'single': ExampleSampler.sample in this process, 1 thread; 'workers': "
        "sample + collate in DataLoader workers, delivered to this process; load average "
        f"{_load()})"
    )
    _write_json(
        args.out,
        {
            "benchmark": "prior",
            "machine": machine_info(),
            "settings": {
                "batch_size": args.batch_size,
                "timed_batches": args.batches,
                "workers": args.workers,
                "threads_per_process": 1,
                "seed": args.seed,
            },
            "results": rows,
        },
    )
    return 0


# ---------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelConfig:
    """One ``rlfm speed model`` configuration: a batch from a prior and a network size."""

    prior: str  # "reference" (S ≤ 32) or "wide" (S ≤ max_states)
    batch_size: int
    width: int
    heads: int
    num_layers: int
    max_states: int = 32
    dropout: float = 0.05


MODEL_CONFIGS = {
    "reference": ModelConfig("reference", batch_size=128, width=256, heads=8, num_layers=20),
    "wide": ModelConfig("wide", batch_size=16, width=256, heads=8, num_layers=20, max_states=512),
    "small": ModelConfig("reference", batch_size=128, width=64, heads=4, num_layers=12),
}
DENSE_BYTES_PER_ENTRY = 4 * 6  # fp32 attention-map copies kept per layer (logits, exp, weights, ...)
DENSE_BYTES_PER_ROW = 4 * 14  # fp32 values kept per padded row and channel per layer (MLP, norm, concat)


def model_batch(config: ModelConfig, seed: int) -> Batch:
    """The benchmark batch: the reference's generative data on MDPs of the config's prior."""
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


def batch_shape(data: Batch) -> dict:
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


def dense_memory_estimate(config: ModelConfig, shape: dict) -> float:
    """A rough upper estimate (GB) of a dense training step's activations, from the padded sizes."""
    B, S, A, d = shape["graphs"], shape["S_max"], shape["A_max"], config.width
    attention = B * config.heads * S * A * S * DENSE_BYTES_PER_ENTRY
    rows = B * S * (A + 1) * d * DENSE_BYTES_PER_ROW
    edges = B * S * A * S * (2 * 4 + 1)  # dense edge features and mask
    return (config.num_layers * (attention + rows) + edges) / 2**30


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _reset_peak_rss() -> str:
    """Reset the kernel's RSS high-water mark; returns the method that :func:`_peak_rss_mb` then uses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM after /proc/self/clear_refs reset, minus VmRSS before the step"
    except OSError:
        return "ru_maxrss minus VmRSS before the step (high-water mark not resettable: an upper bound)"


def _peak_rss_mb(method: str) -> float:
    if method.startswith("VmHWM"):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def measure_step(spec: dict) -> dict:
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
    net = PolicyNetwork(config.width, config.heads, config.num_layers, config.dropout).to(device).train()
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
        base = _rss_mb()
        result["memory_method"] = _reset_peak_rss()
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
                peak = _peak_rss_mb(result["memory_method"]) - base
            result["peak_mb"] = peak
    result.update(step_s=min(times), step_s_mean=sum(times) / len(times), step_s_all=times)
    return result


def _child(spec_json: str) -> int:
    """Entry point of the measuring subprocess: prints one JSON line."""
    try:
        result = {"status": "ok", **measure_step(json.loads(spec_json))}
    except (RuntimeError, MemoryError) as error:  # e.g. "can't allocate memory", CUDA out of memory
        result = {"status": "failed", "reason": f"{type(error).__name__}: {str(error)[:300]}"}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def run_in_subprocess(spec: dict, timeout: float) -> dict:
    """:func:`measure_step` in a fresh Python process, stopped after ``timeout`` seconds."""
    code = "import sys; from rlfm.speed import _child; sys.exit(_child(sys.argv[1]))"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"status": "skipped", "reason": f"timeout after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"status": "failed", "reason": f"exit code {done.returncode}: {' | '.join(tail)[:300]}"}


def run_model(args: argparse.Namespace) -> int:
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
        memory_limit_gb = min(args.max_dense_gb or 8.0, 0.6 * (_meminfo_gb("MemAvailable") or math.inf))
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
                row.update(run_in_subprocess(spec, args.timeout))
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
        _table(
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
                ("peak_mb", "peak MB"),
                ("status", "status"),
            ],
        )
    )
    print(f"(torch threads {threads}, {repeats} timed step(s) after a K = 1 warm-up; load average {_load()})")
    for row in rows:
        if row.get("status") != "ok":
            print(f"  {row['config']} / {row['impl']}: {row['status']}: {row.get('reason')}")
    _write_json(
        args.out,
        {
            "benchmark": "model",
            "machine": machine_info(args.device),
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


# ---------------------------------------------------------------------------------------------- CLI


def speed_main(argv: list[str] | None = None) -> int:
    """``rlfm speed {prior,model}``: benchmark tables printed and written as JSON."""
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

    args = parser.parse_args(argv)
    if args.command == "prior":
        return run_prior(args)
    return run_model(args)


if __name__ == "__main__":
    sys.exit(speed_main())
