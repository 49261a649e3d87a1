r"""The policy network: encoders, one weight-tied propagation block applied K times, and a policy head.

Input: an observation graph (:mod:`rlfm.graph`) or a PyG batch of them. Output: one logit per
state-action; a softmax over each state's own actions is the policy π(a | s, data), an estimate of
P(a is optimal | data) learned from the prior. The block acts like one learned value-iteration sweep, so
K can be raised at inference for MDPs whose values travel further than the training MDPs'
(:meth:`PolicyNetwork.settle` unrolls until the policy stops changing).

How information reaches pairs and states without data: an unvisited state-action has no successor edge,
so its attention message is zero and it reads the mean of its MDP's state embeddings instead (a uniform
guess of its successor, O(S) rather than O(S²·A) edges), besides its own inputs (count 0, visited 0).
An unvisited state reads its actions (max and mean) and is read by any pair observed to reach it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.utils import scatter, softmax

from rlfm.graph import (
    CE_ADVANTAGE,
    COUNT_FEATURES,
    EDGE_FEATURES,
    FROM,
    OF,
    STATE,
    STATE_ACTION,
    STATE_ACTION_FEATURES,
    STATE_FEATURES,
    observed_diameters,
)
from rlfm.nn.block import PropagationBlock, mlp

GREEDY_READOUTS = ("policy", "value")


DEPTH_RULES = ("settle", "diameter")
"""How a count-only network chooses its sweeps at inference (:meth:`PolicyNetwork.infer`)."""
DEFAULT_DEPTH_RULE = "settle"  # judged against "diameter" on validation, rule (xl)


class Readout(NamedTuple):
    """The heads' outputs after one sweep: policy logits (SA,), with a value head the predicted relative
    advantages (SA,) and with an acting head its logits (SA,) (else None)."""

    logits: Tensor
    values: Tensor | None
    acting: Tensor | None = None


class Settled(NamedTuple):
    """What :meth:`PolicyNetwork.settle_from` and :meth:`PolicyNetwork.infer` return: logits (SA,), sweeps
    per MDP (B,), the final embeddings (h_state (S, d), h_sa (SA, d)), the scores (SA,) whose argmax over
    each state's actions is the network's greedy policy (:attr:`PolicyNetwork.greedy_from`) and the logits
    (SA,) an agent samples its actions from (:meth:`PolicyNetwork.acting_logits`)."""

    logits: Tensor
    sweeps: Tensor
    embeddings: tuple[Tensor, Tensor]
    greedy_scores: Tensor
    acting_logits: Tensor


class PolicyNetwork(nn.Module):
    """In-context policy network for tabular MDPs of any size.

    Args:
        width: embedding size d.
        heads: attention heads.
        num_layers: default number K of tied propagation sweeps.
        dropout: dropout of the MLPs.
        planner_inputs: read the exact planners' columns of the observation graph (certainty-equivalent
            and optimistic values, :func:`rlfm.graph.planner_features`); False reads only the count
            statistics (the paper's inputs, kept for ablations and older checkpoints).
        acting_temperature: the T an in-context agent samples this network's policy with by default,
            a ~ π^(1/T) (chosen per shipped network on the online validation MDPs; 1: as learned).
        acting_untried_bonus, acting_untried_discount, acting_untried_relative: the untried-pair bonus an
            in-context agent adds when sampling this network's policy by default (β, δ and whether U is
            relative to the state's largest; :func:`rlfm.agents.planning.untried_scores`; β = 0: none).
        greedy_handoff: M of the handoff an in-context agent applies to this network's greedy policy by
            default: in states whose reachable pairs all have M visits or more, the shipped planner
            network's greedy action (:class:`rlfm.agents.incontext.BatchedInContextAgent`; 0: none).
        greedy_dominance: whether an in-context agent applies the dominance switch to this network's greedy
            policy by default (certainty equivalence's whole plan where its worst case beats the network's
            best case, :mod:`rlfm.agents.dominance`).
        value_head: add a head beside the policy head that predicts each pair's relative advantage
            (Q*(s, a) − max_b Q*(s, b)) / (max_b Q*(s, b) − min_b Q*(s, b)) ∈ [−1, 0], trained by regression
            (:func:`rlfm.system.value_losses`): its posterior mean given the data, a greedy readout that
            the exploration in the sampled policy does not bend.
        value_residual: the value head predicts a correction to certainty equivalence's relative advantage
            (the planner column ``ce_advantage``, normalised the same way) instead of the advantage itself:
            its last layer starts at zero, so the untrained readout is exactly the certainty-equivalent
            greedy policy, and with ample data (where the posterior mean of the advantage tends to
            certainty equivalence's) the correction only has to vanish. Needs ``value_head``; the graphs
            must carry the planner columns (:attr:`reads_planner_columns`) even where the trunk reads the
            count statistics only (``planner_inputs`` False: a residual head beside a count-only network).
        greedy_from: which head's argmax is the greedy policy: ``"policy"`` (the most probable action) or
            ``"value"`` (the highest predicted advantage; needs ``value_head``); None: the value head if
            there is one.
        acting_head: add a second policy head that agents sample their actions from, trained on a sharper
            target softmax(Q* / τ_act) (:class:`rlfm.system.PolicyLearner`'s ``acting_target_temperature``)
            while the policy head keeps the soft one: the soft head's argmax exploits, the sharp head's
            samples explore like posterior sampling of the optimal action. Without it agents sample the
            policy head.
    """

    def __init__(
        self,
        width: int = 64,
        heads: int = 4,
        num_layers: int = 16,
        dropout: float = 0.05,
        planner_inputs: bool = True,
        acting_temperature: float = 1.0,
        acting_untried_bonus: float = 0.0,
        acting_untried_discount: float = 0.0,
        acting_untried_relative: bool = False,
        greedy_handoff: int = 0,
        greedy_dominance: bool = False,
        value_head: bool = False,
        greedy_from: str | None = None,
        value_residual: bool = False,
        acting_head: bool = False,
    ) -> None:
        super().__init__()
        if value_residual and not value_head:
            raise ValueError("value_residual is a kind of value head: it needs value_head: true")
        self.greedy_from = checked_greedy_from(greedy_from, value_head)
        self.acting_temperature = checked_acting_temperature(acting_temperature)
        self.acting_untried_bonus, self.acting_untried_discount = checked_untried(
            acting_untried_bonus, acting_untried_discount
        )
        self.acting_untried_relative = bool(acting_untried_relative)
        self.greedy_handoff = checked_handoff(greedy_handoff)
        self.greedy_dominance = bool(greedy_dominance)
        self.width = width
        self.heads = heads
        self.num_layers = num_layers
        self.planner_inputs = planner_inputs
        self.state_columns = len(STATE_FEATURES) if planner_inputs else COUNT_FEATURES
        self.state_action_columns = len(STATE_ACTION_FEATURES) if planner_inputs else COUNT_FEATURES
        self.encode_state = mlp(self.state_columns, width, width)
        self.encode_state_action = mlp(self.state_action_columns, width, width)
        self.block = PropagationBlock(width, heads, edge_dim=len(EDGE_FEATURES), dropout=dropout)
        self.head = mlp(2 * width, width, 1)
        self.value_head = mlp(2 * width, width, 1) if value_head else None
        self.acting_head = mlp(2 * width, width, 1) if acting_head else None
        self.value_residual = value_residual
        if value_residual:  # start at certainty equivalence: a zero correction
            nn.init.zeros_(self.value_head[-1].weight)
            nn.init.zeros_(self.value_head[-1].bias)

    @property
    def reads_planner_columns(self) -> bool:
        """Whether this network's graphs must be built with the planner columns (``planner=True``): its trunk
        reads them, or its residual value head corrects one of them."""
        return self.planner_inputs or self.value_residual

    def forward(self, data: HeteroData, num_layers: int | None = None) -> Tensor:
        """Policy logits (SA,) after ``num_layers`` sweeps (default: ``self.num_layers``)."""
        K = self.num_layers if num_layers is None else num_layers
        return self.unroll(data, K, first=K)[-1].logits

    def unroll(
        self, data: HeteroData, num_layers: int, first: int = 1, no_grad_layers: int = 0
    ) -> list[Readout]:
        """The heads' outputs after each sweep k = ``first`` .. ``num_layers`` (the heads are cheap).

        The first ``no_grad_layers`` sweeps run without gradient: training from a long unroll's state at
        the cost of a forward pass (truncated backpropagation through the tied iteration)."""
        if not 1 <= first <= num_layers or not 0 <= no_grad_layers < first:
            raise ValueError(
                f"need 0 <= no_grad_layers < first <= num_layers, got {no_grad_layers}, {first}, {num_layers}"
            )
        inputs, value_base = self._inputs(data), self._value_base(data)
        h_state, h_sa = inputs["x_state"], inputs["x_sa"]
        if no_grad_layers:
            with torch.no_grad():
                for _ in range(no_grad_layers):
                    h_state, h_sa = self.block(h_state, h_sa, **inputs)
        readouts = []
        for k in range(no_grad_layers + 1, num_layers + 1):
            h_state, h_sa = self.block(h_state, h_sa, **inputs)
            if k >= first:
                readouts.append(self._readout(h_state, h_sa, inputs["sa_state"], value_base))
        return readouts

    def policy(self, data: HeteroData, num_layers: int | None = None) -> Tensor:
        """π(a | s) (SA,): the softmax of the logits over each state's actions."""
        return group_softmax(self(data, num_layers), data)

    @torch.no_grad()
    def infer(
        self,
        data: HeteroData,
        max_layers: int = 512,
        num_layers: int | None = None,
        depth_rule: str | None = None,
    ) -> Settled:
        """The default inference: logits (SA,), the sweeps used per MDP (B,), the final embeddings, the
        greedy scores (SA,) and the acting logits (SA,).

        A network with planner inputs runs its own depth K = ``num_layers``: the exact planners carry
        values along paths of any length, and on the validation MDPs K sweeps scored better than unrolling
        until the policy settles (and cost far less). A network that reads the counts only must carry
        values itself, so it unrolls by ``depth_rule`` (default: :data:`DEFAULT_DEPTH_RULE`): ``"settle"``
        until its policy settles (:meth:`settle`), ``"diameter"`` K = max(``self.num_layers``, D) sweeps per
        MDP, D the diameter of its observed transitions (:func:`~rlfm.graph.observed_diameters`), at most
        ``max_layers`` either way. ``num_layers`` given: exactly that many sweeps, for either kind."""
        if num_layers is None and not self.planner_inputs:
            rule = DEFAULT_DEPTH_RULE if depth_rule is None else depth_rule
            if rule not in DEPTH_RULES:
                raise ValueError(f"unknown depth rule {rule!r}; choose from {DEPTH_RULES}")
            if rule == "diameter":
                depth = observed_diameters(data).clamp(min=self.num_layers, max=max_layers)
                return self.settle_from(data, None, max_layers=max_layers, depth=depth)
            return self.settle_from(data, None, max_layers=max_layers)
        K = self.num_layers if num_layers is None else num_layers
        B = int(data.num_graphs) if "batch" in data[STATE] else 1
        inputs = self._inputs(data)
        h_state, h_sa = inputs["x_state"], inputs["x_sa"]
        for _ in range(K):
            h_state, h_sa = self.block(h_state, h_sa, **inputs)
        readout = self._readout(h_state, h_sa, inputs["sa_state"], self._value_base(data))
        sweeps = torch.full((B,), K, dtype=torch.long)
        return self._settled(readout, sweeps, (h_state, h_sa))

    @torch.no_grad()
    def settle(
        self, data: HeteroData, min_layers: int | None = None, max_layers: int = 512, tol: float = 1e-2
    ) -> tuple[Tensor, Tensor]:
        """Unroll each MDP of ``data`` until no log-probability of it moves more than ``tol`` in a sweep (at
        least ``min_layers``, default ``self.num_layers``; at most ``max_layers``).

        The stopping rule is per MDP: a settled MDP leaves the batch while the others go on, so an
        MDP gets the same policy alone as in any batch. Returns the logits (SA,) and the sweeps each MDP
        used (B,). Call it in eval mode: dropout noise would keep the policy moving. Raises
        ``FloatingPointError`` as soon as a policy becomes non-finite (e.g. from non-finite inputs)."""
        settled = self.settle_from(data, None, min_layers, max_layers, tol)
        return settled.logits, settled.sweeps

    @torch.no_grad()
    def settle_from(
        self,
        data: HeteroData,
        initial: tuple[Tensor, Tensor] | None,
        min_layers: int | None = None,
        max_layers: int = 512,
        tol: float = 1e-2,
        depth: Tensor | None = None,
    ) -> Settled:
        """:meth:`settle` from the embeddings ``initial`` (h_state (S, d), h_sa (SA, d)) instead of the
        encoded inputs, returning the final embeddings too: an online agent whose graphs keep their nodes
        from one plan to the next starts each plan where the last one settled (a warm start). With
        ``depth`` (B,) each MDP instead runs exactly ``depth[b]`` sweeps (at most ``max_layers``), leaving
        the batch when done like a settled one."""
        if max_layers < 1:
            raise ValueError(f"max_layers must be at least 1, got {max_layers}")
        min_layers = self.num_layers if min_layers is None else min_layers
        inputs = self._inputs(data)
        sa_state, state_graph, B = inputs["sa_state"], inputs["state_graph"], inputs["num_graphs"]
        sa_graph = state_graph[sa_state]
        h_state, h_sa = (inputs["x_state"], inputs["x_sa"]) if initial is None else initial
        if initial is not None and (
            h_state.shape != inputs["x_state"].shape or h_sa.shape != inputs["x_sa"].shape
        ):
            raise ValueError(
                f"initial embeddings of shapes {tuple(h_state.shape)}, {tuple(h_sa.shape)} do not fit this "
                f"graph's {tuple(inputs['x_state'].shape)}, {tuple(inputs['x_sa'].shape)}"
            )
        # The loop runs on the MDPs not yet settled: once some settle, their embeddings go to the outputs and
        # the working batch drops them (:func:`keep_graphs`), so late sweeps cost what the slow MDPs cost
        # alone. graph_ids, state_ids, sa_ids: the working batch's rows in the full one.
        full_sa_state, device = sa_state, h_state.device
        out_state, out_sa = torch.empty_like(h_state), torch.empty_like(h_sa)
        graph_ids = torch.arange(B, device=device)
        state_ids = torch.arange(h_state.shape[0], device=device)
        sa_ids = torch.arange(h_sa.shape[0], device=device)
        sweeps = torch.full((B,), max_layers, dtype=torch.long, device=device)
        depth = None if depth is None else depth.to(device)
        previous = None
        for k in range(1, max_layers + 1):
            h_state, h_sa = self.block(h_state, h_sa, **inputs)
            if depth is not None:
                settled = depth[graph_ids] <= k
            else:
                if k < min_layers:
                    continue
                log_policy = log_group_softmax(
                    self._logits(h_state, h_sa, sa_state), sa_state, h_state.shape[0]
                )
                if not bool(torch.isfinite(log_policy).all()):
                    raise FloatingPointError(
                        f"the policy became non-finite at sweep {k}; are the inputs finite?"
                    )
                if previous is None:
                    previous = log_policy
                    continue
                change = (log_policy - previous).abs()
                settled = scatter(change, sa_graph, dim=0, dim_size=graph_ids.numel(), reduce="max") < tol
            sweeps[graph_ids[settled]] = k
            if bool(settled.all()):
                break
            if bool(settled.any()):  # store the working batch, then drop the settled MDPs from it
                out_state[state_ids], out_sa[sa_ids] = h_state, h_sa
                keep = ~settled
                inputs, keep_state, keep_sa = keep_graphs(inputs, keep)
                sa_state, state_graph = inputs["sa_state"], inputs["state_graph"]
                sa_graph = state_graph[sa_state]
                h_state, h_sa = h_state[keep_state], h_sa[keep_sa]
                if depth is None:
                    log_policy = log_policy[keep_sa]
                graph_ids, state_ids, sa_ids = graph_ids[keep], state_ids[keep_state], sa_ids[keep_sa]
            if depth is None:
                previous = log_policy
        out_state[state_ids], out_sa[sa_ids] = h_state, h_sa
        readout = self._readout(out_state, out_sa, full_sa_state, self._value_base(data))
        return self._settled(readout, sweeps, (out_state, out_sa))

    def encode(self, x_state: Tensor, x_sa: Tensor) -> tuple[Tensor, Tensor]:
        """Embeddings (..., d) of the state (..., F_s) and state-action (..., F_sa) input columns."""
        if x_state.shape[-1] < self.state_columns or x_sa.shape[-1] < self.state_action_columns:
            raise ValueError(
                f"this network reads {self.state_columns} state and {self.state_action_columns} state-action "
                f"columns, the graph has {x_state.shape[-1]} and {x_sa.shape[-1]}: build it with planner=True (in training: the sampler's planner_columns)"
            )
        return (
            self.encode_state(x_state[..., : self.state_columns]),
            self.encode_state_action(x_sa[..., : self.state_action_columns]),
        )

    def _inputs(self, data: HeteroData) -> dict:
        state_store = data[STATE]
        S = state_store.num_nodes
        batched = "batch" in state_store
        x_state, x_sa = self.encode(state_store.x, data[STATE_ACTION].x)
        return {
            "x_state": x_state,
            "x_sa": x_sa,
            "successor_index": data[FROM].edge_index,
            "successor_attr": data[FROM].edge_attr,
            "sa_state": data[OF].edge_index[1],
            "state_graph": state_store.batch
            if batched
            else torch.zeros(S, dtype=torch.long, device=state_store.x.device),
            "num_graphs": int(data.num_graphs) if batched else 1,
            "injected": self.block.inject(x_state, x_sa),  # the same at every sweep: computed once
        }

    def _value_base(self, data: HeteroData) -> Tensor | None:
        """(SA,) what a residual value head corrects: the certainty-equivalent relative advantage column."""
        if not self.value_residual:
            return None
        x_sa = data[STATE_ACTION].x
        if x_sa.shape[-1] <= CE_ADVANTAGE:
            raise ValueError(
                "this network's residual value head corrects the certainty-equivalent advantage, a planner "
                f"column, but the graph has only {x_sa.shape[-1]} state-action columns: build it with "
                "planner=True (in training: the sampler's planner_columns)"
            )
        return x_sa[:, CE_ADVANTAGE].float()

    def _readout(
        self, h_state: Tensor, h_sa: Tensor, sa_state: Tensor, value_base: Tensor | None = None
    ) -> Readout:
        """The heads' outputs (SA,); ``value_base`` (SA,): what a residual value head adds its output to."""
        values = None if self.value_head is None else pair_head(self.value_head, h_state, h_sa, sa_state)
        if value_base is not None:
            values = values + value_base
        acting = None if self.acting_head is None else pair_head(self.acting_head, h_state, h_sa, sa_state)
        return Readout(self._logits(h_state, h_sa, sa_state), values, acting)

    def _settled(self, readout: Readout, sweeps: Tensor, embeddings: tuple[Tensor, Tensor]) -> Settled:
        return Settled(
            readout.logits, sweeps, embeddings, self.greedy_scores(readout), self.acting_logits(readout)
        )

    def _logits(self, h_state: Tensor, h_sa: Tensor, sa_state: Tensor) -> Tensor:
        """The policy head's logits (SA,) alone."""
        return pair_head(self.head, h_state, h_sa, sa_state)

    def greedy_scores(self, readout: Readout) -> Tensor:
        """(SA,) the scores whose argmax over each state's actions is this network's greedy policy."""
        return readout.values if self.greedy_from == "value" else readout.logits

    def acting_logits(self, readout: Readout) -> Tensor:
        """(SA,) the logits an agent samples its actions from: the acting head's if there is one, else the
        policy head's."""
        return readout.logits if readout.acting is None else readout.acting


def pair_head(head: nn.Sequential, h_state: Tensor, h_sa: Tensor, sa_state: Tensor) -> Tensor:
    """A head's output (SA,) for each pair from its embedding beside its state's, MLP[h_sa, h_s].

    The first layer is applied to the two parts separately, W [h_sa, h_s] = W_sa h_sa + (W_s h_s)[s(sa)],
    so the state part costs S rows instead of SA and the (SA, 2d) concatenation is never built: the heads
    run after every sweep while a network settles."""
    first, d = head[0], h_sa.shape[-1]
    state_term = F.linear(h_state, first.weight[:, d:])  # [S, hidden]
    hidden = F.linear(h_sa, first.weight[:, :d], first.bias).add_(state_term.index_select(0, sa_state))
    return head[1:](hidden).squeeze(-1)


def checked_acting_temperature(value: object) -> float:
    """``value`` as a float if it is a positive finite number (not a bool), else ``ValueError``."""
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"acting_temperature must be a positive finite number, got {value!r}")
    return float(value)


def checked_handoff(value: object) -> int:
    """``value`` if it is an integer ≥ 0 (not a bool; 0: no handoff), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"handoff must be an integer >= 0 (0: none), got {value!r}")
    return value


def checked_untried(bonus: object, discount: object) -> tuple[float | None, float | None]:
    """The untried-pair bonus β (a finite number ≥ 0) and its discount δ ∈ [0, 1) as floats, else
    ``ValueError`` naming the bad one (None passes through, meaning "the network's own")."""
    if bonus is not None and (
        isinstance(bonus, bool)
        or not (isinstance(bonus, int | float) and math.isfinite(bonus) and bonus >= 0)
    ):
        raise ValueError(f"untried_bonus must be a finite number >= 0, got {bonus!r}")
    if discount is not None and (
        isinstance(discount, bool) or not (isinstance(discount, int | float) and 0 <= discount < 1)
    ):
        raise ValueError(f"untried_discount must be in [0, 1), got {discount!r}")
    return (
        None if bonus is None else float(bonus),  # type: ignore[arg-type]
        None if discount is None else float(discount),  # type: ignore[arg-type]
    )


def checked_greedy_from(value: object, value_head: bool) -> str:
    """``value`` if it names a readout this network has (``"policy"``, or ``"value"`` with a value head;
    None: the value head if there is one), else ``ValueError``."""
    if value is None:
        return "value" if value_head else "policy"
    if value not in GREEDY_READOUTS or (value == "value" and not value_head):
        raise ValueError(
            f"greedy_from must be 'policy', or 'value' for a network with a value head; got {value!r}"
            f" (value head: {value_head})"
        )
    return str(value)


def group_softmax(logits: Tensor, data: HeteroData) -> Tensor:
    """Softmax of ``logits`` (SA,) over each state's actions."""
    return softmax(logits, data[OF].edge_index[1], num_nodes=data[STATE].num_nodes)


def log_group_softmax(logits: Tensor, sa_state: Tensor, num_states: int) -> Tensor:
    """log π (SA,): log-softmax of ``logits`` over each state's actions; finite even where π underflows."""
    best = scatter(logits.detach(), sa_state, dim=0, dim_size=num_states, reduce="max")
    shifted = logits - best[sa_state]
    log_norm = scatter(shifted.exp(), sa_state, dim=0, dim_size=num_states, reduce="sum").log()
    return shifted - log_norm[sa_state]


def keep_graphs(inputs: dict, keep: Tensor) -> tuple[dict, Tensor, Tensor]:
    """The sweep inputs (:meth:`PolicyNetwork._inputs`) of the MDPs ``keep`` (B,) (bool) of a batch, nodes
    renumbered and the other MDPs' edges dropped, with the masks of the kept states (S,) and pairs (SA,)."""
    state_graph, sa_state = inputs["state_graph"], inputs["sa_state"]
    keep_state = keep[state_graph]
    keep_sa = keep_state[sa_state]
    new_state, new_sa, new_graph = (mask.long().cumsum(0) - 1 for mask in (keep_state, keep_sa, keep))
    source, target = inputs["successor_index"]
    keep_edge = keep_sa[target]
    injected_state, injected_sa = inputs["injected"]
    kept = {
        "x_state": inputs["x_state"][keep_state],
        "x_sa": inputs["x_sa"][keep_sa],
        "successor_index": torch.stack([new_state[source[keep_edge]], new_sa[target[keep_edge]]]),
        "successor_attr": inputs["successor_attr"][keep_edge],
        "sa_state": new_state[sa_state[keep_sa]],
        "state_graph": new_graph[state_graph[keep_state]],
        "num_graphs": int(keep.sum()),
        "injected": (injected_state[keep_state], injected_sa[keep_sa]),
    }
    return kept, keep_state, keep_sa
