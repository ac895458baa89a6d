"""Slow, obviously-correct numpy references used as test oracles (float64, explicit loops)."""

from __future__ import annotations

import numpy as np


def _same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def conv2d(x, w, b, stride):
    n, h, wd, ci = x.shape
    kh, kw, _, co = w.shape
    (pt, pb), (pl, pr) = _same_pads(h, kh, stride), _same_pads(wd, kw, stride)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh, ow = -(-h // stride), -(-wd // stride)
    y = np.zeros((n, oh, ow, co))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            y[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return y + (b if b is not None else 0.0)


def pool(x, k, reducer):
    n, h, w, c = x.shape
    y = np.zeros((n, h // k, w // k, c))
    for i in range(h // k):
        for j in range(w // k):
            y[:, i, j, :] = reducer(x[:, i * k : (i + 1) * k, j * k : (j + 1) * k, :], axis=(1, 2))
    return y


def op(node, p, xs):
    a = dict(node.attrs)
    x = xs[0]
    if node.op == "dense":
        return x @ p["kernel"] + p.get("bias", 0.0)
    if node.op == "conv2d":
        return conv2d(x, p["kernel"], p.get("bias"), a.get("strides", (1, 1))[0])
    if node.op == "maxpool":
        return pool(x, a["window"][0], np.max)
    if node.op == "avgpool":
        return pool(x, a["window"][0], np.mean)
    if node.op == "global_avgpool":
        return x.mean(axis=(1, 2))
    if node.op == "flatten":
        return x.reshape(x.shape[0], -1)
    if node.op == "batchnorm":
        return (x - p["mean"]) / np.sqrt(p["var"] + a.get("eps", 1e-5)) * p["scale"] + p["bias"]
    if node.op == "standardize":
        return (x - p["mean"]) / np.sqrt(p["var"])
    if node.op == "denormalize":
        return x * np.sqrt(p["var"]) + p["mean"]
    if node.op == "clip":
        return np.clip(x, a["min"], a["max"])
    if node.op == "relu":
        return np.maximum(x, 0)
    if node.op == "leaky_relu":
        return np.where(x > 0, x, a.get("alpha", 0.01) * x)
    if node.op == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if node.op == "tanh":
        return np.tanh(x)
    if node.op == "softmax":
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    if node.op == "add":
        return xs[0] + (xs[1] if len(xs) > 1 else p["value"])
    if node.op == "gelu":
        return gelu(x, a.get("approximate", "none") == "tanh")
    if node.op == "layernorm":
        return layernorm(x, p["scale"], p["bias"], a.get("eps", 1e-5))
    if node.op == "reshape":
        return x.reshape(x.shape[0], *a["shape"])
    if node.op == "transpose":
        return np.transpose(x, (0, *(1 + i for i in a["perm"])))
    if node.op == "heads":
        return np.transpose(x, (0, 2, 3, 1))
    if node.op == "matmul":
        b = np.swapaxes(xs[1], -1, -2) if a.get("transpose_b") else xs[1]
        return np.matmul(x, b) * a.get("scale", 1.0)
    if node.op == "causal_mask":
        t = x.shape[-1]
        return np.where(np.tril(np.ones((t, t), bool)), x, -1e30)
    if node.op == "prepend":
        return np.concatenate([np.broadcast_to(p["token"], (x.shape[0], *p["token"].shape)), x], axis=1)
    if node.op == "take":
        return np.take(x, a["index"], axis=1 + a.get("axis", 0))
    if node.op == "embed":
        return p["table"][x.astype(int)]
    raise NotImplementedError(node.op)


def gelu(x, tanh=False):
    if tanh:
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def layernorm(x, scale, bias, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def transformer(params, h, depth, heads, causal, tanh_gelu):
    """Pre-norm transformer blocks written out head by head and token by token, from the weights
    (not the graph): ``h`` [n, tokens, dim] → the residual stream after the last block."""
    P = {k: {n: np.asarray(v, np.float64) for n, v in p.items()} for k, p in params.items()}
    n, t, d = h.shape
    dh = d // heads
    for i in range(1, depth + 1):
        b = lambda name: P[f"blk{i}.{name}"]  # noqa: E731
        x = layernorm(h, b("ln1")["scale"], b("ln1")["bias"])
        q, k, v = (x @ b(w)["kernel"] + b(w)["bias"] for w in ("q", "k", "v"))
        z = np.zeros_like(h)
        for e in range(n):
            for hd in range(heads):
                cols = slice(hd * dh, (hd + 1) * dh)
                for qi in range(t):
                    keys = range(qi + 1) if causal else range(t)
                    logits = np.array([q[e, qi, cols] @ k[e, kj, cols] / np.sqrt(dh) for kj in keys])
                    w = np.exp(logits - logits.max())
                    w /= w.sum()
                    z[e, qi, cols] = sum(wj * v[e, kj, cols] for wj, kj in zip(w, keys))
        h = h + z @ b("o")["kernel"] + b("o")["bias"]
        x = layernorm(h, b("ln2")["scale"], b("ln2")["bias"])
        f = gelu(x @ b("fc.pre")["kernel"] + b("fc.pre")["bias"], tanh_gelu)
        h = h + f @ b("proj")["kernel"] + b("proj")["bias"]
    return h


def vit_logits(params, x, patch, depth, heads):
    """A ViT's logits from its weights: patches cut out one by one, class token first."""
    P = {k: {n: np.asarray(v, np.float64) for n, v in p.items()} for k, p in params.items()}
    x = np.asarray(x, np.float64)
    n, hgt, wid, c = x.shape
    kern = P["patches"]["kernel"].reshape(-1, P["patches"]["kernel"].shape[-1])
    toks = [x[:, i:i + patch, j:j + patch, :].reshape(n, -1) @ kern + P["patches"]["bias"]
            for i in range(0, hgt, patch) for j in range(0, wid, patch)]
    h = np.concatenate([np.broadcast_to(P["tokens"]["token"], (n, 1, kern.shape[1])), np.stack(toks, 1)], 1)
    h = transformer(params, h + P["embed"]["value"], depth, heads, False, False)
    cls = layernorm(h[:, 0], P["ln"]["scale"], P["ln"]["bias"])
    return cls @ P["logits"]["kernel"] + P["logits"]["bias"]


def gpt_logits(params, ids, depth, heads):
    """A GPT classifier's logits from its weights: causal attention, the last token's head."""
    P = {k: {n: np.asarray(v, np.float64) for n, v in p.items()} for k, p in params.items()}
    ids = np.asarray(ids).astype(int)
    h = P["wte"]["table"][ids] + P["embed"]["value"]
    h = transformer(params, h, depth, heads, True, True)
    last = layernorm(h[:, -1], P["ln"]["scale"], P["ln"]["bias"])
    return last @ P["logits"]["kernel"] + P["logits"]["bias"]


def forward(graph, params, x, site=None, setter=None):
    """Plain forward pass; ``setter(h) -> h`` rewrites ``site``'s value (the intervention)."""
    params = {k: {n: np.asarray(v, np.float64) for n, v in p.items()} for k, p in params.items()}
    env = {"input": np.asarray(x, np.float64)}
    if site == "input":
        env["input"] = setter(env["input"].copy())
    for node in graph.nodes:
        env[node.name] = op(node, params.get(node.name, {}), [env[i] for i in node.inputs])
        if node.name == site:
            env[node.name] = setter(env[node.name].copy())
    return env


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ace_curve(graph, params, x, site, effect_fn, num_values=16, per_channel=False):
    """Loop over units and values: returns (alphas [U, V], curve [U, V], baseline)."""
    h = forward(graph, params, x)[site]
    hv = h.reshape(-1, h.shape[-1]) if per_channel else h.reshape(h.shape[0], -1)
    lo, hi = hv.min(0), hv.max(0)
    alphas = np.zeros((hv.shape[1], num_values))
    curve = np.zeros_like(alphas)
    for j in range(hv.shape[1]):
        for v in range(num_values):
            a = lo[j] + (hi[j] - lo[j]) * v / (num_values - 1)
            alphas[j, v] = a

            def setter(hh, j=j, a=a):
                if per_channel:
                    hh[..., j] = a
                else:
                    flat = hh.reshape(hh.shape[0], -1)
                    flat[:, j] = a
                    hh = flat.reshape(hh.shape)
                return hh

            curve[j, v] = effect_fn(lambda xx: forward(graph, params, xx, site, setter)[graph.output]).mean()
    baseline = effect_fn(lambda xx: forward(graph, params, xx)[graph.output]).mean()
    return alphas, curve, baseline


def fairness_effect(x, column, values, target=1):
    """CARE's fairness effect as a plain loop over sensitive values."""

    def effect(f):
        y0 = softmax(f(x))[:, target]
        best = np.zeros(len(x))
        for v in values:
            xc = np.array(x, np.float64)
            xc[:, column] = v
            best = np.maximum(best, np.abs(softmax(f(xc))[:, target] - y0))
        return best

    return effect


def back_substitute(weights, biases, k, lam, const, pre, lo, hi, alphas=None, betas=None, signs=None):
    """Lower bound of lam·z_k + const over the box (float64), ReLUs before layer k relaxed with the
    bounds ``pre``: chord above, the line of slope ``alphas`` below (CROWN's 0/1 when None), and the
    split constraints s·z ≥ 0 added with multipliers ``betas`` (-β·s·z)."""
    for i in range(k, -1, -1):
        const = const + lam @ biases[i]
        lam = lam @ weights[i]
        if i == 0:
            break
        l, u = pre[i - 1]
        unst = (l < 0) & (u > 0)
        up = np.where(unst, u / np.where(unst, u - l, 1.0), (l >= 0).astype(float))
        low = (u > -l).astype(float) if alphas is None else np.asarray(alphas[i - 1], np.float64)
        assert np.all((low >= 0) & (low <= 1))  # only slopes in [0, 1] lie below a ReLU
        low = np.where(unst, low, (l >= 0).astype(float))
        const = const + np.sum(np.where((lam < 0) & unst, -lam * up * l, 0.0), axis=-1)
        lam = np.where(lam < 0, lam * up, lam * low)
        if betas is not None:
            assert np.all(np.asarray(betas[i - 1]) >= 0)  # only β ≥ 0 keeps the Lagrangian below
            lam = lam - np.asarray(betas[i - 1], np.float64) * np.asarray(signs[i - 1], np.float64)
    c, r = (hi + lo) / 2, (hi - lo) / 2
    return lam @ c - np.abs(lam) @ r + const


def crown_lower(weights, biases, lo, hi, C, d):
    """Independent float64 CROWN: lower bounds of C·y − d over the box, for y = W_L relu(... W_1 x ...).
    Intermediate bounds by the same back-substitution; ReLU relaxed by 0/identity below, chord above."""
    weights = [np.asarray(w, np.float64) for w in weights]
    biases = [np.asarray(b, np.float64) for b in biases]
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)

    def back(k, lam, const, pre):
        return back_substitute(weights, biases, k, lam, const, pre, lo, hi)

    pre = []
    for k in range(len(weights) - 1):
        eye = np.eye(weights[k].shape[0])
        a_lo, a_hi = (lo, hi) if k == 0 else (np.maximum(pre[-1][0], 0), np.maximum(pre[-1][1], 0))
        mid, rad = weights[k] @ ((a_hi + a_lo) / 2) + biases[k], np.abs(weights[k]) @ ((a_hi - a_lo) / 2)
        pre.append((np.maximum(back(k, eye, np.zeros(len(eye)), pre), mid - rad),
                    np.minimum(-back(k, -eye, np.zeros(len(eye)), pre), mid + rad)))  # intersected with intervals
    C, d = np.asarray(C, np.float64), np.asarray(d, np.float64)
    a_lo, a_hi = np.maximum(pre[-1][0], 0), np.maximum(pre[-1][1], 0)
    mid, rad = weights[-1] @ ((a_hi + a_lo) / 2) + biases[-1], np.abs(weights[-1]) @ ((a_hi - a_lo) / 2)
    ibp = np.where(C >= 0, C * (mid - rad), C * (mid + rad)).sum(-1) - d
    return np.maximum(back(len(weights) - 1, C, -d, pre), ibp)


def milp_max(weights, biases, lo, hi, c, phases=None):
    """The exact maximum of c·y over the box for a ReLU network (big-M MILP, scipy's HiGHS).
    ``phases``: ``{(layer, unit): 1 | 0}`` units held active (pre-activation ≥ 0) or inactive (≤ 0) —
    a ReLU-split domain; ``None`` from ``res`` (the status) when the domain is empty."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    # variables: x, then per hidden layer (z, a, s): pre-activation, activation, binary phase
    sizes = [w.shape[0] for w in weights[:-1]]
    n_x = len(lo)
    idx, off = {}, n_x
    for k, n in enumerate(sizes):
        idx[k] = (off, off + n, off + 2 * n)
        off += 3 * n
    nv = off
    lb, ub = np.full(nv, -np.inf), np.full(nv, np.inf)
    lb[:n_x], ub[:n_x] = lo, hi
    integrality = np.zeros(nv)
    rows, rlo, rhi = [], [], []
    # interval bounds for big-M
    l_in, u_in = np.asarray(lo, float), np.asarray(hi, float)
    prev = list(range(n_x))
    for k, n in enumerate(sizes):
        w, b = weights[k], biases[k]
        c_, r_ = w @ ((l_in + u_in) / 2) + b, np.abs(w) @ ((u_in - l_in) / 2)
        L, U = c_ - r_, c_ + r_
        z0, a0, s0 = idx[k]
        for j in range(n):
            row = np.zeros(nv); row[z0 + j] = 1; row[prev] = -w[j]   # z = W a_prev + b
            rows.append(row); rlo.append(b[j]); rhi.append(b[j])
            # a >= z, a >= 0, a <= z - L(1-s), a <= U s
            row = np.zeros(nv); row[a0 + j] = 1; row[z0 + j] = -1; rows.append(row); rlo.append(0); rhi.append(np.inf)
            row = np.zeros(nv); row[a0 + j] = 1; row[z0 + j] = -1; row[s0 + j] = -L[j]; rows.append(row); rlo.append(-np.inf); rhi.append(-L[j])
            row = np.zeros(nv); row[a0 + j] = 1; row[s0 + j] = -U[j]; rows.append(row); rlo.append(-np.inf); rhi.append(0)
            lb[a0 + j], lb[s0 + j], ub[s0 + j] = 0, 0, 1
            integrality[s0 + j] = 1
            if phases and (k, j) in phases:  # held: the binary fixed, and z's sign with it
                lb[s0 + j] = ub[s0 + j] = phases[(k, j)]
                if phases[(k, j)]:
                    lb[z0 + j] = 0.0
                else:
                    ub[z0 + j] = 0.0
        prev = list(range(a0, a0 + n))
        l_in, u_in = np.maximum(L, 0), np.maximum(U, 0)
    obj = np.zeros(nv)
    obj[prev] = -(np.asarray(c) @ weights[-1])
    res = milp(obj, constraints=LinearConstraint(np.array(rows), rlo, rhi), integrality=integrality,
               bounds=Bounds(lb, ub))
    assert res.status == 0, res.message
    return float(-res.fun + np.asarray(c) @ biases[-1]), res.x[:n_x]


def _clamped(pre, signs):
    return [(np.where(s > 0, np.maximum(l, 0), l), np.where(s < 0, np.minimum(u, 0), u)) for (l, u), s in zip(pre, signs)]


def beta_crown_lower(weights, biases, lo, hi, C, d, signs, alphas, betas, box_alphas=None):
    """Independent float64 β-CROWN bound of C·y − d on a ReLU-split domain (``signs`` per layer in
    {-1, 0, 1}) for given slopes and multipliers (``[rows, n_i]`` per layer): the box's intermediate
    bounds — CROWN's, or with ``box_alphas`` (per layer k ≥ 1, ``[2·n_k, n_j]`` per earlier layer j:
    lower rows then negated upper ones) α-CROWN's with those slopes — each layer's recomputed through
    the earlier layers' clamped bounds and intersected with them, clamped by the signs; then the final
    back-substitution."""
    weights = [np.asarray(w, np.float64) for w in weights]
    biases = [np.asarray(b, np.float64) for b in biases]
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    box, dom = [], []
    for k in range(len(weights) - 1):
        eye = np.eye(weights[k].shape[0])
        zero = np.zeros(len(eye))
        for pre, out in ((box, box), (dom, None)):  # the box's bounds, then the domain's through its clamped ones
            if out is not None and box_alphas is not None and k:  # α-CROWN's box bounds, each row with its slopes
                n = len(eye)
                both = np.array([back_substitute(weights, biases, k, row, 0.0, pre, lo, hi,
                                            [np.asarray(a[r], np.float64) for a in box_alphas[k]])
                                 for r, row in enumerate(np.concatenate([eye, -eye]))])
                low, upp = both[:n], -both[n:]
            else:
                low, upp = back_substitute(weights, biases, k, eye, zero, pre, lo, hi), -back_substitute(weights, biases, k, -eye, zero, pre, lo, hi)
            if out is not None:
                if k:
                    a_lo, a_hi = np.maximum(box[-1][0], 0), np.maximum(box[-1][1], 0)
                    mid, rad = weights[k] @ ((a_hi + a_lo) / 2) + biases[k], np.abs(weights[k]) @ ((a_hi - a_lo) / 2)
                    low, upp = np.maximum(low, mid - rad), np.minimum(upp, mid + rad)
                box.append((low, upp))
            else:
                l0, u0 = _clamped([box[k]], [signs[k]])[0]
                dom += _clamped([(np.maximum(l0, low), np.minimum(u0, upp))], [signs[k]])
    return np.array([back_substitute(weights, biases, len(weights) - 1, c, -dd, dom, lo, hi,
                                [a[r] for a in alphas], [b[r] for b in betas], signs)
                     for r, (c, dd) in enumerate(zip(np.asarray(C, np.float64), np.asarray(d, np.float64)))])
