"""The edge-biased attention layer: sparse vs dense, the Bellman special case, PyG interfaces, symmetries."""

import pytest
import torch
from torch import nn
from torch_geometric.nn import HeteroConv, Linear, to_hetero
from torch_geometric.utils import scatter

from rlfm.counts import Counts
from rlfm.dense import DenseEdgeBiasedAttention, masked_softmax
from rlfm.graph import (
    FROM,
    STATE,
    STATE_ACTION,
    STATE_ACTION_FEATURES,
    STATE_FEATURES,
    TO,
    observation_graphs,
)
from rlfm.nn import EdgeBiasedAttention


def bipartite_batch(generator: torch.Generator, sizes: list[tuple[int, int]], dim: tuple[int, int]) -> dict:
    """Random bipartite graphs (N_src, N_dst) per graph, each target with 0 to N_src distinct sources.

    Returns the sparse form (global indices) and the dense form (B, N_max, ...) of the same batch:
    ``x_src`` (N_src, F), ``x_dst`` (N_dst, F), ``edge_index`` (2, E), ``edge_attr`` (E, 2) with column 0 in
    (0, 1], and ``dense`` = (x_src (B, Ns, F), x_dst (B, Nd, F), mask (B, Nd, Ns), edge_attr (B, Nd, Ns, 2)),
    ``dst_index`` (2, N_dst) the (graph, row) of each target.
    """
    B = len(sizes)
    Ns, Nd = max(s for s, _ in sizes), max(d for _, d in sizes)
    x_src, x_dst, edges, attrs, dst_index = [], [], [], [], []
    dense_src, dense_dst = torch.zeros(B, Ns, dim[0]), torch.zeros(B, Nd, dim[1])
    mask, dense_attr = torch.zeros(B, Nd, Ns, dtype=torch.bool), torch.zeros(B, Nd, Ns, 2)
    src_offset = dst_offset = 0
    for b, (n_src, n_dst) in enumerate(sizes):
        xs, xd = (
            torch.randn(n_src, dim[0], generator=generator),
            torch.randn(n_dst, dim[1], generator=generator),
        )
        dense_src[b, :n_src], dense_dst[b, :n_dst] = xs, xd
        adjacency = torch.rand(n_dst, n_src, generator=generator) < 0.4
        adjacency[0] = False  # the first target of every graph has no incoming edge
        dst, src = adjacency.nonzero().t()
        attr = torch.stack(
            [torch.rand(dst.numel(), generator=generator) * 0.99 + 0.01, torch.randn(dst.numel())], 1
        )
        mask[b, dst, src], dense_attr[b, dst, src] = True, attr
        edges.append(torch.stack([src + src_offset, dst + dst_offset]))
        attrs.append(attr)
        x_src.append(xs)
        x_dst.append(xd)
        dst_index.append(torch.stack([torch.full((n_dst,), b), torch.arange(n_dst)]))
        src_offset, dst_offset = src_offset + n_src, dst_offset + n_dst
    return {
        "x_src": torch.cat(x_src),
        "x_dst": torch.cat(x_dst),
        "edge_index": torch.cat(edges, 1),
        "edge_attr": torch.cat(attrs),
        "dense": (dense_src, dense_dst, mask, dense_attr),
        "dst_index": torch.cat(dst_index, 1),
    }


def small_observation_graph(dtype: torch.dtype = torch.float32):
    counts = Counts.empty([2, 3, 1, 2])
    counts.update(
        torch.tensor([0, 0, 0, 1, 2, 3, 1]),
        torch.tensor([1, 1, 1, 2, 0, 0, 0]),
        torch.tensor([0.5, 0.5, 0.5, -2.0, 0.0, 1.0, 0.0]),
        torch.tensor([1, 2, 1, 0, 2, 3, 3]),
    )
    return observation_graphs([counts], [0.9], dtype=dtype)[
        0
    ]  # pairs (0,0), (1,1), (3,1) have no observed successor


CONFIGS = [
    {"heads": 4, "edge_dim": 2, "learn_beta": True},
    {"heads": 2, "concat": False, "root_weight": True, "beta": 0.5},
    {"heads": 3, "log_bias_channel": None, "edge_dim": 2, "bias": False},
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("training", [False, True])
def test_sparse_and_dense_attention_agree(config, training, generator):
    graph = bipartite_batch(generator, [(5, 4), (2, 7), (9, 3)], dim=(6, 5))
    conv = EdgeBiasedAttention((6, 5), 8, **config).train(training)
    with torch.no_grad():
        conv.beta.uniform_(0.5, 1.5)
    x = (graph["x_src"].requires_grad_(), graph["x_dst"])
    out, (_, alpha) = conv(x, graph["edge_index"], graph["edge_attr"], return_attention_weights=True)
    dense_src, dense_dst, mask, dense_attr = graph["dense"]
    dense_out, dense_alpha = DenseEdgeBiasedAttention(conv)(
        (dense_src, dense_dst), mask, dense_attr, return_attention_weights=True
    )
    b, i = graph["dst_index"]
    torch.testing.assert_close(dense_out[b, i], out, atol=1e-5, rtol=1e-5)
    src, dst = graph["edge_index"]
    local_src = src - torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor([5, 7])])[b[dst]]
    torch.testing.assert_close(dense_alpha[b[dst], i[dst], local_src], alpha, atol=1e-6, rtol=1e-5)
    if not conv.root_weight:  # targets without incoming edges get exactly zero, in both forms
        empty = torch.ones(out.shape[0], dtype=torch.bool)
        empty[dst] = False
        assert empty.any() and (out[empty] == 0).all() and (dense_out[b[empty], i[empty]] == 0).all()


def test_dense_masked_softmax_has_finite_gradients_on_all_masked_rows():
    logits = torch.randn(3, 4, requires_grad=True)
    mask = torch.tensor([[True, False, True, False], [False] * 4, [True] * 4])
    weights = masked_softmax(logits, mask)
    assert (weights[1] == 0).all() and torch.allclose(weights[[0, 2]].sum(-1), torch.ones(2))
    (weights * torch.randn(3, 4)).sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[1] == 0).all()


def test_bellman_special_case_attention_is_p_hat_and_output_is_the_expectation(generator):
    data = small_observation_graph(torch.float64)  # P̂ rows that sum to 1 in float64
    edge_index, edge_attr = data[FROM].edge_index, data[FROM].edge_attr
    x_state = torch.randn(data[STATE].num_nodes, 5, generator=generator, dtype=torch.float64)
    x_sa = torch.randn(data[STATE_ACTION].num_nodes, 7, generator=generator, dtype=torch.float64)
    conv = EdgeBiasedAttention((5, 7), 4, heads=3, edge_dim=2, learn_beta=True, beta=1.0).double()
    with torch.no_grad():
        for lin in (conv.lin_query, conv.lin_key):
            lin.weight.zero_()
            lin.bias.zero_()
        conv.lin_edge.weight.zero_()
    out, (returned_index, alpha) = conv((x_state, x_sa), edge_index, edge_attr, return_attention_weights=True)
    p_hat = edge_attr[:, 0]
    assert alpha.shape == (edge_index.shape[1], 3) and returned_index is edge_index
    torch.testing.assert_close(alpha, p_hat[:, None].expand(-1, 3), atol=1e-15, rtol=0)
    successor, sa = edge_index
    value = conv.lin_value(x_state)  # [S, H·C]
    expected = scatter(p_hat[:, None] * value[successor], sa, dim=0, dim_size=x_sa.shape[0], reduce="sum")
    torch.testing.assert_close(out, expected, atol=1e-14, rtol=0)
    unvisited = torch.tensor([0, 3, 7])  # pairs with no observed successor get a zero message
    assert (out[unvisited] == 0).all()


def test_attention_weights_shape_reset_and_repr(generator):
    graph = bipartite_batch(generator, [(6, 5)], dim=(8, 8))
    conv = EdgeBiasedAttention(8, 4, heads=3, edge_dim=2, learn_beta=True, beta=0.7)
    edge_index, edge_attr = graph["edge_index"], graph["edge_attr"]
    E = edge_index.shape[1]
    out, (ei, alpha) = conv(
        (graph["x_src"], graph["x_dst"]), edge_index, edge_attr, return_attention_weights=True
    )
    assert out.shape == (5, 12) and alpha.shape == (E, 3) and torch.equal(ei, edge_index)
    with_edges = torch.unique(edge_index[1])
    sums = scatter(alpha, edge_index[1], dim=0, dim_size=5, reduce="sum")  # [N_dst, H]
    torch.testing.assert_close(sums[with_edges], torch.ones(with_edges.numel(), 3))
    assert isinstance(conv.beta, nn.Parameter) and conv.beta.shape == (3,)
    with torch.no_grad():
        conv.beta.fill_(3.0)
    conv.reset_parameters()
    assert torch.equal(conv.beta, torch.full((3,), 0.7))
    fixed = EdgeBiasedAttention(8, 4, heads=3)
    assert "beta" in dict(fixed.named_buffers()) and "beta" not in dict(fixed.named_parameters())
    assert repr(EdgeBiasedAttention(64, 16, heads=4)) == "EdgeBiasedAttention(64, 16, heads=4)"
    assert "\n" not in repr(conv)


def test_output_is_unchanged_under_edge_permutation_and_permuted_with_nodes(generator):
    graph = bipartite_batch(generator, [(7, 6), (4, 5)], dim=(8, 6))
    conv = EdgeBiasedAttention((8, 6), 4, heads=2, edge_dim=2, learn_beta=True)
    x_src, x_dst, edge_index, edge_attr = (
        graph["x_src"],
        graph["x_dst"],
        graph["edge_index"],
        graph["edge_attr"],
    )
    out, (_, alpha) = conv((x_src, x_dst), edge_index, edge_attr, return_attention_weights=True)

    perm = torch.randperm(edge_index.shape[1], generator=generator)
    out_e, (_, alpha_e) = conv(
        (x_src, x_dst), edge_index[:, perm], edge_attr[perm], return_attention_weights=True
    )
    torch.testing.assert_close(out_e, out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(alpha_e, alpha[perm], atol=1e-6, rtol=1e-5)

    # relabel nodes: new index of old node n is new_src[n] / new_dst[n]
    new_src = torch.randperm(x_src.shape[0], generator=generator)
    new_dst = torch.randperm(x_dst.shape[0], generator=generator)
    x_src_p = torch.empty_like(x_src).index_copy_(0, new_src, x_src)
    x_dst_p = torch.empty_like(x_dst).index_copy_(0, new_dst, x_dst)
    edge_index_p = torch.stack([new_src[edge_index[0]], new_dst[edge_index[1]]])
    out_n = conv((x_src_p, x_dst_p), edge_index_p, edge_attr)
    torch.testing.assert_close(out_n[new_dst], out, atol=1e-6, rtol=1e-5)


def test_inside_hetero_conv_on_an_observation_graph():
    data = small_observation_graph()
    conv = HeteroConv(
        {
            FROM: EdgeBiasedAttention(
                (len(STATE_FEATURES), len(STATE_ACTION_FEATURES)), 8, heads=2, edge_dim=2, learn_beta=True
            ),
            TO: EdgeBiasedAttention(
                (len(STATE_ACTION_FEATURES), len(STATE_FEATURES)),
                8,
                heads=2,
                edge_dim=2,
                log_bias_channel=None,
            ),
        },
        aggr="sum",
    )
    x_dict = {key: x.clone().requires_grad_() for key, x in data.x_dict.items()}
    out = conv(x_dict, data.edge_index_dict, edge_attr_dict=data.edge_attr_dict)
    assert out[STATE_ACTION].shape == (data[STATE_ACTION].num_nodes, 16)
    assert out[STATE].shape == (data[STATE].num_nodes, 16)
    direct = conv.convs[FROM](
        (x_dict[STATE], x_dict[STATE_ACTION]), data[FROM].edge_index, data[FROM].edge_attr
    )
    torch.testing.assert_close(out[STATE_ACTION], direct)
    (out[STATE_ACTION].square().sum() + out[STATE].square().sum()).backward()
    for name, parameter in conv.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert conv.convs[FROM].beta.grad.abs().sum() > 0
    assert x_dict[STATE].grad.abs().sum() > 0 and x_dict[STATE_ACTION].grad.abs().sum() > 0


class _Homogeneous(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encode = Linear(-1, 16)  # lazy: state and state-action inputs have different widths
        self.conv = EdgeBiasedAttention(16, 8, heads=2, edge_dim=2, learn_beta=True)

    def forward(self, x, edge_index, edge_attr):
        return self.conv(self.encode(x).relu(), edge_index, edge_attr)


def test_through_to_hetero_with_edge_attr_dict():
    data = small_observation_graph()
    model = to_hetero(_Homogeneous(), metadata=(data.node_types, [FROM, TO]))
    # placeholders whose names contain "edge" are edge-level: edge_attr is passed as a dict per edge type
    out = model(data.x_dict, data.edge_index_dict, data.edge_attr_dict)
    assert out[STATE_ACTION].shape == (data[STATE_ACTION].num_nodes, 16)
    assert out[STATE].shape == (data[STATE].num_nodes, 16)
    h = {key: model.encode[key](x).relu() for key, x in data.x_dict.items()}
    direct = model.conv["state__from__state_action"](
        (h[STATE], h[STATE_ACTION]), data[FROM].edge_index, data[FROM].edge_attr
    )
    torch.testing.assert_close(out[STATE_ACTION], direct)
    (out[STATE_ACTION].sum() + out[STATE].sum()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert model.encode[STATE].weight.grad.abs().sum() > 0
