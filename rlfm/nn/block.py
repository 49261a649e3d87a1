"""The propagation block: one learned value-iteration sweep over an MDP graph."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from rlfm.nn.attention import EdgeBiasedAttention


def mlp(in_channels: int, hidden: int, out_channels: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear → GELU → Dropout → Linear."""
    return nn.Sequential(
        nn.Linear(in_channels, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_channels)
    )


class PropagationBlock(nn.Module):
    r"""One sweep: state-actions read their observed successors, then states read their actions.

    .. math::
        m_{sa} &= \textstyle\sum_{s'} \alpha_{sa,s'} W_v h_{s'}, \quad
            \alpha = \operatorname{softmax}_{s'}(q_{sa}^\top k_{s'} / \sqrt{C} + \beta \log \hat P(s' \mid s,a)
            + w^\top e_{sa,s'}) \\
        h_{sa} &\leftarrow \operatorname{LN}\big(h_{sa} + \operatorname{MLP}[h_{sa}, m_{sa}, \bar h_{\mathcal{S}}, x_{sa}]\big) \\
        h_{s} &\leftarrow \operatorname{LN}\big(h_{s} + \operatorname{MLP}[h_{s}, \max_a h_{sa}, \operatorname{mean}_a h_{sa},
            x_{s}]\big)

    :math:`\bar h_{\mathcal{S}}` is the mean of the MDP's state embeddings: what a state-action with no
    observed successor (an unvisited pair) reads, the expectation under a uniform guess of its successor,
    in O(S) instead of the O(S²·A) edges of a uniform P̂ row. :math:`x` are the encoded inputs, re-injected
    at every sweep so that the tied block iterates towards a fixed point of its inputs, as value iteration
    re-adds r(s, a). Post-norm residuals keep the iterates bounded when the block is unrolled further than
    in training.

    Args:
        width: embedding size of states and state-actions.
        heads: attention heads (``width`` must be divisible by ``heads``).
        edge_dim: size of the successor-edge features; column 0 must be P̂.
        dropout: dropout of the MLPs.
    """

    def __init__(self, width: int, heads: int, edge_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.width = width
        self.attention = EdgeBiasedAttention(
            width, width // heads, heads=heads, edge_dim=edge_dim, learn_beta=True, log_bias_channel=0
        )
        self.update_state_action = mlp(4 * width, 2 * width, width, dropout)
        self.update_state = mlp(4 * width, 2 * width, width, dropout)
        self.norm_state_action = nn.LayerNorm(width)
        self.norm_state = nn.LayerNorm(width)

    def inject(self, x_state: Tensor, x_sa: Tensor) -> tuple[Tensor, Tensor]:
        """The input terms W_x x + b of the two update MLPs' first layers, (S, 2d) and (SA, 2d).

        They are the same at every sweep: compute them once per graph and pass them to :meth:`forward`
        (``injected``) to save a quarter of the first layers' work in each sweep."""
        d = self.width
        first_state, first_sa = self.update_state[0], self.update_state_action[0]
        return (
            F.linear(x_state, first_state.weight[:, 3 * d :], first_state.bias),
            F.linear(x_sa, first_sa.weight[:, 3 * d :], first_sa.bias),
        )

    def forward(
        self,
        h_state: Tensor,
        h_sa: Tensor,
        x_state: Tensor,
        x_sa: Tensor,
        successor_index: Tensor,
        successor_attr: Tensor,
        sa_state: Tensor,
        state_graph: Tensor,
        num_graphs: int,
        injected: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One sweep.

        Args:
            h_state: (S, d) and h_sa: (SA, d) current embeddings; x_state, x_sa: encoded inputs, same shapes.
            successor_index: (2, E) edges from successor state to state-action (the ``from`` relation).
            successor_attr: (E, edge_dim) their features, column 0 = P̂.
            sa_state: (SA,) state of each state-action.
            state_graph: (S,) MDP of each state in the batch.
            injected: :meth:`inject` of (x_state, x_sa), if already computed.
        Returns:
            the new (h_state, h_sa).
        """
        S, d = h_state.shape[0], self.width
        injected_state, injected_sa = self.inject(x_state, x_sa) if injected is None else injected
        message = self.attention((h_state, h_sa), successor_index, successor_attr)  # [SA, d]
        context = scatter(h_state, state_graph, dim=0, dim_size=num_graphs, reduce="mean")  # [B, d]
        # the first layer of MLP[h_sa, m, context, x_sa], one block of its weight per part; the context
        # term is one row per MDP (broadcast when there is one MDP)
        # (products accumulate into one buffer: no concatenated input and no summed bias are materialised,
        # which at 10^4-10^5 states is most of a sweep's memory traffic)
        weight = self.update_state_action[0].weight
        context_term = F.linear(context, weight[:, 2 * d : 3 * d])  # [B, 2d]
        hidden = torch.mm(h_sa, weight[:, :d].T).addmm_(message, weight[:, d : 2 * d].T).add_(injected_sa)
        # (index_select: the same rows as indexing, several times faster for large float gathers on CPU)
        hidden.add_(context_term if num_graphs == 1 else context_term.index_select(0, state_graph[sa_state]))
        h_sa = self.norm_state_action(self.update_state_action[1:](hidden).add_(h_sa))
        best = scatter(h_sa, sa_state, dim=0, dim_size=S, reduce="max")  # [S, d]
        mean = scatter(h_sa, sa_state, dim=0, dim_size=S, reduce="mean")  # [S, d]
        weight = self.update_state[0].weight
        hidden = torch.addmm(injected_state, h_state, weight[:, :d].T)
        hidden.addmm_(best, weight[:, d : 2 * d].T).addmm_(mean, weight[:, 2 * d : 3 * d].T)
        h_state = self.norm_state(self.update_state[1:](hidden).add_(h_state))
        return h_state, h_sa
