"""Search spaces: what a repair solution is, how it changes the model, and how it is folded back.

A space is a frozen (hashable) description of the selected neurons. Its solutions are flat vectors
(what evosax searches) that :meth:`unflatten` turns into a readable pytree. ``realize`` returns the
modified ``(params, intervention)`` pair that the objective evaluates; ``fold`` returns plain params
of a normal model that computes the same function.

* :class:`FactorSpace` — CARE: one multiplicative factor per selected neuron (per channel on conv
  sites), applied as the intervention ``h_j ← f_j·h_j`` and folded into the outgoing weights (dense
  consumers) or, for positively homogeneous activations and factors ≥ 0, into the incoming ones.
* :class:`DeltaSpace` — additive deltas on a selected neuron's incoming weights and bias and its
  outgoing weights (dense → activation → dense sites). ``realize`` already gives plain params.

Only the leaves a solution touches depend on it, so under ``vmap`` over a population everything
upstream of the earliest selected site is computed once and shared by all particles.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from jaxrepair.interventions import Intervention, unit_mask
from jaxrepair.models import ELEMENTWISE, Graph

# Activations with act(c·z) = c·act(z) for c ≥ 0: factors can be folded into the incoming weights.
_HOMOGENEOUS = {"relu", "leaky_relu", "identity"}


@dataclasses.dataclass(frozen=True)
class Neurons:
    """Selected units of one site (channels when ``per_channel``)."""

    site: str
    units: tuple[int, ...]
    shape: tuple[int, ...]  # the site's per-example shape
    per_channel: bool = False


def group(selection: Sequence[tuple[str, int]], site_info: dict, per_channel: bool | None = None) -> tuple[Neurons, ...]:
    """``[(site, unit), ...]`` → one :class:`Neurons` per site, in first-seen order."""
    by_site: dict[str, list[int]] = {}
    for s, u in selection:
        if s not in site_info:
            raise ValueError(f"unknown site {s!r}; the model's sites are {list(site_info)}")
        by_site.setdefault(s, [])
        if int(u) not in by_site[s]:
            by_site[s].append(int(u))
    out = []
    for s, us in by_site.items():
        shape = tuple(site_info[s].shape)
        pc = (len(shape) == 3) if per_channel is None else per_channel
        n = shape[-1] if pc else math.prod(shape)
        bad = [u for u in us if not 0 <= u < n]
        if bad:
            raise IndexError(f"site {s!r} has {n} units; selected units {bad} are out of range")
        out.append(Neurons(s, tuple(us), shape, pc))
    return tuple(out)


def _chain_up(graph: Graph, site: str):
    """``(producer, [elementwise nodes])``: walks from ``site`` back through single-input
    element-wise nodes to the node that produced the values (each step read by nothing else)."""
    chain, cur = [], graph.node(site)
    while cur.op in ELEMENTWISE and len(cur.inputs) == 1:
        chain.append(cur)
        prev = cur.inputs[0]
        if prev == "input" or len(graph.consumers(prev)) != 1:
            return None, chain
        cur = graph.node(prev)
    return cur, chain


def _dense_consumers(graph: Graph, site: str):
    cons = graph.consumers(site)
    if cons and all(c.op == "dense" and c.inputs == (site,) for c in cons):
        return cons
    return None


@dataclasses.dataclass(frozen=True)
class FactorSpace:
    """CARE's parameterisation: a factor per selected neuron in ``[low, high]`` (1 = unchanged)."""

    neurons: tuple[Neurons, ...]
    low: float = 0.0
    high: float = 2.0
    kind: str = "factor"

    @property
    def num_dims(self) -> int:
        return sum(len(n.units) for n in self.neurons)

    def identity(self, params=None) -> jax.Array:
        return jnp.ones(self.num_dims)

    def bounds(self, params=None) -> tuple[jax.Array, jax.Array]:
        return jnp.full(self.num_dims, self.low), jnp.full(self.num_dims, self.high)

    def unflatten(self, flat, params=None) -> dict[str, jax.Array]:
        out, i = {}, 0
        for n in self.neurons:
            out[n.site] = flat[i : i + len(n.units)]
            i += len(n.units)
        return out

    def _scale(self, n: Neurons, f: jax.Array) -> tuple[np.ndarray, jax.Array]:
        mask = unit_mask(n.shape, list(n.units), per_channel=n.per_channel)
        if n.per_channel:
            scale = jnp.ones(n.shape[-1]).at[jnp.asarray(n.units)].set(f)
        else:
            scale = jnp.ones(math.prod(n.shape)).at[jnp.asarray(n.units)].set(f).reshape(n.shape)
        return mask, scale

    def realize(self, params, flat):
        sol = self.unflatten(flat)
        iv = {}
        for n in self.neurons:
            mask, scale = self._scale(n, sol[n.site])
            iv[n.site] = Intervention(jnp.asarray(mask), scale, jnp.zeros(()))
        return params, iv

    def fold(self, graph: Graph, params, flat):
        """Plain params computing the same function as ``realize`` (factors folded into weights)."""
        sol = jax.device_get(self.unflatten(flat))
        params = {k: dict(v) for k, v in params.items()}
        for n in self.neurons:
            f = np.asarray(sol[n.site], np.float32)
            width = n.shape[-1] if n.per_channel else math.prod(n.shape)
            full = np.ones(width, np.float32)
            full[list(n.units)] = f
            cons = _dense_consumers(graph, n.site) if len(n.shape) == 1 else None
            if cons is None and n.per_channel:
                # per-channel factors commute with global average pooling: fold into the dense rows after it
                pools = graph.consumers(n.site)
                if pools and all(c.op == "global_avgpool" and not c.attr.get("keepdims") for c in pools):
                    dense = [_dense_consumers(graph, c.name) for c in pools]
                    if all(d is not None for d in dense):
                        cons = tuple(c for d in dense for c in d)
            if cons is not None:
                for c in cons:
                    params[c.name]["kernel"] = params[c.name]["kernel"] * full[:, None]
                continue
            prod, chain = _chain_up(graph, n.site)
            homogeneous = all(c.op in _HOMOGENEOUS for c in chain)
            if prod is None or not homogeneous or prod.op not in ("dense", "conv2d", "batchnorm"):
                raise ValueError(
                    f"cannot fold factors on site {n.site!r} into weights: its consumers are not dense layers and "
                    f"it is not a ReLU-like activation of a dense/conv/batchnorm node"
                )
            if np.any(f < 0):
                raise ValueError(f"negative factors on site {n.site!r} cannot be folded through {chain[0].op}")
            p = params[prod.name]
            if prod.op == "batchnorm":
                p["scale"] = p["scale"] * full
                p["bias"] = p["bias"] * full
            else:
                p["kernel"] = p["kernel"] * full  # last axis = output units / channels
                if "bias" in p:
                    p["bias"] = p["bias"] * full
        return params


@dataclasses.dataclass(frozen=True)
class DeltaSpace:
    """Additive deltas on selected neurons' incoming weights + bias and outgoing weights.

    Each delta is bounded by ``±bound × std`` of the layer's kernel. Needs dense → element-wise →
    dense sites (MLP and CNN classifier layers, ACAS Xu).
    """

    neurons: tuple[Neurons, ...]
    graph: Graph
    bound: float = 1.0
    kind: str = "delta"

    def __post_init__(self):
        for n in self.neurons:
            prod, _ = _chain_up(self.graph, n.site)
            if len(n.shape) != 1 or prod is None or prod.op != "dense" or _dense_consumers(self.graph, n.site) is None:
                raise ValueError(
                    f"delta repair needs a dense → activation → dense site; {n.site!r} is not one "
                    f"(use the factor parameterisation there)"
                )

    def _layers(self, n: Neurons):
        prod, _ = _chain_up(self.graph, n.site)
        return prod.name, [c.name for c in _dense_consumers(self.graph, n.site)]

    def _sizes(self, params, n: Neurons):
        src, dsts = self._layers(n)
        fan_in = params[src]["kernel"].shape[0]
        fan_out = [params[d]["kernel"].shape[1] for d in dsts]
        return fan_in, fan_out

    def _template(self, params):
        tmpl = {}
        for n in self.neurons:
            fan_in, fan_out = self._sizes(params, n)
            k = len(n.units)
            tmpl[n.site] = {"in": jnp.zeros((k, fan_in)), "bias": jnp.zeros(k), "out": [jnp.zeros((k, fo)) for fo in fan_out]}
        return tmpl

    def identity(self, params) -> jax.Array:
        return jax.flatten_util.ravel_pytree(self._template(params))[0]

    def bounds(self, params):
        tree = {}
        for n in self.neurons:
            src, dsts = self._layers(n)
            fan_in, fan_out = self._sizes(params, n)
            k = len(n.units)
            s_in = self.bound * jnp.std(params[src]["kernel"])
            tree[n.site] = {
                "in": jnp.full((k, fan_in), s_in),
                "bias": jnp.full(k, s_in),
                "out": [jnp.full((k, fo), self.bound * jnp.std(params[d]["kernel"])) for d, fo in zip(dsts, fan_out)],
            }
        hi = jax.flatten_util.ravel_pytree(tree)[0]
        return -hi, hi

    def unflatten(self, flat, params):
        return jax.flatten_util.ravel_pytree(self._template(params))[1](flat)

    def realize(self, params, flat):
        sol = self.unflatten(flat, params)
        new = dict(params)
        for n in self.neurons:
            src, dsts = self._layers(n)
            u = jnp.asarray(n.units)
            d = sol[n.site]
            p = dict(new[src])
            p["kernel"] = p["kernel"].at[:, u].add(d["in"].T)
            if "bias" in p:
                p["bias"] = p["bias"].at[u].add(d["bias"])
            new[src] = p
            for name, dout in zip(dsts, d["out"]):
                q = dict(new[name])
                q["kernel"] = q["kernel"].at[u, :].add(dout)
                new[name] = q
        return new, {}

    def fold(self, graph: Graph, params, flat):
        return jax.device_get(self.realize(params, jnp.asarray(flat))[0])

