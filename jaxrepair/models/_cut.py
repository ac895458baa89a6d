"""Cutting a network at a site: the head after it as a network of its own, and the site's values.

Repairs that only change weights after a site (VeRe repairs the dense part of its MNIST CNN; an
ACE top-k in the dense layers) need the layers before it once per input, not once per step or per
particle: :func:`site_values` computes them, :func:`head` is the rest of the network with that site
as its input, and :func:`attach` puts a repaired head's weights back into the whole network.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.models._graph import INPUT, Graph, descendants, run, site_shapes
from jaxrepair.models._network import Network


def head(model: Network, site: str) -> Network:
    """The nodes after ``site``, as a network whose input is ``site``'s value (same node names and
    parameters). Raises ``ValueError`` when a later node also reads a value computed before ``site``
    (a skip connection around it), since the head would then need more than the site."""
    g = model.graph
    if site not in g.names:
        raise ValueError(f"unknown site {site!r}; the model's sites are {list(g.names)}")
    after = descendants(g, frozenset([site]))
    if g.output not in after:
        raise ValueError(f"site {site!r} is the output or does not lead to it; cut at a hidden site")
    nodes = []
    for n in g.nodes:
        if n.name not in after:
            continue
        around = [i for i in n.inputs if i != site and i not in after]
        if around:
            raise ValueError(f"cannot cut at {site!r}: node {n.name!r} also reads {around}, computed before it")
        nodes.append(n._replace(inputs=tuple(INPUT if i == site else i for i in n.inputs)))
    params = model.params()
    shape = site_shapes(g, params)[site]
    kept = {name: p for name, p in params.items() if name in after}
    return Network(Graph(tuple(nodes), tuple(shape), g.output), kept, meta={**model.meta, "head_of": site})


@functools.partial(jax.jit, static_argnames=("graph", "site"))
def _values(params, x, *, graph, site):
    return run(graph, params, x, all_sites=True)[site]


def site_values(model: Network, site: str, x, *, batch_size: int = 1024) -> jax.Array:
    """``site``'s value for every input of ``x`` (one compiled program, ``batch_size`` at a time)."""
    params = model.params()
    x = np.asarray(x)
    if x.shape[0] == 0:
        raise ValueError("site_values needs at least one input")
    n = x.shape[0]
    pad = (-n) % batch_size if n > batch_size else 0
    xs = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    step = min(batch_size, n)
    out = [_values(params, jnp.asarray(xs[i : i + step]), graph=model.graph, site=site) for i in range(0, len(xs), step)]
    return jnp.concatenate(out)[:n]


def attach(model: Network, part: Network) -> Network:
    """``model`` with the weights of ``part`` (a :func:`head` of it, repaired) in place of its own."""
    params = model.params()
    theirs = part.params()
    unknown = sorted(set(theirs) - set(params))
    if unknown:
        raise ValueError(f"the head's nodes {unknown} are not in the model")
    for name, p in theirs.items():
        for k, v in p.items():
            if np.shape(v) != np.shape(params[name][k]):
                raise ValueError(f"{name}.{k}: the head has shape {np.shape(v)}, the model {np.shape(params[name][k])}")
    return model.with_params({**params, **theirs})
