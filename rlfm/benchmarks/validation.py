"""The validation MDPs: hand-built MDPs that belong to no reported suite, for choosing and tuning.

Everything that selects something for rlfm (the ``best-{step}`` checkpoint, the target temperature, the
acting temperature, prior weights) is judged on these and on fresh draws from the training prior, never on
the ``reference`` or ``standard`` suites of ``rlfm benchmark``, which are for reporting only. They are of
the same kinds as the reported benchmarks (grids, slippery lakes, chains, random MDPs, a cliff, a hub with
rare-success doors, a deep sea) but of other sizes, layouts and parameters; the tests assert that no validation MDP
equals a reported one.

``rlfm benchmark --suite validation`` runs the protocols on them (for tuning the agent's settings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from rlfm.benchmarks.classic import cliff_grid, deepsea, garnet, nchain, walled_gridworld
from rlfm.benchmarks.reference import frozenlake_style, gridworld
from rlfm.mdp import TabularMDP
from rlfm.prior.hubs import hub_and_rooms

ROOMS_7X7 = (
    "S..#...",
    "...#...",
    ".......",
    "##.####",
    "...#...",
    ".......",
    "...#..G",
)


def open_grid(side: int, gamma: float, name: str) -> TabularMDP:
    """An open ``side`` × ``side`` grid, the goal in the far corner, every other cell a start state.

    The uniform start makes the behaviour data cover the whole grid, so what is judged is planning over
    distances of up to 2·(side − 1) steps at a long horizon, not exploration."""
    layout = ("S" + "." * (side - 1),) + ("." * side,) * (side - 2) + ("." * (side - 1) + "G",)
    mdp = walled_gridworld(layout, gamma=gamma, name=name)
    start = (~mdp.terminal).double()
    return replace(mdp, start=start / start.sum())


VALIDATION: dict[str, Callable[[], TabularMDP]] = {
    "val_gridworld_4x4": lambda: _renamed(gridworld(4), "val_gridworld_4x4"),
    "val_frozenlake_5x5_slip03": partial(
        frozenlake_style, holes=(6, 8, 13, 16), goal=24, slip=0.3, size=5, name="val_frozenlake_5x5_slip03"
    ),
    "val_chain_10": lambda: _renamed(nchain(10, slip=0.1, gamma=0.95), "val_chain_10"),
    "val_rooms_7x7": partial(walled_gridworld, ROOMS_7X7, gamma=0.97, name="val_rooms_7x7"),
    "val_garnet_30_3": lambda: _renamed(garnet(30, 3, 3, seed=7, gamma=0.9), "val_garnet_30_3"),
    "val_open_grid_24x24": partial(open_grid, 24, gamma=0.99, name="val_open_grid_24x24"),
    # CliffWalking's rules on a 4 × 16 grid (its own is 4 × 12): with little data, a greedy policy that is
    # optimistic about unvisited moves walks into the cliff
    "val_cliff_4x16": partial(cliff_grid, 4, 16, gamma=0.99, name="val_cliff_4x16"),
    # four rooms behind doors that open w.p. 1, 0.2, 0.05, 0.02; the rarest hides the best (optimal: door 4)
    "val_hub_4": partial(
        hub_and_rooms,
        (1.0, 0.2, 0.05, 0.02),
        ((0, 2), (1, 3), (0,), (3,)),
        (10.0, 40.0, 200.0, 900.0),
        0.95,
        "val_hub_4",
    ),
    # a deep sea of depth 12 with its own labelling of "right": one path of 12 costly steps finds the reward
    "val_deepsea_12": lambda: _renamed(deepsea(12, seed=1), "val_deepsea_12"),
    # consistency probes (what planning on ample data gets right and a network may not): the lake above
    # with gymnasium's slip (the intended move w.p. 1/3), where Q-gaps are small ...
    "val_frozenlake_5x5_slip067": partial(
        frozenlake_style, holes=(6, 8, 13, 16), goal=24, slip=2 / 3, size=5, name="val_frozenlake_5x5_slip067"
    ),
    # ... and five rooms whose first, entered w.p. 1 and paying on three of five actions, distracts from
    # the best one behind the rarest door (w.p. 0.015), as certainty equivalence finds with enough data
    "val_hub_5_rare": partial(
        hub_and_rooms,
        (1.0, 0.3, 0.1, 0.04, 0.015),
        ((0, 2, 4), (1,), (2,), (3,), (4,)),
        (30.0, 100.0, 400.0, 1200.0, 4000.0),
        0.95,
        "val_hub_5_rare",
    ),
}
"""Builders by name; each call builds a fresh MDP."""


def _renamed(mdp: TabularMDP, name: str) -> TabularMDP:
    return replace(mdp, name=name, check=False)


def validation_mdp(name: str) -> TabularMDP:
    """The validation MDP called ``name`` (see :data:`VALIDATION`)."""
    if name not in VALIDATION:
        raise KeyError(f"unknown validation MDP {name!r}; choose from {sorted(VALIDATION)}")
    return VALIDATION[name]()


def same_mdp(a: TabularMDP, b: TabularMDP) -> bool:
    """True if ``a`` and ``b`` have the same states, actions, transitions, rewards and discount."""
    return (
        a.num_actions.equal(b.num_actions)
        and a.transition_sa.equal(b.transition_sa)
        and a.transition_next.equal(b.transition_next)
        and a.transition_prob.allclose(b.transition_prob)
        and a.reward.allclose(b.reward)
        and a.gamma == b.gamma
    )
