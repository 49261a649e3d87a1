"""What a measurement ran on: the machine, the package versions, and the process's peak memory.

:func:`machine_facts` and :func:`package_versions` are the ``machine`` and ``versions`` entries of every
results JSON (the speed benchmarks and ``rlfm benchmark``). Versions are read from the installed package
metadata, so describing a machine imports nothing.
"""

from __future__ import annotations

import os
import platform
import resource
from importlib import metadata as importlib_metadata
from typing import Any

import torch

PACKAGES = (
    "rlfm",
    "torch",
    "torch_geometric",
    "lightning",
    "scipy",
    "gymnasium",
    "numpy",
    "matplotlib",
)


def machine_facts(device: str = "cpu") -> dict[str, Any]:
    """Node, platform, processor, cores, torch threads, load, memory, and the accelerator's name.

    ``device`` is where the measurement ran ("cpu" or "cuda[:i]"); on CUDA ``device_name`` is the GPU's.
    """
    cpu_model = _cpu_model()
    facts: dict[str, Any] = {
        "node": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "memory_total_gb": meminfo_gb("MemTotal"),
        "memory_available_gb": meminfo_gb("MemAvailable"),
        "device": device,
        "device_name": cpu_model,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["device_name"] = torch.cuda.get_device_name(torch.device(device))
        facts["cuda"] = torch.version.cuda
    return facts


def package_versions() -> dict[str, str | None]:
    """Python's version and each of :data:`PACKAGES`' installed version (None where not installed)."""
    return {"python": platform.python_version(), **{name: _version(name) for name in PACKAGES}}


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, rounded, or None where the platform has none."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def load_text() -> str:
    """The load averages as one short string for a table's footnote."""
    load = load_average()
    return "n/a" if load is None else " ".join(f"{x:.1f}" for x in load)


def meminfo_gb(field: str) -> float | None:
    """A ``/proc/meminfo`` field (e.g. "MemAvailable") in GB, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 2**20, 2)  # kB → GB
    except OSError:
        pass
    return None


# ------------------------------------------------------------------------------------- peak memory
def rss_mb() -> float:
    """This process's resident memory now (MB)."""
    return _status_mb("VmRSS")


def reset_peak_rss() -> str:
    """Reset the kernel's RSS high-water mark; returns the method that :func:`peak_rss_mb` then uses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM after a /proc/self/clear_refs reset"
    except OSError:
        return "ru_maxrss (high-water mark not resettable: an upper bound over the process's life)"


def peak_rss_mb(method: str) -> float:
    """This process's peak resident memory (MB) since :func:`reset_peak_rss` returned ``method``."""
    if method.startswith("VmHWM"):
        return _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None
