r"""A dense reference of the policy network: padded tensors with masks, in the published reference's style.

The sparse network (:mod:`rlfm.network`) works on PyG mini-batches where nothing is padded. This module
runs the *same* network on padded tensors instead: states as (B, S_max, d), state-actions as
(B, S_max, A_max, d), and the successor relation as a dense (B, S_max·A_max, S_max) grid of P̂ and edge
features with a mask of observed successors. Every operation is a plain tensor operation (matmul, masked
softmax over successors, masked max / mean over actions, masked per-MDP mean over states); no PyG message
passing is used. The dense modules wrap the sparse ones and reuse their parameters (no copies), so the
two implementations can be compared output for output and gradient for gradient, and the dense one is the
yardstick for speed and memory (O(B·S_max²·A_max) per attention map, against O(E) for the sparse one).

>>> dense = DensePolicyNetwork(network)          # shares network's parameters
>>> batch = to_dense(data)                       # data: an observation graph or a PyG batch of them
>>> logits = batch.to_sparse(dense(batch))       # (SA,), in the order of network(data)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from rlfm.graph import FROM, OF, STATE, STATE_ACTION
from rlfm.network import PolicyNetwork
from rlfm.nn.attention import LOG_EPS, EdgeBiasedAttention
from rlfm.nn.block import PropagationBlock

SOFTMAX_EPS = 1e-16  # added to each softmax denominator, as torch_geometric.utils.softmax does


@dataclass
class DenseBatch:
    """A batch of observation graphs as padded tensors.

    Attributes:
        x_state: (B, S_max, F_s) state features, zero where padded.
        x_sa: (B, S_max, A_max, F_sa) state-action features, zero where padded.
        state_mask: (B, S_max) real states.
        action_mask: (B, S_max, A_max) real state-actions (states may have different numbers of actions).
        edge_attr: (B, S_max·A_max, S_max, D) successor-edge features of pair (s, a) (row s·A_max + a) and
            successor s' (column); column 0 is P̂(s'|s,a). Zero where not observed.
        edge_mask: (B, S_max·A_max, S_max) observed successors (the sparse graph's ``from`` edges).
        sa_index: (3, SA) graph, local state and action slot of each sparse state-action: the way back.
    """

    x_state: Tensor
    x_sa: Tensor
    state_mask: Tensor
    action_mask: Tensor
    edge_attr: Tensor
    edge_mask: Tensor
    sa_index: Tensor

    @property
    def p_hat(self) -> Tensor:
        """(B, S_max·A_max, S_max) dense P̂ (a view of ``edge_attr``), zero where not observed."""
        return self.edge_attr[..., 0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(B, S_max, A_max)."""
        B, S, A = self.action_mask.shape
        return B, S, A

    def to_sparse(self, dense: Tensor) -> Tensor:
        """(B, S_max, A_max, ...) → (SA, ...) in the sparse graph's state-action order."""
        graph, state, slot = self.sa_index
        return dense[graph, state, slot]

    def to(self, device: torch.device | str) -> DenseBatch:
        return DenseBatch(**{name: getattr(self, name).to(device) for name in self.__dataclass_fields__})


def to_dense(data: HeteroData) -> DenseBatch:
    """Pad an observation graph, or a PyG batch of them, into a :class:`DenseBatch`.

    Uses ``state.x`` (S, F_s), ``state_action.x`` (SA, F_sa), the ``of`` relation (which state owns each
    pair; a state's actions get slots 0, 1, ... in the order of their pair indices) and the ``from``
    relation with ``edge_attr`` (E, D). Each (pair, successor) may occur at most once.
    """
    state_store, sa_store = data[STATE], data[STATE_ACTION]
    x_state, x_sa = state_store.x, sa_store.x
    device = x_state.device
    S, SA = x_state.shape[0], x_sa.shape[0]
    if "batch" in state_store:
        state_graph, state_ptr, B = state_store.batch, state_store.ptr, int(data.num_graphs)
    else:
        state_graph = torch.zeros(S, dtype=torch.long, device=device)
        state_ptr, B = torch.tensor([0, S], device=device), 1
    pair, owner = data[OF].edge_index
    sa_state = torch.empty(SA, dtype=torch.long, device=device)
    sa_state[pair] = owner  # [SA]
    num_actions = torch.bincount(sa_state, minlength=S)  # [S]
    S_max = int(torch.diff(state_ptr).max()) if S else 0
    A_max = int(num_actions.max()) if SA else 0
    local_state = torch.arange(S, device=device) - state_ptr[state_graph]  # [S]
    # slot of each pair among its state's actions: rank of its index within the state
    order = torch.argsort(sa_state, stable=True)
    first = torch.zeros(S + 1, dtype=torch.long, device=device)
    torch.cumsum(num_actions, 0, out=first[1:])
    slot = torch.empty(SA, dtype=torch.long, device=device)
    slot[order] = torch.arange(SA, device=device) - first[sa_state[order]]
    sa_index = torch.stack([state_graph[sa_state], local_state[sa_state], slot])  # [3, SA]
    graph_of_sa, state_of_sa, _ = sa_index

    dense_x_state = x_state.new_zeros(B, S_max, x_state.shape[1])
    dense_x_state[state_graph, local_state] = x_state
    dense_x_sa = x_sa.new_zeros(B, S_max, A_max, x_sa.shape[1])
    dense_x_sa[graph_of_sa, state_of_sa, slot] = x_sa
    state_mask = torch.zeros(B, S_max, dtype=torch.bool, device=device)
    state_mask[state_graph, local_state] = True
    action_mask = torch.zeros(B, S_max, A_max, dtype=torch.bool, device=device)
    action_mask[graph_of_sa, state_of_sa, slot] = True

    successor, edge_sa = data[FROM].edge_index
    edge_attr = data[FROM].edge_attr
    row = state_of_sa[edge_sa] * A_max + slot[edge_sa]  # [E] pair (s, a) as row s·A_max + a
    col = local_state[successor]  # [E]
    graph = graph_of_sa[edge_sa]  # [E]
    flat = (graph * (S_max * A_max) + row) * S_max + col  # [E]
    if torch.unique(flat).numel() != flat.numel():
        raise ValueError("a (state-action, successor) edge occurs twice; the dense form cannot hold it")
    dense_edge_attr = edge_attr.new_zeros(B, S_max * A_max, S_max, edge_attr.shape[1])
    dense_edge_attr[graph, row, col] = edge_attr
    edge_mask = torch.zeros(B, S_max * A_max, S_max, dtype=torch.bool, device=device)
    edge_mask[graph, row, col] = True
    return DenseBatch(
        dense_x_state, dense_x_sa, state_mask, action_mask, dense_edge_attr, edge_mask, sa_index
    )


def masked_softmax(logits: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` of the entries where ``mask`` (broadcastable) is True; 0 elsewhere.

    A slice with no True entry gives all zeros (not NaN), as a node with no incoming edge gets under
    :func:`torch_geometric.utils.softmax`, whose numerics (max shift, +1e-16 in the sum) this follows.
    """
    logits = logits.masked_fill(~mask, float("-inf"))
    peak = logits.detach().amax(dim=dim, keepdim=True)
    peak = peak.masked_fill(peak == float("-inf"), 0.0)  # all-masked slice: exp(-inf) = 0, no NaN
    weights = (logits - peak).exp()
    return weights / (weights.sum(dim=dim, keepdim=True) + SOFTMAX_EPS)


class DenseEdgeBiasedAttention(nn.Module):
    r"""Dense form of :class:`~rlfm.nn.attention.EdgeBiasedAttention`, sharing its parameters.

    Every target attends over the sources marked in ``mask`` with logits
    :math:`q_i^\top k_j / \sqrt{C} + \beta_h \log p_{ij} + w_h^\top e_{ij}`; a target with no source gets
    zeros (plus the root term). Honours the wrapped layer's ``concat``, ``root_weight``,
    ``log_bias_channel``, ``lin_edge``, ``dropout`` and training mode.

    Args:
        conv: the sparse layer whose parameters are used.
    """

    def __init__(self, conv: EdgeBiasedAttention) -> None:
        super().__init__()
        self.conv = conv

    def forward(
        self,
        x: Tensor | tuple[Tensor, Tensor],
        mask: Tensor,
        edge_attr: Tensor | None = None,
        return_attention_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from targets over sources.

        Args:
            x: (B, N, F) or the pair (x_src (B, N_src, F_src), x_dst (B, N_dst, F_dst)).
            mask: (B, N_dst, N_src) True where source j is an in-neighbour of target i.
            edge_attr: (B, N_dst, N_src, D) edge features, or None.
            return_attention_weights: also return alpha (B, N_dst, N_src, H), zero off the mask.
        Returns:
            (B, N_dst, H·C), or (B, N_dst, C) when ``concat`` is False.
        """
        conv = self.conv
        H, C = conv.heads, conv.out_channels
        x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
        B, N_src, N_dst = x_src.shape[0], x_src.shape[1], x_dst.shape[1]
        query = conv.lin_query(x_dst).view(B, N_dst, H, C).transpose(1, 2)  # [B, H, N_dst, C]
        key = conv.lin_key(x_src).view(B, N_src, H, C).transpose(1, 2)  # [B, H, N_src, C]
        value = conv.lin_value(x_src).view(B, N_src, H, C).transpose(1, 2)  # [B, H, N_src, C]
        logits = query @ key.transpose(-1, -2) / math.sqrt(C)  # [B, H, N_dst, N_src]
        if edge_attr is not None:
            if conv.log_bias_channel is not None:
                log_p = edge_attr[..., conv.log_bias_channel].clamp(min=LOG_EPS).log()  # [B, N_dst, N_src]
                logits = logits + log_p[:, None] * conv.beta[:, None, None]
            if conv.lin_edge is not None:
                logits = logits + conv.lin_edge(edge_attr).permute(0, 3, 1, 2)  # [B, H, N_dst, N_src]
        alpha = masked_softmax(logits, mask[:, None])  # [B, H, N_dst, N_src]
        dropped = F.dropout(alpha, p=conv.dropout, training=conv.training)
        out = (dropped @ value).transpose(1, 2)  # [B, N_dst, H, C]
        out = out.reshape(B, N_dst, H * C) if conv.concat else out.mean(dim=2)
        if conv.lin_skip is not None:
            out = out + conv.lin_skip(x_dst)
        if return_attention_weights:
            return out, alpha.permute(0, 2, 3, 1)  # [B, N_dst, N_src, H]
        return out


class DensePropagationBlock(nn.Module):
    """Dense form of :class:`~rlfm.nn.block.PropagationBlock` (one sweep), sharing its parameters.

    Args:
        block: the sparse block whose parameters are used.
    """

    def __init__(self, block: PropagationBlock) -> None:
        super().__init__()
        self.block = block
        self.attention = DenseEdgeBiasedAttention(block.attention)

    def forward(
        self, h_state: Tensor, h_sa: Tensor, x_state: Tensor, x_sa: Tensor, batch: DenseBatch
    ) -> tuple[Tensor, Tensor]:
        """One sweep.

        Args:
            h_state: (B, S_max, d) and h_sa: (B, S_max, A_max, d) current embeddings; x_state, x_sa: the
                encoded inputs, same shapes. Padded entries stay finite and never reach real ones.
            batch: the masks and successor edges.
        Returns:
            the new (h_state, h_sa).
        """
        block = self.block
        B, S, A, d = h_sa.shape
        state_mask, action_mask = batch.state_mask[..., None], batch.action_mask[..., None]
        message = self.attention((h_state, h_sa.reshape(B, S * A, d)), batch.edge_mask, batch.edge_attr)
        message = message.view(B, S, A, d)  # [B, S, A, d]
        states = state_mask.sum(dim=1).clamp(min=1)  # [B, 1]
        context = (h_state * state_mask).sum(dim=1) / states  # [B, d] mean over the MDP's states
        context = context[:, None, None].expand(B, S, A, d)
        sa_input = torch.cat([h_sa, message, context, x_sa], dim=-1)  # [B, S, A, 4d]
        h_sa = block.norm_state_action(h_sa + block.update_state_action(sa_input))
        best = h_sa.masked_fill(~action_mask, float("-inf")).amax(dim=2)  # [B, S, d]
        best = best.masked_fill(~state_mask, 0.0)  # padded states have no action: keep them finite
        actions = action_mask.sum(dim=2).clamp(min=1)  # [B, S, 1]
        mean = (h_sa * action_mask).sum(dim=2) / actions  # [B, S, d]
        state_input = torch.cat([h_state, best, mean, x_state], dim=-1)  # [B, S, 4d]
        h_state = block.norm_state(h_state + block.update_state(state_input))
        return h_state, h_sa


class DensePolicyNetwork(nn.Module):
    """Dense form of :class:`~rlfm.network.PolicyNetwork`, sharing its parameters (``network`` is a
    submodule, so ``parameters()``, ``train()`` and ``eval()`` act on the same tensors and modes).

    Args:
        network: the sparse network whose parameters are used.
    """

    def __init__(self, network: PolicyNetwork) -> None:
        super().__init__()
        self.network = network
        self.block = DensePropagationBlock(network.block)

    def forward(self, batch: DenseBatch, num_layers: int | None = None) -> Tensor:
        """Policy logits (B, S_max, A_max) after ``num_layers`` sweeps (default: the network's K); 0 where
        padded."""
        net = self.network
        K = net.num_layers if num_layers is None else num_layers
        x_state, x_sa = net.encode(batch.x_state, batch.x_sa)  # [B, S, d], [B, S, A, d]
        h_state, h_sa = x_state, x_sa
        for _ in range(K):
            h_state, h_sa = self.block(h_state, h_sa, x_state, x_sa, batch)
        h_pair_state = h_state[:, :, None].expand_as(h_sa)  # [B, S, A, d]
        logits = net.head(torch.cat([h_sa, h_pair_state], dim=-1)).squeeze(-1)  # [B, S, A]
        return logits.masked_fill(~batch.action_mask, 0.0)

    def policy(self, batch: DenseBatch, num_layers: int | None = None) -> Tensor:
        """π(a | s) (B, S_max, A_max): softmax over each state's real actions; 0 where padded."""
        return masked_softmax(self(batch, num_layers), batch.action_mask)

    def forward_graph(self, data: HeteroData, num_layers: int | None = None) -> Tensor:
        """Logits (SA,) for an observation graph or batch, in the sparse order: pad, run, unpad."""
        batch = to_dense(data)
        return batch.to_sparse(self(batch, num_layers))
