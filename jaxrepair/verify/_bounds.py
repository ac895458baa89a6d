"""Sound output bounds of ReLU networks over input boxes: interval bound propagation, CROWN, α-CROWN.

A network is first read as a chain of affine maps with ReLUs between them (:func:`affine_chain`):
every op between two ReLUs — dense, the ``.nnet`` normalisation, constant add/sub/mul/div,
flatten/reshape, batch norm, average pooling, convolutions — is affine, so its weight matrix is its
Jacobian and its bias its value at 0 (computed once, exactly, with JAX). An input ``clip`` (the
``.nnet`` domain) is applied to the box itself. Branching graphs and other non-linearities are
refused by name here (``_graph`` bounds those).

CROWN (Zhang et al., NeurIPS 2018) bounds a linear function of the output by propagating it
backwards through the chain, relaxing each unstable ReLU by a line below (slope 0 or 1, whichever
keeps the relaxation's area smaller) and the chord above; intermediate pre-activation bounds come
from the same backward pass for each layer. α-CROWN (Xu et al., ICLR 2021) instead optimises the
slopes of the lines below the unstable ReLUs — any slope in [0, 1] gives a sound bound — by
projected gradient ascent on the bound itself (optax's Adam), per spec row. Everything is plain ``jnp`` on one box, so ``vmap``
bounds thousands of sub-boxes in one compiled call.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.models import INPUT, Network, run_op, site_shapes

_AFFINE = {"dense", "conv2d", "avgpool", "global_avgpool", "flatten", "reshape", "transpose", "pad", "batchnorm",
           "standardize", "denormalize", "add", "sub", "mul", "div", "identity", "reduce_mean"}
MAX_WIDTH = 8192


class Chain(NamedTuple):
    """``y = A_L relu(... relu(A_1 x + c_1) ...) + c_L`` on flat vectors, ``x`` clipped to ``[lo, hi]``."""

    weights: tuple  # ([n_out_i, n_in_i] arrays)
    biases: tuple  # ([n_out_i] arrays)
    clip_lo: np.ndarray | None  # [n_in] the input domain (an input clip), or None
    clip_hi: np.ndarray | None
    input_shape: tuple


def affine_chain(model: Network) -> Chain:
    """Reads ``model`` as affine maps with ReLUs between them (see the module docstring)."""
    g, params = model.graph, model.params()
    shapes = site_shapes(g, params)
    clip_lo = clip_hi = None
    pending: list = []  # affine nodes since the last ReLU
    weights, biases = [], []
    prev = INPUT
    shape = tuple(g.input_shape)

    def flush(ops, in_shape):
        def f(v):
            h = v.reshape((1, *in_shape))
            for n in ops:
                h = run_op(n.op, params.get(n.name, {}), [h], n.attr)
            return h.reshape(-1)

        zero = jnp.zeros(int(np.prod(in_shape)), jnp.float32)
        b = f(zero)
        if b.shape[0] > MAX_WIDTH or zero.shape[0] > MAX_WIDTH:
            raise ValueError(f"a layer of {b.shape[0]} x {zero.shape[0]} units is too wide to verify here (max {MAX_WIDTH})")
        return np.asarray(jax.jacfwd(f)(zero), np.float64), np.asarray(b, np.float64)

    seg_shape = shape  # the shape the pending affine ops read
    for n in g.nodes:
        if n.inputs != (prev,):
            raise ValueError(f"verification reads chains of single-input layers; node {n.name!r} reads {list(n.inputs)}")
        if n.op == "clip" and prev == INPUT:
            a = n.attr
            clip_lo = np.broadcast_to(np.asarray(-np.inf if a.get("min") is None else a["min"], np.float64), shape).reshape(-1)
            clip_hi = np.broadcast_to(np.asarray(np.inf if a.get("max") is None else a["max"], np.float64), shape).reshape(-1)
        elif n.op == "relu":
            w, b = flush(pending, seg_shape)
            weights.append(w)
            biases.append(b)
            pending = []
            seg_shape = shapes[n.name]  # the ReLU's output keeps its input's shape
        elif n.op in _AFFINE:
            if n.op == "div" and n.attr.get("reverse"):
                raise ValueError(f"node {n.name!r}: a constant divided by the input is not affine")
            pending.append(n)
        else:
            raise ValueError(f"node {n.name!r} ({n.op}): verification supports ReLU networks whose other layers are "
                             f"affine ({', '.join(sorted(_AFFINE))}); {n.op} is not")
        prev = n.name
    w, b = flush(pending, seg_shape)
    weights.append(w)
    biases.append(b)
    return Chain(tuple(weights), tuple(biases), clip_lo, clip_hi, tuple(g.input_shape))


def _f32(a):
    """Bounds are computed in float32, the dtype of the networks (``tests/test_verify.py`` re-checks
    certificates in float64)."""
    return jnp.asarray(a, jnp.float32)


def clip_box(chain: Chain, lo, hi):
    """The box as the network sees it (the input clip applied to both corners)."""
    if chain.clip_lo is None:
        return lo, hi
    cl, ch = jnp.asarray(chain.clip_lo, lo.dtype), jnp.asarray(chain.clip_hi, lo.dtype)
    return jnp.clip(lo, cl, ch), jnp.clip(hi, cl, ch)


def forward(chain: Chain, x):
    """The chain's output on flat inputs ``[B, n_in]`` (equal to the model's, for tests and counterexamples)."""
    if chain.clip_lo is not None:
        x = jnp.clip(x, jnp.asarray(chain.clip_lo, x.dtype), jnp.asarray(chain.clip_hi, x.dtype))
    h = x
    for i, (w, b) in enumerate(zip(chain.weights, chain.biases)):
        h = h @ jnp.asarray(w, h.dtype).T + jnp.asarray(b, h.dtype)
        if i < len(chain.weights) - 1:
            h = jax.nn.relu(h)
    return h


def interval(chain: Chain, lo, hi):
    """Interval bounds ``(lower, upper)`` of the output over the box ``[lo, hi]`` (one box, flat)."""
    lo, hi = _f32(lo), _f32(hi)
    lo, hi = clip_box(chain, lo, hi)
    for i, (w, b) in enumerate(zip(chain.weights, chain.biases)):
        w = jnp.asarray(w, lo.dtype)
        c, r = (hi + lo) / 2, (hi - lo) / 2
        c, r = w @ c + jnp.asarray(b, lo.dtype), jnp.abs(w) @ r
        lo, hi = c - r, c + r
        if i < len(chain.weights) - 1:
            lo, hi = jax.nn.relu(lo), jax.nn.relu(hi)
    return lo, hi


def _backward(chain: Chain, layer: int, lam, const, pre, lo, hi, *, with_coefficients: bool = False, alphas=None,
              betas=None, splits=None, layers: bool = False):
    """Lower bound of ``lam · z_layer + const`` over the box, given pre-activation bounds ``pre`` of the
    ReLU layers before ``layer`` (``z_layer`` is the output of affine map ``layer``). ``alphas``: the
    slopes of the lines below the unstable ReLUs (``[rows, n_i]`` in ``[0, 1]`` per ReLU layer; α-CROWN);
    by default 0 or 1, whichever keeps the relaxation's area smaller.

    ``splits`` (``[n_i]`` in {-1, 0, 1} per ReLU layer) with ``betas`` (``[rows, n_i]``, ≥ 0): β-CROWN's
    split constraints ``s·z ≥ 0`` in Lagrangian form — ``-β·s·z`` is added to the bounded function, which
    lowers it nowhere on the domain, so the bound stays sound for every β ≥ 0 (``pre`` must already be
    clamped by the splits). ``layers``: also the coefficients on each ReLU layer's output, before its
    relaxation (``[rows, n_i]`` per layer, in order), which the ReLU branching rule scores."""
    dt = lo.dtype
    seen = []
    for i in range(layer, -1, -1):
        w, b = jnp.asarray(chain.weights[i], dt), jnp.asarray(chain.biases[i], dt)
        const = const + lam @ b
        lam = lam @ w  # now on a_{i-1} (the ReLU output before map i), or on x when i == 0
        if i == 0:
            break
        lower, upper = pre[i - 1]
        seen.append(lam)
        unstable = (lower < 0) & (upper > 0)
        chord = jnp.where(unstable, upper / jnp.where(unstable, upper - lower, 1.0), (lower >= 0).astype(dt))
        line = (upper > -lower).astype(dt) if alphas is None else alphas[i - 1]
        below = jnp.where(unstable, line, (lower >= 0).astype(dt))
        slope = jnp.where(lam >= 0, below, chord)  # relax by the line below where the weight is >= 0
        const = const + jnp.sum(jnp.where(lam < 0, lam * chord * (-jnp.where(unstable, lower, 0.0)), 0.0), axis=-1)
        lam = lam * slope
        if betas is not None:
            lam = lam - betas[i - 1] * splits[i - 1].astype(dt)
    c, r = (hi + lo) / 2, (hi - lo) / 2
    bound = lam @ c - jnp.abs(lam) @ r + const
    if layers:
        return bound, lam, seen[::-1]
    return (bound, lam) if with_coefficients else bound


def crown_pre(chain: Chain, lo, hi):
    """CROWN bounds ``[(lower, upper)]`` of every ReLU layer's pre-activation (one box, flat)."""
    lo, hi = clip_box(chain, _f32(lo), _f32(hi))
    pre = []
    for layer in range(len(chain.weights) - 1):
        n = chain.weights[layer].shape[0]
        eye = jnp.eye(n, dtype=lo.dtype)
        lower = _backward(chain, layer, eye, jnp.zeros(n, lo.dtype), pre, lo, hi)
        upper = -_backward(chain, layer, -eye, jnp.zeros(n, lo.dtype), pre, lo, hi)
        il, iu = _interval_pre(chain, layer, pre, lo, hi)  # never looser than intervals
        pre.append((jnp.maximum(lower, il), jnp.minimum(upper, iu)))
    return pre


def alpha_crown_pre(chain: Chain, lo, hi, *, steps: int = 20, lr: float = 0.1, with_slopes: bool = False):
    """α-CROWN bounds ``[(lower, upper)]`` of every ReLU layer's pre-activation (one box, flat): each
    unit's two bounds with their own slopes below the earlier layers' unstable ReLUs, optimised as in
    :func:`alpha_crown` from CROWN's, layer by layer on the earlier layers' optimised bounds; never
    looser than :func:`crown_pre` (it starts there and keeps each row's best). ``with_slopes``: also
    the slopes, per layer ``k`` ``[2·n_k, n_j]`` per earlier layer ``j`` (rows: the lower bounds, then
    the negated upper ones; None for the first layer), which re-create the bounds independently."""
    lo, hi = clip_box(chain, _f32(lo), _f32(hi))
    pre, slopes = [], []
    for layer in range(len(chain.weights) - 1):
        n = chain.weights[layer].shape[0]
        eye = jnp.eye(n, dtype=lo.dtype)
        rows = jnp.concatenate([eye, -eye])
        zero = jnp.zeros(2 * n, lo.dtype)
        if layer == 0:
            b, a = _backward(chain, layer, rows, zero, pre, lo, hi), None
        else:
            b, a = optimise_slopes(lambda a, k=layer, p=list(pre): _backward(chain, k, rows, zero, p, lo, hi, alphas=a),
                                   default_alphas(chain, pre, 2 * n), [0.0] * layer, steps=steps, lr=lr)
        il, iu = _interval_pre(chain, layer, pre, lo, hi)
        pre.append(jax.lax.stop_gradient((jnp.maximum(b[:n], il), jnp.minimum(-b[n:], iu))))
        slopes.append(a)
    return (pre, slopes) if with_slopes else pre


def _interval_pre(chain, layer, pre, lo, hi):
    if layer == 0:
        a_lo, a_hi = lo, hi
    else:
        a_lo, a_hi = jax.nn.relu(pre[layer - 1][0]), jax.nn.relu(pre[layer - 1][1])
    w, b = jnp.asarray(chain.weights[layer], lo.dtype), jnp.asarray(chain.biases[layer], lo.dtype)
    c, r = w @ ((a_hi + a_lo) / 2) + b, jnp.abs(w) @ ((a_hi - a_lo) / 2)
    return c - r, c + r


def crown(chain: Chain, lo, hi, C, d, *, with_coefficients: bool = False, pre=None):
    """Lower bounds of ``C·y − d`` (rows of the spec) over the box ``[lo, hi]`` by CROWN; ``max`` with
    the interval bound, so it is never looser than intervals. One box, flat; vmap for many.
    ``with_coefficients``: also the rows' linear coefficients on the input (``[rows, n_in]``), which
    say how much halving each input's range can raise each bound (the branching heuristic).
    ``pre``: the intermediate bounds, if :func:`crown_pre` has computed them already."""
    lo, hi = _f32(lo), _f32(hi)
    pre = crown_pre(chain, lo, hi) if pre is None else pre
    lo_c, hi_c = clip_box(chain, lo, hi)
    C, d = jnp.asarray(C, lo.dtype), jnp.asarray(d, lo.dtype)
    bound, lam = _backward(chain, len(chain.weights) - 1, C, -d, pre, lo_c, hi_c,
                           with_coefficients=True)
    ylo, yhi = _interval_pre(chain, len(chain.weights) - 1, pre, lo_c, hi_c)  # intervals from the CROWN pre-bounds
    ibp = jnp.where(C >= 0, C * ylo, C * yhi).sum(-1) - d
    best = jnp.maximum(bound, ibp)
    return (best, lam) if with_coefficients else best


def default_alphas(chain: Chain, pre, rows: int):
    """CROWN's slopes below the ReLUs (``[rows, n_i]`` per ReLU layer): α-CROWN's starting point."""
    return [jnp.broadcast_to((u > -l).astype(l.dtype), (rows, l.shape[0])) for l, u in pre]


def alpha_crown(chain: Chain, lo, hi, C, d, *, steps: int = 20, lr: float = 0.1, pre=None):
    """Lower bounds of ``C·y − d`` by α-CROWN: the slopes below the unstable ReLUs of the final pass
    optimised by ``steps`` of projected Adam from CROWN's (intermediate bounds are CROWN's, fixed).

    Returns ``(bounds [rows], alphas)``: the best bound each row reached (never below CROWN's) and the
    slopes that gave it (``[rows, n_i]`` per ReLU layer), which re-create the bound independently.
    One box, flat; vmap for many."""
    lo, hi = _f32(lo), _f32(hi)
    pre = crown_pre(chain, lo, hi) if pre is None else pre
    pre = jax.lax.stop_gradient(pre)
    lo_c, hi_c = clip_box(chain, lo, hi)
    C, d = jnp.asarray(C, lo.dtype), jnp.asarray(d, lo.dtype)
    last = len(chain.weights) - 1

    def bound(alphas):
        return _backward(chain, last, C, -d, pre, lo_c, hi_c, alphas=alphas)

    return optimise_slopes(bound, default_alphas(chain, pre, C.shape[0]), [0.0] * len(pre), steps=steps, lr=lr)


def optimise_slopes(bound, a0, floors, *, steps: int, lr: float, ceilings=None):
    """α-CROWN's search: projected Adam ascent of ``bound(alphas) -> [rows]`` from the slopes ``a0``
    (``[rows, n_i]`` per unit layer), each layer's slopes kept in ``[floors[i], ceilings[i]]`` (by default
    ``[floor, 1]``, where a line lies below the unit; β-CROWN's multipliers use ``[0, inf)``). Returns
    the best bound each row reached and the slopes that gave it."""
    ceilings = [1.0] * len(a0) if ceilings is None else ceilings
    import optax

    opt = optax.adam(lr)

    def step(carry, _):
        a, state, best, best_a = carry
        b, vjp = jax.vjp(bound, a)
        (g,) = vjp(-jnp.ones_like(b))  # ascend every row's bound (rows do not share slopes)
        better = b > best
        best_a = [jnp.where(better[:, None], x, y) for x, y in zip(a, best_a)]
        best = jnp.maximum(b, best)
        upd, state = opt.update(g, state, a)
        a = [jnp.clip(x, f, c) for x, f, c in zip(optax.apply_updates(a, upd), floors, ceilings)]
        return (a, state, best, best_a), None

    (a, _, best, best_a), _ = jax.lax.scan(step, (a0, opt.init(a0), bound(a0), a0), None, length=steps)
    b = bound(a)  # the last step's slopes
    better = b > best
    best_a = [jnp.where(better[:, None], x, y) for x, y in zip(a, best_a)]
    return jnp.maximum(b, best), best_a
