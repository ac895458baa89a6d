"""Computation graphs and their pure interpreter.

A network is a :class:`Graph`: nodes in topological order, each naming its operator, its input
nodes and static attributes. Every node output is an *intervention site* addressed by the node's
name. The interpreter :func:`run` is a pure function of ``(params, x, intervention)``: params are a
plain nested dict ``{node: {name: array}}`` so they can be jitted, vmapped (populations, particles)
and differentiated.

:func:`resume` re-evaluates only the nodes downstream of the intervened sites, taking every other
value from an environment computed once — this is how interventions share the work of the layers
before the site.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from jaxrepair.interventions import apply_intervention
from jaxrepair.models._ops import OPS, run_op

Params = dict[str, dict[str, jax.Array]]
INPUT = "input"


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


class Node(NamedTuple):
    """One operator application. ``attrs`` is a sorted tuple of ``(key, value)`` pairs (hashable)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: tuple = ()

    @staticmethod
    def make(name: str, op: str, inputs, **attrs) -> "Node":
        if op not in OPS:
            raise ValueError(f"node {name!r}: unknown operator {op!r}; supported: {sorted(OPS)}")
        if isinstance(inputs, str):
            inputs = (inputs,)
        return Node(name, op, tuple(inputs), tuple(sorted((k, _freeze(v)) for k, v in attrs.items())))

    @property
    def attr(self) -> dict:
        return dict(self.attrs)


class Graph(NamedTuple):
    """A network's structure. Hashable, so it can be a static argument of ``jax.jit``."""

    nodes: tuple[Node, ...]
    input_shape: tuple[int, ...]  # per example, without the batch axis
    output: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def consumers(self, name: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if name in n.inputs)

    def validate(self) -> "Graph":
        seen = {INPUT}
        for n in self.nodes:
            if n.name in seen:
                raise ValueError(f"duplicate node name {n.name!r}")
            missing = [i for i in n.inputs if i not in seen]
            if missing:
                raise ValueError(f"node {n.name!r} reads {missing}, which are not defined before it")
            seen.add(n.name)
        if self.output not in seen:
            raise ValueError(f"output {self.output!r} is not a node of the graph")
        return self


@functools.lru_cache(maxsize=None)
def descendants(graph: Graph, sources: frozenset[str]) -> frozenset[str]:
    """Nodes whose value depends on any of ``sources`` (excluding the sources themselves)."""
    out: set[str] = set()
    reached = set(sources)
    for n in graph.nodes:
        if any(i in reached for i in n.inputs):
            out.add(n.name)
            reached.add(n.name)
    return frozenset(out)


def _execute(graph: Graph, params: Params, env: dict, intervention, recompute) -> dict:
    intervention = intervention or {}
    env = dict(env)
    if INPUT in intervention:
        env[INPUT] = apply_intervention(env[INPUT], intervention[INPUT])
    for n in graph.nodes:
        if recompute is None or n.name in recompute or n.name not in env:
            env[n.name] = run_op(n.op, params.get(n.name, {}), [env[i] for i in n.inputs], n.attr)
        if n.name in intervention:
            env[n.name] = apply_intervention(env[n.name], intervention[n.name])
    return env


def run(graph: Graph, params: Params, x: jax.Array, intervention: Mapping | None = None, *, all_sites: bool = False):
    """Evaluates the network on a batch ``x``, applying ``intervention`` (``{site: Intervention}``).

    Returns the output (logits), or the dict of every site's value when ``all_sites``.
    """
    env = _execute(graph, params, {INPUT: x}, intervention, None)
    return env if all_sites else env[graph.output]


def resume(
    graph: Graph,
    params: Params,
    env: Mapping[str, jax.Array],
    intervention: Mapping | None = None,
    *,
    overrides: Mapping[str, jax.Array] | None = None,
):
    """Re-evaluates only what an intervention (or an overridden site value) changes.

    ``env`` holds every site's un-intervened value (``run(..., all_sites=True)``). Nodes that do not
    depend on an intervened or overridden site are taken from ``env`` unchanged.
    """
    intervention = intervention or {}
    overrides = dict(overrides or {})
    sources = frozenset(intervention) | frozenset(overrides)
    if not sources:
        return env[graph.output]
    recompute = descendants(graph, sources)
    base = {**env, **overrides}
    out = _execute(graph, params, base, intervention, recompute)
    return out[graph.output]


def check_shapes(graph: Graph, params: Params, where: str = "") -> None:
    """Walks the graph node by node with abstract values; raises ``ValueError`` naming the first node
    whose inputs and parameters do not fit together (a converter's wrong-shaped kernel, say)."""
    env = {INPUT: jax.ShapeDtypeStruct((1, *graph.input_shape), jnp.float32)}
    for n in graph.nodes:
        p = params.get(n.name, {})
        try:
            env[n.name] = jax.eval_shape(lambda p, *xs, n=n: run_op(n.op, p, list(xs), n.attr), p, *[env[i] for i in n.inputs])
        except Exception as e:  # noqa: BLE001 - re-raised with the node named
            ins = [tuple(env[i].shape[1:]) for i in n.inputs]
            ps = {k: tuple(v.shape) for k, v in p.items()}
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ValueError(f"{where}node {n.name!r} ({n.op}): inputs of shape {ins} and parameters {ps} do not fit "
                             f"({first})") from None


def site_shapes(graph: Graph, params: Params) -> dict[str, tuple[int, ...]]:
    """Per-example shape of every site (input included), by abstract evaluation (no FLOPs).

    Shapes depend only on the graph and the parameters' shapes, so they are computed once per such
    pair: repair, localisation and checks all ask for them."""
    key = (graph, tuple(sorted((n, k, tuple(map(int, v.shape))) for n, p in params.items() for k, v in p.items())))
    return dict(_site_shapes(*key))


@functools.lru_cache(maxsize=256)
def _site_shapes(graph: Graph, param_shapes: tuple) -> tuple:
    params: dict = {}
    for node, name, shape in param_shapes:
        params.setdefault(node, {})[name] = jax.ShapeDtypeStruct(shape, jnp.float32)
    x = jax.ShapeDtypeStruct((1, *graph.input_shape), jnp.float32)
    env = jax.eval_shape(lambda p, x: run(graph, p, x, all_sites=True), params, x)
    return tuple((k, tuple(v.shape[1:])) for k, v in env.items())
