"""Graph layers for MDPs, usable in any PyG model."""

from rlfm.nn.attention import EdgeBiasedAttention
from rlfm.nn.block import PropagationBlock, mlp

__all__ = ["EdgeBiasedAttention", "PropagationBlock", "mlp"]
