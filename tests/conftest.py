from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests run many small tensor operations: one intra-op thread is faster than two, and keeps
    timings sane when the 2-core machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def random_dense_mdp(generator: torch.Generator, S: int, A: int, density: float = 0.5):
    """Random dense (P, R) with some zero transitions; every row sums to 1."""
    weights = torch.rand(S, A, S, generator=generator, dtype=torch.float64)
    weights = weights * (torch.rand(S, A, S, generator=generator) < density)
    weights[torch.arange(S), :, torch.arange(S)] += 1e-3  # keep every row non-empty
    P = weights / weights.sum(-1, keepdim=True)
    R = torch.randn(S, A, generator=generator, dtype=torch.float64)
    return P, R
