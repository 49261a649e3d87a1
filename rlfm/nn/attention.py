"""Edge-biased multi-head attention: a PyG convolution whose logits carry a log-probability bias."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import Adj, OptTensor, PairTensor
from torch_geometric.utils import softmax

LOG_EPS = 1e-12  # log p is taken of max(p, LOG_EPS)


class EdgeBiasedAttention(MessagePassing):
    r"""Multi-head attention over each target's incoming edges, with an additive bias from the edges.

    .. math::
        \alpha_{ij}^{h} = \operatorname{softmax}_{j \in \mathcal{N}(i)} \Big(
            \frac{(\mathbf{W}_q^{h} \mathbf{x}_i)^\top (\mathbf{W}_k^{h} \mathbf{x}_j)}{\sqrt{C}}
            + \beta_h \log p_{ij} + \mathbf{w}_h^\top \mathbf{e}_{ij} \Big),
        \qquad
        \mathbf{x}_i' = \big\Vert_{h=1}^{H} \sum_{j \in \mathcal{N}(i)} \alpha_{ij}^{h}\, \mathbf{W}_v^{h} \mathbf{x}_j

    where :math:`p_{ij}` is one column of the edge features (``log_bias_channel``), e.g. the estimated
    transition probability :math:`\hat P(s_j \mid (s,a)_i)`. When each target's incoming :math:`p_{ij}`
    sum to 1, setting :math:`\mathbf{W}_q = \mathbf{W}_k = 0`, :math:`\mathbf{w} = 0` and :math:`\beta = 1`
    makes the attention weights exactly :math:`p_{ij}` and the output the expectation
    :math:`\sum_j p_{ij} \mathbf{W}_v \mathbf{x}_j`: a Bellman backup. Edges are used as given; no
    self-loops are added, so bipartite graphs (``x = (x_src, x_dst)``) work, as do ``HeteroConv`` and
    ``to_hetero``. Targets without incoming edges receive zeros (plus the root term, if any).

    Args:
        in_channels: size of each input sample, or a pair (source, target) for bipartite graphs; -1 infers
            it from the first input (lazy initialisation).
        out_channels: size of each output sample per head.
        heads: number of attention heads :math:`H`. (default: 1)
        concat: concatenate the heads' outputs (else average them). (default: True)
        beta: initial weight :math:`\beta` of the log bias. (default: 1.0)
        learn_beta: learn one :math:`\beta_h` per head (else keep it fixed). (default: False)
        log_bias_channel: column of ``edge_attr`` whose log is the bias, or None for no log bias.
            (default: 0)
        edge_dim: size of the edge features for the learned term :math:`\mathbf{w}_h^\top \mathbf{e}_{ij}`,
            -1 to infer it, or None for no learned edge term. (default: None) With a log bias or an edge
            term, calling the layer without a 2-D ``edge_attr`` is a ``ValueError``.
        dropout: dropout probability of the attention weights. (default: 0.0)
        bias: learn additive biases in the linear maps. (default: True)
        root_weight: add a linear map of the target's own features to the output. (default: False)
        **kwargs: passed on to :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})` or :math:`((|\mathcal{V_s}|, F_{s}),
          (|\mathcal{V_t}|, F_{t}))`, edge indices :math:`(2, |\mathcal{E}|)`, edge features
          :math:`(|\mathcal{E}|, D)` (optional)
        - **output:** node features :math:`(|\mathcal{V}_t|, H \cdot C)` (or :math:`(|\mathcal{V}_t|, C)` when
          ``concat=False``); with ``return_attention_weights`` also ``(edge_index, alpha)``,
          alpha :math:`(|\mathcal{E}|, H)`
    """

    _alpha: OptTensor

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        beta: float = 1.0,
        learn_beta: bool = False,
        log_bias_channel: int | None = 0,
        edge_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        root_weight: bool = False,
        **kwargs,
    ) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.initial_beta = beta
        self.learn_beta = learn_beta
        self.log_bias_channel = log_bias_channel
        self.edge_dim = edge_dim
        self.dropout = dropout
        self.root_weight = root_weight
        self._alpha = None

        if isinstance(in_channels, int):
            in_channels = (in_channels, in_channels)
        self.lin_query = Linear(in_channels[1], heads * out_channels, bias=bias)
        self.lin_key = Linear(in_channels[0], heads * out_channels, bias=bias)
        self.lin_value = Linear(in_channels[0], heads * out_channels, bias=bias)
        self.lin_edge = Linear(edge_dim, heads, bias=False) if edge_dim is not None else None
        out_size = heads * out_channels if concat else out_channels
        self.lin_skip = Linear(in_channels[1], out_size, bias=bias) if root_weight else None
        if learn_beta:
            self.beta = Parameter(torch.empty(heads))
        else:
            self.register_buffer("beta", torch.empty(heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for lin in (self.lin_query, self.lin_key, self.lin_value, self.lin_edge, self.lin_skip):
            if lin is not None:
                lin.reset_parameters()
        with torch.no_grad():
            self.beta.fill_(self.initial_beta)

    def forward(
        self,
        x: Tensor | PairTensor,
        edge_index: Adj,
        edge_attr: OptTensor = None,
        return_attention_weights: bool | None = None,
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run the layer; ``return_attention_weights`` set to any bool also returns ``(edge_index, alpha)``."""
        H, C = self.heads, self.out_channels
        self._check_edge_attr(edge_attr)
        if isinstance(x, Tensor):
            x = (x, x)
        query = self.lin_query(x[1]).view(-1, H, C)
        key = self.lin_key(x[0]).view(-1, H, C)
        value = self.lin_value(x[0]).view(-1, H, C)
        out = self.propagate(edge_index, query=query, key=key, value=value, edge_attr=edge_attr)
        alpha, self._alpha = self._alpha, None
        out = out.reshape(-1, H * C) if self.concat else out.mean(dim=1)
        if self.lin_skip is not None:
            out = out + self.lin_skip(x[1])
        if isinstance(return_attention_weights, bool):
            return out, (edge_index, alpha)
        return out

    def _check_edge_attr(self, edge_attr: OptTensor) -> None:
        """Raise ``ValueError`` when the layer needs edge features that ``edge_attr`` (E, D) does not give."""
        needs = [
            name
            for name, value in (("log_bias_channel", self.log_bias_channel), ("edge_dim", self.edge_dim))
            if value is not None
        ]
        if not needs:
            return
        if edge_attr is None:
            raise ValueError(
                f"{self.__class__.__name__} has {' and '.join(needs)} set but was called without edge_attr;"
                f" pass edge_attr of shape (E, D) or set {' and '.join(needs)} to None"
            )
        if edge_attr.dim() != 2:
            raise ValueError(f"edge_attr must have shape (E, D), got {tuple(edge_attr.shape)}")
        if (
            self.log_bias_channel is not None
            and not -edge_attr.shape[1] <= self.log_bias_channel < edge_attr.shape[1]
        ):
            raise ValueError(
                f"log_bias_channel is {self.log_bias_channel}, but edge_attr has {edge_attr.shape[1]} columns"
            )

    def message(
        self,
        query_i: Tensor,
        key_j: Tensor,
        value_j: Tensor,
        edge_attr: OptTensor,
        index: Tensor,
        ptr: OptTensor,
        size_i: int | None,
    ) -> Tensor:
        logits = (query_i * key_j).sum(dim=-1) / math.sqrt(self.out_channels)  # [E, H]
        if edge_attr is not None:
            if self.log_bias_channel is not None:
                log_p = edge_attr[:, self.log_bias_channel].clamp(min=LOG_EPS).log()  # [E]
                logits = logits + log_p[:, None] * self.beta
            if self.lin_edge is not None:
                logits = logits + self.lin_edge(edge_attr)  # [E, H]
        alpha = softmax(logits, index, ptr, size_i)  # [E, H], sums to 1 over each target's edges
        self._alpha = alpha
        alpha = torch.nn.functional.dropout(alpha, p=self.dropout, training=self.training)
        return value_j * alpha[..., None]  # [E, H, C]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"
