"""Sound output bounds over input boxes for graphs that are not chains: residual ``add``, leaky ReLU,
max pooling, and every affine op (dense, conv, batch norm, average pooling, flatten/reshape, ...).

Interval bounds run forward in topological order: an affine op maps the box's centre through the
op and its radius through the op's absolute linear part; ReLU, leaky ReLU, max pooling and an input
``clip`` are monotone, so they map the two corners.

CROWN (Zhang et al., NeurIPS 2018) runs backward in reverse topological order, accumulating at
each node the linear coefficients of the bounded function on that node's value. An affine op
passes them to its inputs through its transpose — the ``vjp`` of the op, exact for every affine
op — so an ``add`` of two nodes gives both the same coefficients and a node read twice sums what
its consumers send. A (leaky) ReLU is relaxed by a line below and the chord above; max pooling by
the window's input with the largest lower bound below, and above by that input where it dominates
the window (its lower bound ≥ every other upper bound; then the max is exact) and by the window's
largest upper bound otherwise — sound and cheap. Intermediate bounds of every nonlinear op's input
come from the same backward pass (one row per unit), intersected with the interval bounds.
α-CROWN (:func:`graph_alpha_crown`) optimises the slopes of the lines below the unstable (leaky)
ReLUs of the final pass, as :func:`jaxrepair.verify.alpha_crown` does on chains.

Values are flat per example (``[n]``); coefficients ``[rows, *shape]`` use the ops' batch axis for
the rows. Everything is plain ``jnp`` on one box, so ``vmap`` bounds many boxes in one program.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.models import INPUT, Graph, run_op, site_shapes
from jaxrepair.verify._bounds import optimise_slopes

# affine in their node inputs (constants in params): the absolute linear part is the op itself
_POSITIVE = {"avgpool", "global_avgpool", "reduce_mean", "flatten", "reshape", "transpose", "pad", "concat",
             "identity", "add"}
# one input scaled element by element (its absolute linear part is |f(r) - f(0)|)
_SCALE = {"batchnorm", "standardize", "denormalize", "mul", "div", "sub", "neg"}
_KERNEL = {"dense", "conv2d"}  # the absolute linear part is the op with |kernel| and no bias
_NONLINEAR = {"relu", "leaky_relu", "maxpool"}
MAX_PRE_UNITS = 4096  # nodes wider than this get interval (not CROWN) intermediate bounds


def check_graph(graph: Graph) -> None:
    """Raises ``ValueError`` naming the first node whose op the bounds here do not cover."""
    for n in graph.nodes:
        a = n.attr
        if n.op == "clip":
            if n.inputs != (INPUT,):
                raise ValueError(f"node {n.name!r} (clip): only an input clip (the .nnet domain) can be bounded")
        elif n.op == "leaky_relu":
            if not 0.0 <= float(a.get("alpha", 0.01)) <= 1.0:
                raise ValueError(f"node {n.name!r} (leaky_relu): negative slope {a.get('alpha')} outside [0, 1] "
                                 "is not convex; not bounded")
        elif n.op in ("mul", "div") and len(n.inputs) > 1:
            raise ValueError(f"node {n.name!r} ({n.op}) multiplies two node values, which is not affine")
        elif n.op == "div" and a.get("reverse"):
            raise ValueError(f"node {n.name!r}: a constant divided by the input is not affine")
        elif n.op not in _POSITIVE | _SCALE | _KERNEL | _NONLINEAR:
            raise ValueError(f"node {n.name!r} ({n.op}): bounds cover affine ops ({', '.join(sorted(_POSITIVE | _SCALE | _KERNEL))}), "
                             f"{', '.join(sorted(_NONLINEAR))} and an input clip; not {n.op}")


def _needed(graph: Graph, target: str) -> list:
    """The target's ancestors (itself included) in topological order."""
    need, nodes = {target}, []
    for n in reversed(graph.nodes):
        if n.name in need:
            nodes.append(n)
            need.update(n.inputs)
    return nodes[::-1]


def _box(graph: Graph, lo, hi):
    """The box as the network sees it: an input clip applied to both corners."""
    for n in graph.nodes:
        if n.op == "clip" and n.inputs == (INPUT,):
            a = n.attr
            shape = lo.shape
            cl = jnp.broadcast_to(jnp.asarray(-jnp.inf if a.get("min") is None else a["min"], lo.dtype), graph.input_shape).reshape(shape)
            ch = jnp.broadcast_to(jnp.asarray(jnp.inf if a.get("max") is None else a["max"], lo.dtype), graph.input_shape).reshape(shape)
            lo, hi = jnp.clip(lo, cl, ch), jnp.clip(hi, cl, ch)
    return lo, hi


def _call(n, params, xs):
    return run_op(n.op, params.get(n.name, {}), list(xs), n.attr)


def _interval_node(n, params, shapes, boxes):
    """Interval bounds of node ``n`` from its inputs' boxes (flat ``(lo, hi)`` per input)."""
    def batch(v, name):
        return v.reshape((1, *shapes[name]))

    los = [batch(boxes[i][0], i) for i in n.inputs]
    his = [batch(boxes[i][1], i) for i in n.inputs]
    if n.op == "clip":
        return boxes[n.inputs[0]]  # the box is clipped already
    if n.op in _NONLINEAR:
        return _call(n, params, los).reshape(-1), _call(n, params, his).reshape(-1)
    cs = [(l + h) / 2 for l, h in zip(los, his)]
    rs = [(h - l) / 2 for l, h in zip(los, his)]
    c = _call(n, params, cs)
    zeros = [jnp.zeros_like(v) for v in rs]
    if n.op in _KERNEL:
        p = params[n.name]
        r = run_op(n.op, {"kernel": jnp.abs(p["kernel"])}, rs, n.attr)
    elif n.op == "sub" and len(n.inputs) > 1:
        r = rs[0] + rs[1]
    elif n.op in _SCALE:
        r = jnp.abs(_call(n, params, rs) - _call(n, params, zeros))
    else:  # _POSITIVE: a linear part with nonnegative coefficients
        r = _call(n, params, rs) - _call(n, params, zeros)
    return (c - r).reshape(-1), (c + r).reshape(-1)


def graph_interval(graph: Graph, params, lo, hi):
    """Interval bounds ``(lower, upper)`` of the graph's output over the box ``[lo, hi]`` (flat, one box)."""
    check_graph(graph)
    shapes = site_shapes(graph, params)
    lo, hi = _box(graph, jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32))
    boxes = {INPUT: (lo, hi)}
    for n in _needed(graph, graph.output):
        boxes[n.name] = _interval_node(n, params, shapes, boxes)
    return boxes[graph.output]


@functools.lru_cache(maxsize=64)
def _pool_index(in_shape: tuple, attrs: tuple) -> np.ndarray:
    """``[h_out, w_out, c, window]`` flat input index of each max-pool window entry (-1: padding)."""
    a = dict(attrs)
    h, w, c = in_shape
    wh, ww = a["window"]
    sh, sw = a.get("strides", a["window"])
    dh, dw = a.get("dilation", (1, 1))
    padding = a.get("padding", "VALID")
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads((h, w), ((wh - 1) * dh + 1, (ww - 1) * dw + 1), (sh, sw), padding)
    else:
        pads = [tuple(int(v) for v in p) for p in padding][:2]
    ho = (h + sum(pads[0]) - ((wh - 1) * dh + 1)) // sh + 1
    wo = (w + sum(pads[1]) - ((ww - 1) * dw + 1)) // sw + 1
    i, j, kh, kw = np.meshgrid(np.arange(ho), np.arange(wo), np.arange(wh), np.arange(ww), indexing="ij")
    r, q = i * sh + kh * dh - pads[0][0], j * sw + kw * dw - pads[1][0]  # [ho, wo, wh, ww]
    ok = (r >= 0) & (r < h) & (q >= 0) & (q < w)
    base = np.where(ok, (r * w + q) * c, -1).reshape(ho, wo, 1, wh * ww)
    return np.where(base >= 0, base + np.arange(c)[None, None, :, None], -1)


def _relax_relu(A, l, u, slope, alpha=None):
    """Backward through a (leaky) ReLU of negative slope ``slope``: ``(A_in, const)``. ``alpha``: the
    slopes of the lines below the unstable units (``[rows, *shape]`` in ``[slope, 1]``; α-CROWN); by
    default 1 or ``slope``, whichever keeps the relaxation's area smaller."""
    unstable = (l < 0) & (u > 0)
    denom = jnp.where(unstable, u - l, 1.0)
    chord = jnp.where(unstable, (u - slope * l) / denom, jnp.where(l >= 0, 1.0, slope))
    icpt = jnp.where(unstable, l * (slope - chord), 0.0)  # the chord through (l, slope·l) and (u, u)
    line = jnp.where(u > -l, 1.0, slope) if alpha is None else alpha
    below = jnp.where(unstable, line, jnp.where(l >= 0, 1.0, slope))
    a_in = jnp.where(A >= 0, A * below, A * chord)
    const = jnp.sum(jnp.where(A < 0, A * icpt, 0.0).reshape(A.shape[0], -1), axis=-1)
    return a_in, const


def _relax_maxpool(A, l, u, idx):
    """Backward through max pooling (see the module docstring): ``(A_in [rows, n_in], const)``."""
    rows = A.shape[0]
    idx = jnp.asarray(idx.reshape(-1, idx.shape[-1]))  # [n_out, window]
    valid = idx >= 0
    L = jnp.where(valid, l[jnp.maximum(idx, 0)], -jnp.inf)
    U = jnp.where(valid, u[jnp.maximum(idx, 0)], -jnp.inf)
    k = jnp.argmax(L, axis=-1)
    sel = jnp.take_along_axis(idx, k[:, None], axis=-1)[:, 0]  # [n_out]
    others = jnp.where(jnp.arange(idx.shape[1]) == k[:, None], -jnp.inf, U)
    dominant = jnp.take_along_axis(L, k[:, None], axis=-1)[:, 0] >= jnp.max(others, axis=-1)
    top = jnp.max(U, axis=-1)
    A = A.reshape(rows, -1)
    use = (A >= 0) | dominant
    const = jnp.sum(jnp.where(use, 0.0, A * top), axis=-1)
    a_in = jnp.zeros((rows, l.shape[0]), A.dtype).at[:, sel].add(jnp.where(use, A, 0.0))
    return a_in, const


def _backward(graph, params, shapes, target, A, pre, lo, hi, alphas=None):
    """Lower bound of ``A · value(target)`` (rows of ``A`` [rows, *shape]) over the box, given the
    bounds ``pre`` of every nonlinear op's input; also the coefficients on the input ``[rows, n_in]``.
    ``alphas``: ``{(leaky) ReLU node: [rows, n] slopes below}`` (α-CROWN), CROWN's where absent."""
    rows = A.shape[0]
    coeffs = {target: A}
    const = jnp.zeros(rows, lo.dtype)
    for n in reversed(_needed(graph, target)):
        A = coeffs.pop(n.name, None)
        if A is None:
            continue
        if n.op == "clip":
            a_ins, c = [A], 0.0
        elif n.op in ("relu", "leaky_relu"):
            l, u = pre[n.inputs[0]]
            alpha = None if alphas is None or n.name not in alphas else alphas[n.name].reshape(A.shape)
            a_in, c = _relax_relu(A, l.reshape(shapes[n.inputs[0]]), u.reshape(shapes[n.inputs[0]]), _negative_slope(n),
                                  alpha)
            a_ins = [a_in]
        elif n.op == "maxpool":
            l, u = pre[n.inputs[0]]
            a_in, c = _relax_maxpool(A, l, u, _pool_index(shapes[n.inputs[0]], n.attrs))
            a_ins = [a_in.reshape((rows, *shapes[n.inputs[0]]))]
        else:  # affine: the transpose of its linear part is its vjp; its value at 0 is the offset
            zeros1 = [jnp.zeros((1, *shapes[i]), lo.dtype) for i in n.inputs]
            c = jnp.sum((A * _call(n, params, zeros1)).reshape(rows, -1), axis=-1)
            zeros = [jnp.zeros((rows, *shapes[i]), lo.dtype) for i in n.inputs]
            _, vjp = jax.vjp(lambda *xs: _call(n, params, xs), *zeros)
            a_ins = vjp(A.reshape((rows, *shapes[n.name])))
        const = const + c
        for i, a in zip(n.inputs, a_ins):
            a = a.reshape((rows, *shapes[i]))
            coeffs[i] = coeffs[i] + a if i in coeffs else a
    lam = coeffs[INPUT].reshape(rows, -1)
    c, r = (hi + lo) / 2, (hi - lo) / 2
    return lam @ c - jnp.abs(lam) @ r + const, lam


def _negative_slope(n) -> float:
    return 0.0 if n.op == "relu" else float(n.attr.get("alpha", 0.01))


def graph_crown_pre(graph: Graph, params, lo, hi) -> dict:
    """CROWN bounds ``{node: (lower, upper)}`` (flat) of every nonlinear op's input, intersected with
    intervals (nodes wider than ``MAX_PRE_UNITS``: intervals only). One box, flat."""
    check_graph(graph)
    shapes = site_shapes(graph, params)
    lo, hi = _box(graph, jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32))
    return _pre(graph, params, shapes, lo, hi)[0]


def _pre(graph, params, shapes, lo, hi, given=None):
    """``(pre, boxes)``: the nonlinear ops' input bounds and every node's. ``given``: the first, already
    computed (:func:`graph_crown_pre`): then only the interval pass runs."""
    wanted = {n.inputs[0] for n in graph.nodes if n.op in _NONLINEAR}
    boxes = {INPUT: (lo, hi)}
    pre = {INPUT: (lo, hi)} if INPUT in wanted else {}
    for n in _needed(graph, graph.output):
        nl, nh = _interval_node(n, params, shapes, boxes)
        size = int(np.prod(shapes[n.name]))
        if n.name in wanted and given is not None:
            nl, nh = given[n.name]
        elif n.name in wanted and size <= MAX_PRE_UNITS:
            eye = jnp.eye(size, dtype=lo.dtype).reshape((size, *shapes[n.name]))
            low, _ = _backward(graph, params, shapes, n.name, eye, pre, lo, hi)
            up, _ = _backward(graph, params, shapes, n.name, -eye, pre, lo, hi)
            nl, nh = jnp.maximum(nl, low), jnp.minimum(nh, -up)
        boxes[n.name] = (nl, nh)
        if n.name in wanted:
            pre[n.name] = (nl, nh)
    return pre, boxes


def graph_crown(graph: Graph, params, lo, hi, C, d, *, with_coefficients: bool = False, pre=None):
    """Lower bounds of ``C·y − d`` (rows of the spec, ``y`` the flat output) over the box ``[lo, hi]``
    by CROWN over the graph; ``max`` with the interval bound, so never looser than intervals. One box,
    flat; vmap for many. ``with_coefficients``: also the rows' coefficients on the input ``[rows, n_in]``.
    ``pre``: the intermediate bounds, if :func:`graph_crown_pre` has computed them already."""
    check_graph(graph)
    shapes = site_shapes(graph, params)
    lo, hi = _box(graph, jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32))
    C, d = jnp.asarray(C, lo.dtype), jnp.asarray(d, lo.dtype)
    pre, boxes = _pre(graph, params, shapes, lo, hi, pre)
    bound, lam = _backward(graph, params, shapes, graph.output, C.reshape((C.shape[0], *shapes[graph.output])), pre, lo, hi)
    bound = bound - d
    ylo, yhi = boxes[graph.output]  # intervals from the CROWN intermediate bounds
    best = jnp.maximum(bound, jnp.where(C >= 0, C * ylo, C * yhi).sum(-1) - d)
    return (best, lam) if with_coefficients else best


def graph_alpha_crown(graph: Graph, params, lo, hi, C, d, *, steps: int = 20, lr: float = 0.1, pre=None):
    """Lower bounds of ``C·y − d`` by α-CROWN over the graph: the slopes below the unstable (leaky)
    ReLUs of the final backward pass optimised by ``steps`` of projected Adam (within ``[negative
    slope, 1]``, where every line lies below the unit) from CROWN's; intermediate bounds are CROWN's,
    fixed; max pooling keeps its relaxation. As :func:`jaxrepair.verify.alpha_crown` on chains.

    Returns ``(bounds [rows], alphas)``: the best bound each row reached (never below CROWN's backward
    bound) and the slopes that gave it, ``[rows, n]`` per (leaky) ReLU node in the graph's order. One box,
    flat; vmap for many. ``pre``: the intermediate bounds, if :func:`graph_crown_pre` has computed them."""
    check_graph(graph)
    shapes = site_shapes(graph, params)
    lo, hi = _box(graph, jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32))
    C, d = jnp.asarray(C, lo.dtype), jnp.asarray(d, lo.dtype)
    pre = jax.lax.stop_gradient(_pre(graph, params, shapes, lo, hi, pre)[0])
    units = [n for n in _needed(graph, graph.output) if n.op in ("relu", "leaky_relu")]
    rows = C.shape[0]
    A = C.reshape((rows, *shapes[graph.output]))
    floor = [_negative_slope(n) for n in units]

    def bound(alphas):
        b, _ = _backward(graph, params, shapes, graph.output, A, pre, lo, hi, dict(zip([n.name for n in units], alphas)))
        return b - d

    a0 = []
    for n, s in zip(units, floor):
        l, u = pre[n.inputs[0]]
        a0.append(jnp.broadcast_to(jnp.where(u > -l, 1.0, s), (rows, l.shape[0])))
    return optimise_slopes(bound, a0, floor, steps=steps, lr=lr)
