"""Parameter and FLOP counts of a network, read from its graph's op shapes.

The convention is the one model zoos quote (fvcore, torchvision): a multiply-accumulate of a dense
or convolution layer is 2 FLOPs and a convolution counts every kernel tap, padding included; a bias
adds 1 FLOP per output element; batch norm 2 (scale and shift, as at inference); pooling reads its
window once per output; a global average pool reads its input once; element-wise operators cost 1
per output element (``softmax``: 3; layer and RMS norm: 5); a dense layer over tokens counts every
token; a product of two activations 2 per multiply-accumulate; reshapes, gathers and token
selection cost nothing. Counts are per example, forward only.

XLA's ``compile().cost_analysis()["flops"]`` differs by design: it skips the padded taps of a
convolution and counts element-wise work its own way, so it comes out a few percent lower on
small images.
"""

from __future__ import annotations

import math

import numpy as np

from jaxrepair.models._graph import INPUT, Graph, Params
from jaxrepair.models._network import Apply, Network
from jaxrepair.models._network import sites as site_info
from jaxrepair.models._ops import STAT_NAMES

_FREE = frozenset({"flatten", "reshape", "transpose", "pad", "identity", "concat", "heads", "take", "prepend", "embed"})


def _node_flops(node, params: dict, shapes: dict) -> int:
    out = math.prod(shapes[node.name])
    a = node.attr
    if node.op == "dense":
        fan_in, fan_out = np.shape(params["kernel"])
        rows = out // fan_out  # a dense layer over tokens applies to every row
        return rows * (2 * fan_in * fan_out + (fan_out if "bias" in params else 0))
    if node.op == "matmul":
        inner = shapes[node.inputs[1]][-1 if a.get("transpose_b") else -2]
        return 2 * out * inner + (out if "scale" in a else 0)
    if node.op in ("layernorm", "rmsnorm"):
        return 5 * out  # mean, centre, variance, normalise, scale (and shift)
    if node.op == "causal_mask":
        return out
    if node.op == "conv2d":
        kh, kw, cin_per_group, _ = np.shape(params["kernel"])
        return 2 * out * kh * kw * cin_per_group + (out if "bias" in params else 0)
    if node.op in ("maxpool", "avgpool"):
        return out * math.prod(a["window"])
    if node.op in ("global_avgpool", "reduce_mean"):
        return math.prod(shapes[node.inputs[0]])
    if node.op in ("batchnorm", "standardize", "denormalize"):
        return 2 * out
    if node.op in ("softmax", "log_softmax"):
        return 3 * out
    if node.op in _FREE:
        return 0
    return out  # element-wise: activations, add, sub, mul, div


def forward_flops(model: Network | Apply | Graph, params: Params | None = None) -> dict[str, int]:
    """FLOPs of one example's forward pass, per node (see the module docstring for the convention).

    >>> import jax, jaxrepair as jr
    >>> jr.models.forward_flops(jr.models.mlp([4, 3, 2], key=jax.random.key(0)))
    {'layer1.pre': 27, 'layer1': 3, 'logits': 14}
    """
    graph = model if isinstance(model, Graph) else model.graph
    if params is None:
        if not isinstance(model, Network):
            raise ValueError("forward_flops of an Apply or Graph needs the params")
        params = model.params()
    info = site_info(graph, params)
    shapes = {name: tuple(s.shape) for name, s in info.items()}
    shapes.setdefault(INPUT, tuple(graph.input_shape))
    return {n.name: int(_node_flops(n, params.get(n.name, {}), shapes)) for n in graph.nodes}


def parameter_count(model: Network | Params, *, trainable: bool = True) -> int:
    """Number of parameters; ``trainable=False`` also counts batch statistics (running mean/var).

    >>> import jax, jaxrepair as jr
    >>> jr.models.parameter_count(jr.models.mlp([4, 3, 2], key=jax.random.key(0)))
    23
    """
    params = model.params() if isinstance(model, Network) else model
    return int(sum(np.size(v) for p in params.values() for k, v in p.items() if not (trainable and k in STAT_NAMES)))
