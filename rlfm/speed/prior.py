"""``rlfm speed prior``: examples per second from the prior, in one process and in DataLoader workers.

:meth:`rlfm.examples.ExampleSampler.sample` (MDPs sampled, solved for their targets, experience drawn,
observation graphs built) for the reference prior with the reference's generative data, the reference prior
with rlfm's default experience, and rlfm's default mixture prior; in one process and with N worker processes
(a ``DataLoader`` over an ``IterableDataset``, one torch thread per worker, each batch collated in its worker
and sent to the main process).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch_geometric.data import Batch

from rlfm.examples import ExampleSampler
from rlfm.experience import ExperienceConfig
from rlfm.prior import reference_prior
from rlfm.speed.machine import load_text, machine_facts, package_versions
from rlfm.speed.report import table, write_json


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
    """Measure ``args.configs``, print the table and write ``args.out``; returns the exit status."""
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
        table(
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
        f"{load_text()})"
    )
    write_json(
        args.out,
        {
            "benchmark": "prior",
            "machine": machine_facts(),
            "versions": package_versions(),
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
