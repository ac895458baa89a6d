"""Branch and bound by ReLU splitting on ReLU chains (β-CROWN; Wang et al., NeurIPS 2021).

Input splitting halves one input's range per branch, hopeless for an image's 784 inputs. Here a
*domain* is the input box together with a sign for some hidden units — ``s = +1``: the unit's
pre-activation ``z ≥ 0`` (it is the identity there), ``s = -1``: ``z ≤ 0`` (it is 0) — and an open
domain is split on an unstable unit into its two signs. On a domain:

- the intermediate bounds are the box's α-CROWN bounds (computed once), clamped by the signs — an
  active split raises a lower bound to 0, an inactive one lowers an upper bound to 0, so the split
  units need no relaxation — and then, layer by layer, tightened by CROWN through the earlier
  layers' clamped bounds (:func:`refine_pre`; on mnistfc's 256x4 net this leaves 166 of 4,537
  domains open in 45 s where the clamped box bounds leave 2,062 of 16,967);
- the bound of every spec row is β-CROWN's: the split constraints ``s·z ≥ 0`` enter the backward
  pass with Lagrange multipliers ``β ≥ 0`` (``-β·s·z`` is added to the bounded function, which
  lowers it nowhere on the domain), and the slopes ``α`` of the unstable units' lines below and the
  ``β`` are optimised together by projected Adam (:func:`jaxrepair.verify._bounds.optimise_slopes`).
  Every ``α ∈ [0, 1]``, ``β ≥ 0`` gives a sound bound, so the optimisation only tightens it;
- the point of the box that minimises each row's final linear bound is run through the network:
  one that violates the property is a counterexample (as the relaxation tightens, these points
  approach the domain's worst inputs);
- the unit to split next is the unstable, unsplit unit whose upper relaxation costs the open rows'
  bounds the most — the intercept term of BaBSR (Bunel et al., JMLR 2020):
  ``Σ_rows max(-λ, 0) · u·(-l)/(u - l)``, ``λ`` the row's coefficient on the unit's output. While
  the open domains are too few to fill a batch, each is split on its best ``d`` units at once (``2^d``
  children, ``d`` up to ``MULTI_SPLIT``), as α,β-CROWN does, so a round's compiled call is never
  mostly padding.

Each domain's bounds come from its own α and β (kept in the certificate, which re-creates them);
domains are bounded in fixed-size batches by one compiled program.
The leaves of a finished run cover the box (:func:`covers_the_box` checks it from the signs alone;
the certificate re-check in ``tests/test_relu_split.py`` uses it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.properties import clause_margin
from jaxrepair.verify._bounds import Chain, _backward, alpha_crown_pre, clip_box, crown_pre, default_alphas, forward, optimise_slopes


MULTI_SPLIT = 3  # at most this many units split at once (2^3 children) while the queue is short of a batch


def clamp(pre, splits):
    """The intermediate bounds on a domain: ``[(lower, upper)]`` per ReLU layer clamped by the signs
    (``[n_i]`` per layer in {-1, 0, 1})."""
    return [(jnp.where(s > 0, jnp.maximum(l, 0.0), l), jnp.where(s < 0, jnp.minimum(u, 0.0), u))
            for (l, u), s in zip(pre, splits)]


def beta_crown(chain: Chain, lo, hi, C, d, pre, splits, *, steps: int = 20, lr: float = 0.1, refine: bool = False,
               slope_dtype=None):
    """Lower bounds of ``C·y − d`` over the box ``[lo, hi]`` restricted to the domain ``splits``
    (``[n_i]`` signs per ReLU layer; see the module docstring), given the box's intermediate bounds
    ``pre`` (:func:`jaxrepair.verify.crown_pre`, unclamped). One domain; vmap for many.

    ``refine``: the domain's intermediate bounds recomputed through the clamped earlier layers
    (:func:`refine_pre`), tighter than the box's clamped but a backward pass per layer dearer.
    ``slope_dtype``: the slopes are rounded to it (e.g. float16, to keep them small) before the last
    pass, so the bound returned is the one the rounded slopes give.

    Returns ``(bounds [rows], alphas, betas, lam, layers, pre)``: the best bound of each row, the
    slopes (``[rows, n_i]`` per layer, in [0, 1]) and multipliers (``[rows, n_i]``, ≥ 0) that gave it,
    at those values the rows' coefficients on the input (``[rows, n_in]``) and on each ReLU layer's
    output (``[rows, n_i]`` per layer), and the domain's intermediate bounds (clamped)."""
    lo, hi = clip_box(chain, jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32))
    C, d = jnp.asarray(C, lo.dtype), jnp.asarray(d, lo.dtype)
    dom = clamp(jax.lax.stop_gradient(pre), splits)
    if refine:
        dom = refine_pre(chain, lo, hi, dom, splits)
    last, k = len(chain.weights) - 1, len(dom)

    def bound(ab, full=False):
        return _backward(chain, last, C, -d, dom, lo, hi, alphas=ab[:k], betas=ab[k:], splits=splits, layers=full)

    rows = C.shape[0]
    start = default_alphas(chain, dom, rows) + [jnp.zeros((rows, l.shape[0]), lo.dtype) for l, _ in dom]
    _, ab = optimise_slopes(bound, start, [0.0] * (2 * k), steps=steps, lr=lr, ceilings=[1.0] * k + [jnp.inf] * k)
    if slope_dtype is not None:
        ab = [a.astype(slope_dtype).astype(lo.dtype) for a in ab[:k]] + ab[k:]
    best, lam, layers = bound(ab, full=True)  # the slopes' own bound: each row's best (rounded, with slope_dtype)
    return best, ab[:k], ab[k:], lam, layers, dom


def refine_pre(chain: Chain, lo, hi, dom, splits):
    """The domain's intermediate bounds recomputed layer by layer by CROWN through the earlier layers'
    clamped bounds, intersected with ``dom`` (the clamped box bounds) and clamped again."""
    out = [dom[0]]
    for layer in range(1, len(dom)):
        n = dom[layer][0].shape[0]
        eye = jnp.eye(n, dtype=lo.dtype)
        low = _backward(chain, layer, eye, jnp.zeros(n, lo.dtype), out, lo, hi)
        up = -_backward(chain, layer, -eye, jnp.zeros(n, lo.dtype), out, lo, hi)
        l, u = jnp.maximum(dom[layer][0], low), jnp.minimum(dom[layer][1], up)
        out += clamp([(l, u)], [splits[layer]])
    return out


def split_scores(dom, splits, layers, open_rows):
    """BaBSR's intercept score (module docstring) of every unit, flat ``[n_relu]``, from the domain's
    (clamped) intermediate bounds ``dom``; -inf where the unit is split or stable on the domain."""
    out = []
    for (l, u), s, lam in zip(dom, splits, layers):
        unstable = (l < 0) & (u > 0) & (s == 0)
        icpt = jnp.where(unstable, u * -l / jnp.where(unstable, u - l, 1.0), 0.0)
        score = jnp.sum(jnp.where(open_rows[:, None], jnp.maximum(-lam, 0.0), 0.0), axis=0) * icpt
        out.append(jnp.where(unstable, score + 1e-9 * (u - l), -jnp.inf))  # ties (zero coefficients): the widest
    return jnp.concatenate(out)


def layer_sizes(chain: Chain) -> tuple:
    return tuple(int(w.shape[0]) for w in chain.weights[:-1])


def unflatten(flat, sizes):
    """A flat ``[n_relu]`` vector as one array per ReLU layer."""
    return list(jnp.split(flat, np.cumsum(sizes)[:-1]))


@jax.jit(static_argnames=("steps", "refine"))
def bound_domains(weights, biases, clip_lo, clip_hi, C, d, member, clauses, pre, lo, hi, splits, *, steps: int,
                  refine: bool = True):
    """β-CROWN over a batch of domains of one box: ``splits [B, n_relu]``, ``member [rows, clauses]``
    which clause each spec row (``C·y <= d``) belongs to, ``clauses`` the same rows as ``[(C_k, d_k)]``. Returns per domain the bounds ``[rows]``, the
    ``MULTI_SPLIT`` best units to split next (by score) and which of them can be (unstable, unsplit), the slopes and multipliers that gave
    the bounds ``[rows, n_relu]`` (a certificate re-creates each bound from them), the best
    candidate input ``[n_in]`` with its margin (≥ 0: it violates the property), and every unit's phase
    on the domain ``[n_relu]`` (its sign, or 0 while unstable)."""
    chain = Chain(weights, biases, clip_lo, clip_hi, ())
    sizes = layer_sizes(chain)
    lo_c, hi_c = clip_box(chain, lo, hi)

    def one(s_flat):
        s = unflatten(s_flat, sizes)
        b, alphas, betas, lam, layers, dom = beta_crown(chain, lo, hi, C, d, pre, s, steps=steps, refine=refine,
                                                        slope_dtype=jnp.float16)  # what the certificate keeps
        alphas = [a.astype(jnp.float16) for a in alphas]  # exact: already rounded
        xs = jnp.where(lam >= 0, lo_c, hi_c)  # each row's minimiser of its linear bound over the box
        margins = clause_margin(forward(chain, xs), clauses)
        i = jnp.argmax(margins)
        clause_open = ~jnp.any(member & (b > 0)[:, None], axis=0)
        scores = split_scores(dom, s, layers, jnp.any(member & clause_open[None], axis=1))
        phases = jnp.concatenate([jnp.where(l >= 0, 1, jnp.where(u <= 0, -1, 0)).astype(jnp.int8) for l, u in dom])
        top, units = jax.lax.top_k(scores, MULTI_SPLIT)
        return (b, units, jnp.isfinite(top), jnp.concatenate(alphas, -1),
                jnp.concatenate(betas, -1) * (s_flat != 0), xs[i], margins[i], phases)

    return jax.vmap(one)(splits)


def exact_domain(weights, biases, clip_lo, clip_hi, lo, hi, phases, rows, rhs, owner):
    """On a domain where every unit's phase is fixed (``phases [n_relu]`` in {-1, 1}) the chain is affine
    in its input; a linear program (scipy's HiGHS, float64) looks for an input of the box with those
    phases that meets a clause (every row of ``C·y <= d``). Returns it (flat, float32), or None when no
    clause can be met there."""
    from scipy.optimize import linprog

    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if clip_lo is not None:
        lo, hi = np.clip(lo, clip_lo, clip_hi), np.clip(hi, clip_lo, clip_hi)
    n_in = len(lo)
    A, c = np.eye(n_in), np.zeros(n_in)  # the current layer's value as A·x + c
    ub_A, ub_b, at = [], [], 0
    for w, b in zip(weights[:-1], biases[:-1]):
        A, c = np.asarray(w, np.float64) @ A, np.asarray(w, np.float64) @ c + np.asarray(b, np.float64)
        p = np.asarray(phases[at:at + len(c)], np.float64)
        at += len(c)
        ub_A.append(-p[:, None] * A)  # p·z >= 0
        ub_b.append(p * c)
        A, c = A * (p > 0)[:, None], c * (p > 0)
    A, c = np.asarray(weights[-1], np.float64) @ A, np.asarray(weights[-1], np.float64) @ c + np.asarray(biases[-1], np.float64)
    for k in range(int(owner.max()) + 1):
        C, d = np.asarray(rows, np.float64)[owner == k], np.asarray(rhs, np.float64)[owner == k]
        res = linprog(np.zeros(n_in), A_ub=np.concatenate(ub_A + [C @ A]), b_ub=np.concatenate(ub_b + [d - C @ c]),
                      bounds=np.stack([lo, hi], 1), method="highs")
        if res.status == 0:
            return np.asarray(res.x, np.float32)
    return None


def covers_the_box(signs) -> bool:
    """Whether domains given by their signs (``[m, n_relu]`` in {-1, 0, 1}) cover the whole box, read as
    the leaves of a split tree: a set covers its region when one of its domains has no further signs,
    or when some unit has a sign in every domain and the domains of each sign cover their half."""
    todo = [np.asarray(signs, np.int8)]
    while todo:
        group = todo.pop()
        if len(group) == 0:
            return False  # a half no domain lies in
        if np.any(np.all(group == 0, axis=1)):
            continue  # one domain is the whole region
        everywhere = np.flatnonzero(np.all(group != 0, axis=0))
        if not len(everywhere):
            return False  # no unit splits the region: not the leaves of a split tree
        j = everywhere[0]
        for side in (1, -1):
            half = group[group[:, j] == side].copy()
            half[:, j] = 0
            todo.append(half)
    return True


def children(parent, units):
    """The ``2^len(units)`` domains of ``parent`` (``[n_relu]`` signs) with every sign on ``units``."""
    grid = np.array(np.meshgrid(*[[1, -1]] * len(units), indexing="ij"), np.int8).reshape(len(units), -1).T
    out = np.repeat(parent[None], len(grid), axis=0)
    out[:, units] = grid
    return out


@jax.jit(static_argnames=("steps",))
def _box_pre(weights, biases, clip_lo, clip_hi, lo, hi, *, steps):
    chain = Chain(weights, biases, clip_lo, clip_hi, ())
    return alpha_crown_pre(chain, lo, hi, steps=steps, with_slopes=True) if steps else (crown_pre(chain, lo, hi), None)


def branch_and_bound(args, rows, rhs, owner, lo, hi, *, confirm, out_of_time, batch: int, steps: int,
                     refine: bool = True, pre_steps: int = 20, keep_slopes: bool = True, bar=None) -> dict:
    """ReLU-split branch and bound (the module docstring) of the spec rows ``C·y <= d`` (``rows [r, n_out]``,
    ``rhs [r]``, ``owner [r]`` each row's clause) over one box ``[lo, hi]`` (flat), for a chain given as
    ``args`` (weights, biases, clip_lo, clip_hi). ``confirm(x) -> (violates, y)`` decides a candidate by
    the model's own forward pass; ``out_of_time(bounded)`` says when to stop.

    Returns ``{"status": "safe" | "unsafe" | "unknown", "domains": bounded, ...}`` with, when safe,
    ``certificate``: ``[(signs [n_relu] int8, bounds [r], slopes)]`` for every closed domain (``slopes``:
    of each clause's best row (``"rows" [k]``), ``"alphas" [k, n_relu]`` float16 and ``"betas"``
    ``(units [m], [k, m])`` on the split units; or ``{"lp": phases [n_relu]}`` where a linear program
    over the domain, every unit's phase fixed, found no input in any clause; None without
    ``keep_slopes``) — the bounds are the ones these values give — and ``box``: the box's intermediate
    bounds ``"pre"`` with the slopes that made them (``"alphas"``, :func:`jaxrepair.verify.alpha_crown_pre`;
    None with ``pre_steps=0``: CROWN's); when unsafe, ``x`` and ``y``; when unknown, ``open`` (domains
    left) and ``exhausted`` (a domain with every unstable unit split stayed open)."""
    weights, biases, clip_lo, clip_hi = args
    lo, hi = jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)
    pre, pre_slopes = _box_pre(weights, biases, clip_lo, clip_hi, lo, hi, steps=pre_steps)
    box = jax.device_get({"pre": pre, "alphas": pre_slopes})  # what the certificate's domains share
    n_relu, k = sum(int(l.shape[0]) for l, _ in pre), int(owner.max()) + 1
    member = jnp.asarray(owner[:, None] == np.arange(k)[None])
    C, d = jnp.asarray(rows, jnp.float32), jnp.asarray(rhs, jnp.float32)
    clauses = tuple((C[owner == c], d[owner == c]) for c in range(k))
    signs = np.zeros((1, n_relu), np.int8)
    host_weights, host_biases = jax.device_get((list(weights), list(biases)))  # for the linear programs
    certificate, bounded, exhausted = [], 0, False
    while len(signs):
        if out_of_time(bounded):
            return {"status": "unknown", "domains": bounded, "open": len(signs), "exhausted": exhausted}
        n = min(batch, len(signs))
        pad = np.minimum(np.arange(batch), n - 1)
        out = jax.device_get(bound_domains(weights, biases, clip_lo, clip_hi, C, d, member, clauses, pre, lo, hi,
                                           jnp.asarray(signs[pad]), steps=steps, refine=refine))
        b, choice, can, alphas, betas, xs, ms, phases = (np.asarray(v)[:n] for v in out)
        splittable = can[:, 0]
        bounded += n
        for i in np.flatnonzero(ms >= 0):
            ok, y = confirm(xs[i])
            if ok:
                return {"status": "unsafe", "domains": bounded, "x": np.asarray(xs[i]), "y": y}
        closed = np.all([np.any(b[:, owner == c] > 0, axis=1) for c in range(k)], axis=0)
        for i in np.flatnonzero(closed):
            slopes = None
            if keep_slopes:
                best = np.array([int(np.flatnonzero(owner == c)[np.argmax(b[i, owner == c])]) for c in range(k)])
                on = np.flatnonzero(signs[i])  # β is zero off the split units: kept sparse
                slopes = {"rows": best, "alphas": alphas[i][best], "betas": (on, betas[i][best][:, on])}
            certificate.append((signs[i].copy(), b[i], slopes))
        for i in np.flatnonzero(~closed & ~splittable):  # every phase fixed: the network is affine there, an LP decides
            lp = exact_domain(host_weights, host_biases, clip_lo, clip_hi, np.asarray(lo), np.asarray(hi), phases[i], rows,
                              rhs, owner)
            if lp is None:  # every clause infeasible on the domain
                certificate.append((signs[i].copy(), b[i], {"lp": phases[i].copy()} if keep_slopes else None))
                closed[i] = True
                continue
            ok, y = confirm(lp)
            if ok:
                return {"status": "unsafe", "domains": bounded, "x": lp, "y": y}
            exhausted = True  # the LP's point misses in float32 by a rounding: left undecided
        grow = np.flatnonzero(~closed & splittable)
        # split each open domain on its best units, as many as keep the next batch within one call
        depth = 1 if not len(grow) else int(np.clip(np.log2(max(batch - (len(signs) - n), 1) / len(grow)), 1, MULTI_SPLIT))
        signs = np.concatenate([signs[n:], *(children(signs[i], choice[i][can[i]][:depth]) for i in grow)])
        if bar is not None:
            bar.update(bounded, f"domains bounded, {len(certificate)} closed, {len(signs)} open")
    if exhausted:  # a domain with every unit fixed stayed open: never call that safe
        return {"status": "unknown", "domains": bounded, "open": 0, "exhausted": True}
    return {"status": "safe", "domains": bounded, "certificate": certificate, "box": box}
