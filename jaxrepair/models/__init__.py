"""Models: the graph representation, its pure interpreter, the NNX :class:`Network`, constructors.

Everything else in jaxrepair works on ``apply(params, x, intervention)`` from :func:`functional`,
so hand-built, zoo and converted models are treated alike.
"""

from jaxrepair.models._builders import cnn, from_config, gpt, mlp, resnet, vit
from jaxrepair.models._cut import attach, head, site_values
from jaxrepair.models._flops import forward_flops, parameter_count
from jaxrepair.models._graph import INPUT, Graph, Node, Params, check_shapes, descendants, resume, run, site_shapes
from jaxrepair.models._network import (
    Apply,
    Network,
    SiteInfo,
    channel_units,
    check_finite,
    functional,
    hidden_sites,
    load,
    merge,
    save,
    split,
    sites,
    write_atomic,
)
from jaxrepair.models._ops import ACTIVATIONS, ELEMENTWISE, OPS, STAT_NAMES, run_op, supported_ops

__all__ = [
    "ACTIVATIONS", "Apply", "attach", "channel_units", "head", "site_values", "ELEMENTWISE", "Graph", "INPUT", "Network", "Node", "OPS", "Params", "STAT_NAMES", "SiteInfo",
    "check_finite", "check_shapes", "cnn", "descendants", "forward_flops", "from_config", "functional", "gpt", "hidden_sites", "load", "merge", "mlp",
    "parameter_count", "resnet", "resume", "run", "run_op", "save", "site_shapes", "sites", "split", "supported_ops", "vit", "write_atomic",
]
