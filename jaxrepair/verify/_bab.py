"""Verification of a property on a network: falsifier, branch and bound by input splitting, verdicts.

``verify(model, prop)`` decides whether any input in the property's boxes reaches its unsafe output
region (a :class:`~jaxrepair.properties.Vnnlib` property, or a built-in ACAS Xu ``Safety`` φ). A
ReLU chain is bounded as affine maps (``_bounds``, with α-CROWN); any other graph the bounds cover —
residual adds, leaky ReLU, max pooling — by CROWN and α-CROWN over the graph (``_graph``):

1. the falsifier — projected gradient ascent on the property's margin from random starts in every
   box, vmapped — looks for a counterexample; one that a concrete forward pass confirms ends the
   run with ``unsafe``;
2. otherwise boxes are bounded with CROWN and α-CROWN (vmapped over a fixed-size batch of boxes,
   one compiled program); a box whose every output clause has a row with a positive lower bound is
   closed; the others are bisected and queued — along the widest input at even depths (its width times
   the first layer's summed |weights| on it, so inputs in raw units compare) and the input
   with the largest |CROWN coefficient| × width at odd ones (either rule alone leaves some ACAS Xu
   instances open: the coefficient rule never halves an input the relaxation is loose in but the
   bound is flat in, φ1; the width rule is slow to corner φ7's counterexample) — and the falsifier
   runs on the open boxes;
3. ``safe`` when no box is left (the certificate: every closed box with its bounds, and the α-CROWN
   slopes where they closed it), ``unsafe`` with
   a confirmed counterexample, or ``unknown`` at the time limit (with the boxes still open).
"""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.models import Graph, run, site_shapes
from jaxrepair.properties import clause_margin
from jaxrepair.records import Progress
from jaxrepair.verify._bounds import Chain, affine_chain, alpha_crown, crown, crown_pre, forward
from jaxrepair.verify._graph import check_graph, graph_alpha_crown, graph_crown, graph_crown_pre
from jaxrepair.verify._relu_split import branch_and_bound as relu_branch_and_bound

BATCH = 256  # boxes bounded per compiled call (padded): one program for every round
FALSIFY = 32  # open boxes the falsifier attacks per round (padded)
FALSIFY_COORDS = 131072  # the whole-box falsifier's starts × inputs (4,096 starts for up to 32 inputs, at least 256)
SPLIT = "alternate"  # the branching rule by default (see experiments/results/verify_acasxu.md)
ALPHA_STEPS = 10  # α-CROWN steps per box by default (see experiments/results/verify_acasxu.md)
RELU_INPUTS = 32  # "auto" branching splits ReLUs (not inputs) on chains with more inputs than this
IMAGE_BATCH = 2  # boxes per call when input splitting runs on a graph with more than RELU_INPUTS inputs
RELU_BATCH = 128  # domains bounded per compiled call when splitting ReLUs
RELU_STEPS = 20  # α,β optimisation steps per domain when splitting ReLUs


@dataclasses.dataclass
class Verdict:
    verdict: str  # "safe" | "unsafe" | "unknown"
    seconds: float
    boxes: int  # boxes bounded
    counterexample: np.ndarray | None = None  # flat input, when unsafe
    output: np.ndarray | None = None  # the network's output there
    # [(lo, hi, bounds per clause row, slopes)] when safe; slopes None (CROWN closed the box) or, where α-CROWN
    # did, {"rows": [k] the row that closes each clause, "alphas": per (leaky) ReLU layer, in order, [k, n_i] its slopes}
    certificate: list = dataclasses.field(default_factory=list)
    falsifier_hits: int = 0
    worst: np.ndarray | None = None  # [k, n_in] inputs closest to a violation in boxes left open (unknown)
    open_boxes: tuple | None = None  # (lo [m, n_in], hi [m, n_in]): the boxes left open at the time limit (unknown)
    branching: str = "input"  # what branch and bound split: "input" (boxes) or "relu" (hidden units' signs)

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "seconds": self.seconds, "boxes": self.boxes,
                "counterexample": None if self.counterexample is None else self.counterexample.tolist(),
                "output": None if self.output is None else self.output.tolist(),
                "certificate_boxes": len(self.certificate), "branching": self.branching}


def spec_of(prop, chain: Chain):
    """``(boxes [B, n, 2], clauses [(C, d)])`` in the network's flat input/output coordinates."""
    from jaxrepair.properties import Safety, Vnnlib

    if not isinstance(prop, (Vnnlib, Safety)):
        raise TypeError(f"verify takes a VNN-LIB property or an ACAS Xu phi, not {type(prop).__name__}")
    return np.asarray(prop.boxes, np.float64), [(np.asarray(C), np.asarray(d)) for C, d in prop.clauses]


def stack_clauses(clauses):
    """``(rows [r, n_out], rhs [r], owner [r])``: every clause's rows ``C·y <= d`` stacked (float32),
    and the clause each row belongs to."""
    rows = np.concatenate([np.asarray(C) for C, _ in clauses]).astype(np.float32)
    rhs = np.concatenate([np.asarray(d) for _, d in clauses]).astype(np.float32)
    return rows, rhs, np.concatenate([np.full(len(d), k) for k, (_, d) in enumerate(clauses)])


def falsify(chain: Chain, clauses, lo, hi, key, *, restarts: int = 64, steps: int = 60):
    """Projected gradient ascent on the margin from ``restarts`` random points of each box ``[B, n]``;
    returns the best point per box and its margin (≥ 0: a counterexample)."""
    return _falsify_with(_chain_forward, (chain.weights, chain.biases, chain.clip_lo, chain.clip_hi), clauses, lo, hi,
                         key, restarts, steps)


def _falsify_with(fwd, args, clauses, lo, hi, key, restarts, steps):
    Cs = tuple(jnp.asarray(C, jnp.float32) for C, _ in clauses)
    ds = tuple(jnp.asarray(d, jnp.float32) for _, d in clauses)
    return _falsify(fwd, args, Cs, ds, jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32), key, restarts, steps)


def _chain(weights, biases, clip_lo, clip_hi, shape=()):
    return Chain(weights, biases, clip_lo, clip_hi, shape)


def _chain_forward(args, x):
    """A chain's output on flat inputs ``[B, n_in]`` (``args``: weights, biases, clip_lo, clip_hi)."""
    return forward(_chain(*args), x)


class _GraphForward(NamedTuple):
    """A graph's output on flat inputs ``[B, n_in]`` as ``f(params, x)``; hashable, a static jit argument."""

    graph: Graph

    def __call__(self, params, x):
        y = run(self.graph, params, x.reshape((x.shape[0], *self.graph.input_shape)))
        return y.reshape(x.shape[0], -1)


def readable(model):
    """How the verifier reads ``model``: ``(forward, args, chain)`` with ``forward(args, x [B, n_in])`` its
    output — a ReLU chain as affine maps (``chain``), any other graph the bounds cover as the graph itself
    (``chain`` None). Raises ``ValueError`` naming the first node it cannot bound."""
    try:
        chain = affine_chain(model)
    except ValueError:  # a branching graph, leaky ReLU, max pooling: bounds over the graph (refused there if not covered)
        check_graph(model.graph)
        return _GraphForward(model.graph), model.params(), None
    args = (tuple(jnp.asarray(w, jnp.float32) for w in chain.weights), tuple(jnp.asarray(b, jnp.float32) for b in chain.biases),
            None if chain.clip_lo is None else jnp.asarray(chain.clip_lo, jnp.float32),
            None if chain.clip_hi is None else jnp.asarray(chain.clip_hi, jnp.float32))
    return _chain_forward, args, chain


@jax.jit(static_argnums=(0, 7, 8))
def _falsify(fwd, args, Cs, ds, lo, hi, key, restarts, steps):

    def one_box(lo_b, hi_b, k):
        x = lo_b + jax.random.uniform(k, (restarts, lo_b.shape[0])) * (hi_b - lo_b)
        x = x.at[0].set((lo_b + hi_b) / 2)
        width = jnp.where(hi_b > lo_b, hi_b - lo_b, 0.0)

        def m(z):
            return clause_margin(fwd(args, z), tuple(zip(Cs, ds)))

        grad = jax.vmap(jax.grad(lambda z: m(z[None])[0]))

        def ascend(x, scale):
            def step(carry, t):
                x, best_x, best_m = carry
                g = grad(x)
                size = scale * (0.5 + 0.5 * jnp.cos(jnp.pi * t / steps))  # of the box's width, annealed to 0
                x = jnp.clip(x + size * width * jnp.sign(g), lo_b, hi_b)
                mx = m(x)
                better = mx > best_m
                return (x, jnp.where(better[:, None], x, best_x), jnp.where(better, mx, best_m)), None

            (_, best, margins), _ = jax.lax.scan(step, (x, x, m(x)), jnp.arange(steps, dtype=jnp.float32))
            return best, margins

        x, margins = ascend(x, 0.05)  # global: large steps from every start
        top = jnp.argsort(-margins)[: min(64, restarts)]
        fine, fine_m = ascend(x[top], 0.002)  # local: small steps from the most promising points
        x, margins = jnp.concatenate([x, fine]), jnp.concatenate([margins, fine_m])
        i = jnp.argmax(margins)
        return x[i], margins[i]

    keys = jax.random.split(key, lo.shape[0])
    return jax.vmap(one_box)(lo, hi, keys)


def counterexamples(model, prop, key, *, num_boxes: int = 256, width: float = 0.1, restarts: int = 32,
                    steps: int = 40, near: bool = False, around=None):
    """The falsifier over many boxes: one best point per random sub-box of the property's boxes
    (centred at a uniform sample, boxes chosen in proportion to volume; their sizes run from the
    whole box down to ``width`` of it on every input). A single run on a whole box finds one point;
    this finds the many separate places a repair must fix.

    ``around`` (``[k, n_in]`` points, e.g. a verifier's counterexample): the sub-boxes are centred
    on these points instead, in turn, with widths from ``width`` down to ``width / 1000`` — for
    violations confined to a pocket that uniform centres would miss.

    Returns ``(x [n, n_in], margin [n])``: the points a forward pass confirms as violations, or with
    ``near=True`` every best point (``margin < 0``: not violated, the falsifier's closest approach).
    """
    fwd, args, chain = readable(model)
    boxes, clauses = spec_of(prop, chain)
    widths = boxes[:, :, 1] - boxes[:, :, 0]
    vol = np.prod(np.where(widths > 0, widths, 1.0), axis=1)
    kb, kc, kf = jax.random.split(key, 3)
    which = np.asarray(jax.random.choice(kb, len(boxes), (num_boxes,), p=jnp.asarray(vol / vol.sum())))
    lo_b, hi_b = boxes[which, :, 0], boxes[which, :, 1]
    centre = lo_b + np.asarray(jax.random.uniform(kc, lo_b.shape), np.float64) * (hi_b - lo_b)
    scale = np.geomspace(1.0, width, num_boxes)[:, None]  # from the whole box (its worst places) to small ones
    if around is not None:
        pts = np.asarray(around, np.float64).reshape(-1, boxes.shape[1])
        centre = np.clip(pts[np.arange(num_boxes) % len(pts)], lo_b, hi_b)
        scale = width * np.logspace(0, -3, num_boxes)[:, None]
    half = scale * (hi_b - lo_b) / 2
    lo, hi = np.maximum(centre - half, lo_b), np.minimum(centre + half, hi_b)
    xs, _ = jax.device_get(_falsify_with(fwd, args, clauses, lo, hi, kf, restarts, steps))
    xs = np.asarray(xs, np.float32)
    y = np.asarray(model(xs.reshape((-1, *model.input_shape)))).reshape(len(xs), -1)
    ms = np.asarray(clause_margin(jnp.asarray(y), clauses))  # the model's own forward pass decides
    keep = np.ones(len(xs), bool) if near else ms >= 0
    return xs[keep], ms[keep]


@jax.jit(static_argnums=(8,))
def _bound_batch(weights, biases, clip_lo, clip_hi, C, d, lo, hi, alpha_steps=0):
    """Lower bounds of C·y − d for every row (all clauses' rows stacked), for a batch of boxes: CROWN's
    (with the rows' input coefficients) and, with ``alpha_steps``, α-CROWN's with its slopes."""
    chain = _chain(weights, biases, clip_lo, clip_hi)

    def one(a, b):
        pre = crown_pre(chain, a, b)
        plain, coef = crown(chain, a, b, C, d, with_coefficients=True, pre=pre)
        if not alpha_steps:
            return plain, coef, plain, None
        opt, alphas = alpha_crown(chain, a, b, C, d, steps=alpha_steps, pre=pre)
        return plain, coef, jnp.maximum(opt, plain), alphas

    return jax.vmap(one)(lo, hi)


@jax.jit(static_argnums=(0, 6))
def _bound_graph_batch(graph, params, C, d, lo, hi, alpha_steps=0):
    """CROWN and, with ``alpha_steps``, α-CROWN over a graph, in ``_bound_batch``'s output form."""

    def one(a, b):
        pre = graph_crown_pre(graph, params, a, b)  # shared by both passes
        plain, coef = graph_crown(graph, params, a, b, C, d, with_coefficients=True, pre=pre)
        if not alpha_steps:
            return plain, coef, plain, None
        opt, alphas = graph_alpha_crown(graph, params, a, b, C, d, steps=alpha_steps, pre=pre)
        return plain, coef, jnp.maximum(opt, plain), alphas

    return jax.vmap(one)(lo, hi)


def _sensitivity(chain: Chain) -> np.ndarray:
    """|d output / d input| summed over outputs, from the product of |weights|: a split heuristic."""
    s = np.abs(chain.weights[-1])
    for w in reversed(chain.weights[:-1]):
        s = s @ np.abs(w)
    return s.sum(0)


def _closed(bounds, owner, n_clauses):
    """Boxes on which every clause has a row bounded above zero (so no output meets the clause)."""
    return np.all([np.any(bounds[:, owner == k] > 0, axis=1) for k in range(n_clauses)], axis=0)


def verify(model, prop, *, timeout: float = 60.0, seed: int = 0, progress: bool = False,
           falsifier_only: bool = False, alpha_steps: int = ALPHA_STEPS, split: str = SPLIT,
           falsifier: bool = True, max_boxes: int | None = None, branching: str = "auto") -> Verdict:
    """Decides ``prop`` on ``model`` (see the module docstring). ``timeout`` in seconds;
    ``falsifier_only``: just the falsifier on the whole boxes (``unsafe`` or ``unknown``);
    ``alpha_steps``: α-CROWN steps on every box (0: CROWN only); ``split``: the input an open box is
    bisected along: ``"width"`` (the widest), ``"gain"`` (largest |CROWN coefficient| × width) or
    ``"alternate"`` (the widest at even depths, the gain at odd ones). ``falsifier=False``: branch and
    bound alone, without the falsifier — the verdict is then ``safe`` or ``unknown`` (with the open
    boxes, counterexamples' included; what a repair that trains on bounds needs); never ``unsafe``
    unless a box too small to split is violated at its centre. ``max_boxes``: stop (``unknown``) once
    that many boxes are bounded, as at the time limit but independent of the machine's speed.

    ``branching``: ``"input"`` bisects input boxes (above); ``"relu"`` splits hidden ReLUs by sign with
    β-CROWN bounds (:mod:`jaxrepair.verify._relu_split`; ReLU chains only) — then ``boxes`` counts the
    domains bounded and each certificate entry is ``(lo, hi, bounds, slopes)`` of the property box with
    ``slopes`` holding the domain's ``"signs"``, the ``"box"``'s intermediate bounds and their slopes
    (one object shared by the box's domains), and its rows' ``"alphas"`` and ``"betas"`` (or ``"lp"``); ``"auto"``
    (default) splits ReLUs on chains with more than ``RELU_INPUTS`` inputs (images), inputs otherwise.
    The verdict says which it used (``Verdict.branching``)."""
    bar = Progress("verify", enabled=progress)
    v = None
    try:
        v = _decide(model, prop, timeout=timeout, seed=seed, falsifier_only=falsifier_only, alpha_steps=alpha_steps,
                    split=split, falsifier=falsifier, max_boxes=max_boxes, branching=branching, bar=bar)
        return v
    finally:
        bar.close(f"boxes bounded: {v.verdict} in {v.seconds:.1f}s" if v is not None else "boxes bounded: stopped")


def _decide(model, prop, *, timeout, seed, falsifier_only, alpha_steps, split, falsifier, max_boxes, branching,
            bar) -> Verdict:
    if split not in ("width", "gain", "alternate"):
        raise ValueError(f"split must be 'width', 'gain' or 'alternate', not {split!r}")
    if branching not in ("auto", "input", "relu"):
        raise ValueError(f"branching must be 'auto', 'input' or 'relu', not {branching!r}")
    if max_boxes is not None and (isinstance(max_boxes, bool) or not isinstance(max_boxes, int) or max_boxes < 1):
        raise ValueError(f"max_boxes must be a positive integer or None, got {max_boxes!r}")
    if falsifier_only and not falsifier:
        raise ValueError("falsifier_only=True asks for the falsifier alone; falsifier=False turns it off")
    t0 = time.perf_counter()
    fwd, args, chain = readable(model)
    boxes, clauses = spec_of(prop, chain)
    shapes = site_shapes(model.graph, model.params())
    n_in = int(np.prod(model.graph.input_shape))
    if boxes.shape[1] != n_in:
        raise ValueError(f"the property bounds {boxes.shape[1]} inputs; the network has {n_in}")
    n_out = int(np.prod(shapes[model.graph.output]))
    if any(C.shape[1] != n_out for C, _ in clauses):
        raise ValueError(f"the property constrains {clauses[0][0].shape[1]} outputs; the network has {n_out}")
    rows, rhs, owner = stack_clauses(clauses)
    if branching == "relu" and chain is None:
        raise ValueError("branching='relu' splits the ReLUs of a chain of affine layers; this network is a graph "
                         "(a residual add, max pooling or leaky ReLU): use branching='input'")
    relu = branching == "relu" or (branching == "auto" and chain is not None and n_in > RELU_INPUTS)
    rows, rhs = jnp.asarray(rows), jnp.asarray(rhs)  # on the device once, not per batch
    if chain is not None:
        sens = _sensitivity(chain)
        unit = np.abs(chain.weights[0]).sum(0)  # what a unit of each input moves the first layer by

        def bound_batch(lo, hi):
            return _bound_batch(*args, rows, rhs, jnp.asarray(lo), jnp.asarray(hi), alpha_steps)
    else:
        sens = np.ones(n_in)
        unit = np.ones(n_in)

        def bound_batch(lo, hi):
            return _bound_graph_batch(model.graph, args, rows, rhs, jnp.asarray(lo), jnp.asarray(hi), alpha_steps)
    key = jax.random.key(seed)

    def confirm(x):
        x = np.asarray(x, np.float32)[None]
        y = np.asarray(model(x.reshape((1, *model.input_shape)))).reshape(1, -1)
        return float(clause_margin(jnp.asarray(y), clauses)[0]) >= 0, y[0]

    def falsify_some(boxes_lo, boxes_hi, k):
        """The falsifier on up to FALSIFY boxes, padded to FALSIFY (one compiled program)."""
        n = min(len(boxes_lo), FALSIFY)
        pad = np.minimum(np.arange(FALSIFY), n - 1)
        xs, ms = jax.device_get(_falsify_with(fwd, args, clauses, np.asarray(boxes_lo)[pad], np.asarray(boxes_hi)[pad], k,
                                              restarts=8, steps=20))
        return xs[:n], ms[:n]

    queue = [(b[:, 0].astype(np.float32), b[:, 1].astype(np.float32), 0) for b in boxes]  # (lo, hi, depth)
    certificate, bounded, hits, undecided = [], 0, 0, False
    # 1. the falsifier on the whole boxes
    if falsifier:
        lo = np.stack([q[0] for q in queue])
        hi = np.stack([q[1] for q in queue])
        key, k = jax.random.split(key)
        restarts = int(np.clip(FALSIFY_COORDS // n_in, 256, 4096))  # fewer starts for image-sized inputs
        xs, ms = jax.device_get(_falsify_with(fwd, args, clauses, lo, hi, k, restarts=restarts, steps=80))
        for x, m in zip(xs, ms):
            if m >= 0:
                ok, y = confirm(x)
                if ok:
                    return Verdict("unsafe", time.perf_counter() - t0, 0, np.asarray(x), y, falsifier_hits=1)
        if falsifier_only:
            return Verdict("unknown", time.perf_counter() - t0, 0, worst=np.asarray(xs))
    # 2. branch and bound
    per_call = BATCH if n_in <= RELU_INPUTS else IMAGE_BATCH  # image-sized graphs: CROWN's rows fill the memory
    if relu:
        return _split_relus(args, rows, rhs, owner, queue, confirm, t0=t0, timeout=timeout, max_boxes=max_boxes,
                            hits=hits, bar=bar)
    while queue:
        if time.perf_counter() - t0 > timeout or (max_boxes is not None and bounded >= max_boxes):
            # out of time (or boxes); the points of the open boxes closest to a violation: what a certified repair trains on next
            key, k = jax.random.split(key)
            xs, _ = falsify_some([q[0] for q in queue[:FALSIFY]], [q[1] for q in queue[:FALSIFY]], k)
            return Verdict("unknown", time.perf_counter() - t0, bounded, falsifier_hits=hits, worst=np.asarray(xs),
                           open_boxes=(np.stack([q[0] for q in queue]), np.stack([q[1] for q in queue])))
        batch, queue = queue[:per_call], queue[per_call:]
        n = len(batch)
        depth = [b[2] for b in batch]
        lo = np.stack([b[0] for b in batch] + [batch[0][0]] * (per_call - n))
        hi = np.stack([b[1] for b in batch] + [batch[0][1]] * (per_call - n))
        plain, coef, bounds, alphas = jax.device_get(bound_batch(lo, hi))
        plain, coef, bounds = np.asarray(plain)[:n], np.asarray(coef)[:n], np.asarray(bounds)[:n]
        bounded += n
        # a clause is impossible on a box when one of its rows is bounded above zero
        closed = _closed(bounds, owner, len(clauses))
        by_crown = _closed(plain, owner, len(clauses))
        open_idx = np.flatnonzero(~closed)
        for i in np.flatnonzero(closed):
            slopes = None
            if not by_crown[i]:  # closed by α-CROWN: keep the slopes of each clause's best row (the re-check needs them)
                best = [int(np.flatnonzero(owner == k)[np.argmax(bounds[i, owner == k])]) for k in range(len(clauses))]
                slopes = {"rows": np.array(best), "alphas": [np.asarray(a[i][best]) for a in alphas]}
            certificate.append((lo[i], hi[i], bounds[i], slopes))
        if open_idx.size and falsifier:
            key, k = jax.random.split(key)
            xs, ms = falsify_some(lo[open_idx], hi[open_idx], k)
            for x, m in zip(xs, ms):
                if m >= 0:
                    hits += 1
                    ok, y = confirm(x)
                    if ok:
                        return Verdict("unsafe", time.perf_counter() - t0, bounded, np.asarray(x), y, falsifier_hits=hits)
        for i in open_idx:
            width = hi[i] - lo[i]
            if split == "width" or (split == "alternate" and depth[i] % 2 == 0):  # bisect the widest input
                dim = int(np.argmax(width * unit))  # widest as the network sees it, not in the input's own units
            else:  # where halving the range raises the open clauses' best rows the most (|coef| x width)
                still = [k for k in range(len(clauses)) if not np.any(bounds[i, owner == k] > 0)]
                open_rows = np.flatnonzero(np.isin(owner, still))
                gain = np.abs(coef[i, open_rows]).sum(0) * width
                dim = int(np.argmax(gain if gain.max() > 0 else width * sens))
            if width[dim] <= 0:  # cannot be split further: its centre decides it, or the run cannot be decided
                ok, y = confirm((lo[i] + hi[i]) / 2)
                if ok:
                    return Verdict("unsafe", time.perf_counter() - t0, bounded, (lo[i] + hi[i]) / 2, y,
                                   falsifier_hits=hits)
                undecided = True
                continue
            mid = (lo[i][dim] + hi[i][dim]) / 2
            left_hi, right_lo = hi[i].copy(), lo[i].copy()
            left_hi[dim], right_lo[dim] = mid, mid
            queue += [(lo[i], left_hi, depth[i] + 1), (right_lo, hi[i], depth[i] + 1)]
        bar.update(bounded, f"boxes bounded, {len(certificate)} closed, {len(queue)} open")
    if undecided:  # a box too small to split stayed open: never call that safe
        return Verdict("unknown", time.perf_counter() - t0, bounded, falsifier_hits=hits)
    return Verdict("safe", time.perf_counter() - t0, bounded, certificate=certificate, falsifier_hits=hits)


def _split_relus(args, rows, rhs, owner, queue, confirm, *, t0, timeout, max_boxes, hits, bar) -> Verdict:
    """Branch and bound by ReLU splitting (``_relu_split``) on each of the property's boxes in turn."""
    bounded, certificate = 0, []
    for lo, hi, _ in queue:
        def out_of_time(n, before=bounded):
            return time.perf_counter() - t0 > timeout or (max_boxes is not None and before + n >= max_boxes)

        r = relu_branch_and_bound(args, np.asarray(rows), np.asarray(rhs), owner, lo, hi, confirm=confirm,
                                  out_of_time=out_of_time, batch=RELU_BATCH, steps=RELU_STEPS, bar=bar)
        bounded += r["domains"]
        if r["status"] == "unsafe":
            return Verdict("unsafe", time.perf_counter() - t0, bounded, r["x"], r["y"], falsifier_hits=hits,
                           branching="relu")
        if r["status"] == "unknown":
            return Verdict("unknown", time.perf_counter() - t0, bounded, falsifier_hits=hits, branching="relu")
        certificate += [(lo, hi, b, {"signs": signs, "box": r["box"], **(slopes or {})})
                        for signs, b, slopes in r["certificate"]]
    return Verdict("safe", time.perf_counter() - t0, bounded, certificate=certificate, falsifier_hits=hits,
                   branching="relu")
