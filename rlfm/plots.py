"""Figures for TensorBoard and benchmark reports (matplotlib, no display needed)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

ARROWS = ((0, 1), (0, -1), (-1, 0), (1, 0))  # up, down, left, right as (dx, dy) on screen


def normalized_value_figure(values: dict[str, float]) -> Figure:
    """A bar per validation source of the greedy policy's normalised value (1 optimal, 0 uniform)."""
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(values), 3.2))
    names = list(values)
    ax.bar(range(len(names)), [values[n] for n in names], color="tab:blue")
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("normalised value")
    ax.set_ylim(min(-0.1, min(values.values()) - 0.05), 1.1)
    fig.tight_layout()
    return fig


def gridworld_policy_figure(policy: Tensor, title: str) -> Figure:
    """Arrows of π(a | s) on a square grid with 4 actions per cell (up, down, left, right), state 0 top-left."""
    side = math.isqrt(policy.numel() // 4)
    probs = policy.reshape(side, side, 4).float()
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.imshow(probs.max(dim=-1).values, cmap="Blues", vmin=0, vmax=1)
    for row in range(side):
        for col in range(side):
            for action, (dx, dy) in enumerate(ARROWS):
                p = float(probs[row, col, action])
                if p > 0.05:
                    ax.arrow(col, row, 0.4 * p * dx, -0.4 * p * dy, head_width=0.12 * p + 0.02, color="black")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
