"""Random variates drawn from an explicit ``torch.Generator`` (torch.distributions cannot take one)."""

from __future__ import annotations

import math

import torch
from torch import Generator, Tensor


def uniform(low: float, high: float, generator: Generator, size: tuple[int, ...] = ()) -> Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def log_uniform(low: float, high: float, generator: Generator, size: tuple[int, ...] = ()) -> Tensor:
    """exp(U(log low, log high))."""
    return uniform(math.log(low), math.log(high), generator, size).exp()


def log_uniform_int(low: int, high: int, generator: Generator) -> int:
    """An integer in [low, high] whose logarithm is roughly uniform."""
    return int(log_uniform_ints(low, high, generator, ()))


def log_uniform_ints(low: float, high: float, generator: Generator, size: tuple[int, ...]) -> Tensor:
    """Integers in [low, high]: floor(exp(U(log low, log(high + 1)))), capped at high."""
    return log_uniform(low, high + 1, generator, size).floor().clamp(max=high).long()


def randint(low: int, high: int, generator: Generator) -> int:
    """A uniform integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def bernoulli(p: float | Tensor, generator: Generator, size: tuple[int, ...] = ()) -> Tensor:
    return torch.rand(size, generator=generator, dtype=torch.float64) < p


def choice(weights: dict[str, float], generator: Generator) -> str:
    """A key of ``weights`` drawn with probability proportional to its weight."""
    return choices(weights, 1, generator)[0]


def choices(weights: dict[str, float], count: int, generator: Generator) -> list[str]:
    """``count`` independent draws of a key of ``weights``, with probability proportional to its weight."""
    names = [name for name, w in weights.items() if w > 0]
    if not names:
        raise ValueError(f"no positive weight among {weights}")
    cumulative = torch.tensor([weights[n] for n in names], dtype=torch.float64).cumsum(0)
    u = torch.rand(count, generator=generator, dtype=torch.float64) * cumulative[-1]
    index = torch.searchsorted(cumulative, u, right=True).clamp(max=len(names) - 1)
    return [names[i] for i in index.tolist()]


def log_gamma_variate(alpha: Tensor, generator: Generator, rounds: int = 4) -> Tensor:
    """log of Gamma(alpha, 1) variates, elementwise; safe for tiny alpha.

    Marsaglia-Tsang for Gamma(alpha + 1), with ``rounds`` proposals per element drawn at once (each is
    accepted with probability above 0.95; the rare element rejected in every round gets the mode's value),
    then Gamma(alpha) = Gamma(alpha + 1) · U^(1/alpha), in log space so that alpha = 0.05 cannot underflow.
    """
    alpha = alpha.double()
    d = alpha + 1.0 - 1.0 / 3.0
    c = torch.rsqrt(9.0 * d)
    x = torch.randn((rounds, *alpha.shape), generator=generator, dtype=torch.float64)
    u = torch.rand((rounds + 1, *alpha.shape), generator=generator, dtype=torch.float64).clamp_(min=1e-300)
    v = (1.0 + c * x).clamp_(min=1e-300) ** 3
    accepted = (1.0 + c * x > 0) & (u[:-1].log() < 0.5 * x * x + d - d * v + d * v.log())
    first = accepted.to(torch.uint8).argmax(dim=0, keepdim=True)  # first accepted round
    log_value = torch.where(accepted.any(dim=0), (d * v.gather(0, first).squeeze(0)).log(), d.log())
    return log_value + u[-1].log() / alpha


def dirichlet(alpha: Tensor, mask: Tensor, generator: Generator) -> Tensor:
    """Rows (..., K) of Dirichlet(alpha) over the entries where ``mask`` is True (others 0)."""
    logits = log_gamma_variate(alpha.expand(mask.shape).contiguous(), generator)
    logits = logits.masked_fill(~mask, -math.inf)
    return torch.softmax(logits, dim=-1)


def beta(a: int, b: int, generator: Generator, size: tuple[int, ...] = ()) -> Tensor:
    """Beta(a, b) variates for integer a, b: the a-th smallest of a + b - 1 uniforms."""
    draws = torch.rand((*size, a + b - 1), generator=generator, dtype=torch.float64)
    return draws.sort(dim=-1).values[..., a - 1]
