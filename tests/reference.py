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
        return xs[0] + xs[1]
    raise NotImplementedError(node.op)


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
