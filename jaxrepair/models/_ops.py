"""The operator set of the graph interpreter.

Every operator is a pure function ``op(params, inputs, attrs) -> array`` where ``params`` is the
node's dict of arrays (empty for parameter-free ops), ``inputs`` the list of input arrays (each with
a leading batch axis) and ``attrs`` the node's static attributes as a dict. Layouts follow Flax:
images are NHWC, convolution kernels HWIO, dense kernels ``[in, out]``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

Op = Callable[[dict, list, dict], jax.Array]


def _dense(p, xs, a):
    y = xs[0] @ p["kernel"]
    return y + p["bias"] if "bias" in p else y


def _pads(padding, n=2):
    if isinstance(padding, str):
        return padding
    return tuple(tuple(int(v) for v in pair) for pair in padding)[:n]


def _conv2d(p, xs, a):
    y = lax.conv_general_dilated(
        xs[0],
        p["kernel"],
        window_strides=tuple(a.get("strides", (1, 1))),
        padding=_pads(a.get("padding", "SAME")),
        rhs_dilation=tuple(a.get("dilation", (1, 1))),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=int(a.get("groups", 1)),
    )
    return y + p["bias"] if "bias" in p else y


def _pool_args(a):
    window = (1, *a["window"], 1)
    strides = (1, *a.get("strides", a["window"]), 1)
    padding = a.get("padding", "VALID")
    if not isinstance(padding, str):
        padding = ((0, 0), *_pads(padding), (0, 0))
    return window, strides, padding


def _maxpool(p, xs, a):
    window, strides, padding = _pool_args(a)
    dilation = (1, *a.get("dilation", (1, 1)), 1)
    x = xs[0]
    (_, wh, ww, _), (n, h, w, c) = window, x.shape
    if (window == strides and padding == "VALID" and dilation == (1, 1, 1, 1) and h % wh == 0 and w % ww == 0):
        # Tiling windows: a reshape and a max, whose gradient XLA's CPU backend runs faster than
        # reduce_window's select-and-scatter. Same values; where a window holds several equal maxima
        # the gradient is shared among them instead of going to the first.
        return jnp.max(x.reshape(n, h // wh, wh, w // ww, ww, c), axis=(2, 4))
    return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, padding, window_dilation=dilation)


def _avgpool(p, xs, a):
    window, strides, padding = _pool_args(a)
    total = lax.reduce_window(xs[0], 0.0, lax.add, window, strides, padding)
    if a.get("count_include_pad", False) or padding == "VALID":
        return total / float(a["window"][0] * a["window"][1])
    ones = jnp.ones((1, *xs[0].shape[1:3], 1), xs[0].dtype)
    counts = lax.reduce_window(ones, 0.0, lax.add, window, strides, padding)
    return total / counts


def _global_avgpool(p, xs, a):
    return jnp.mean(xs[0], axis=(1, 2), keepdims=bool(a.get("keepdims", False)))


def _reduce_mean(p, xs, a):
    # attrs["axes"]: axes of the full tensor (never 0, the batch axis).
    return jnp.mean(xs[0], axis=tuple(int(v) for v in a["axes"]), keepdims=bool(a.get("keepdims", True)))


def _flatten(p, xs, a):
    x = xs[0]
    return x.reshape(x.shape[0], -1)


def _batchnorm(p, xs, a):
    inv = lax.rsqrt(p["var"] + a.get("eps", 1e-5)) * p["scale"]
    return (xs[0] - p["mean"]) * inv + p["bias"]


def _standardize(p, xs, a):
    return (xs[0] - p["mean"]) * lax.rsqrt(p["var"] + a.get("eps", 1e-12))


def _denormalize(p, xs, a):
    return xs[0] * jnp.sqrt(p["var"]) + p["mean"]


def _softmax(p, xs, a):
    return jax.nn.softmax(xs[0], axis=a.get("axis", -1))


def _log_softmax(p, xs, a):
    return jax.nn.log_softmax(xs[0], axis=a.get("axis", -1))


def _concat(p, xs, a):
    return jnp.concatenate(xs, axis=a.get("axis", -1))


def _reshape(p, xs, a):
    x = xs[0]
    return x.reshape(x.shape[0], *a["shape"])


def _transpose(p, xs, a):
    # attrs["perm"] permutes the per-example axes (batch axis stays first).
    return jnp.transpose(xs[0], (0, *(1 + int(i) for i in a["perm"])))


def _pad(p, xs, a):
    # attrs["pads"]: ((lo, hi), ...) for each per-example axis.
    mode = a.get("mode", "constant")
    if mode == "constant":
        return jnp.pad(xs[0], ((0, 0), *a["pads"]), constant_values=a.get("value", 0.0))
    return jnp.pad(xs[0], ((0, 0), *a["pads"]), mode=mode)


def _layernorm(p, xs, a):
    # LayerNorm over the last axis (Ba et al. 2016; ONNX LayerNormalization with axis=-1).
    x = xs[0]
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * lax.rsqrt(var + a.get("eps", 1e-5)) * p["scale"]
    return y + p["bias"] if "bias" in p else y


def _rmsnorm(p, xs, a):
    # RMSNorm over the last axis (Zhang & Sennrich 2019): no centring, no bias.
    x = xs[0]
    return x * lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + a.get("eps", 1e-6)) * p["scale"]


def _matmul(p, xs, a):
    # A product of two activations over their last two axes (attention's q·kᵀ and weights·v);
    # ``transpose_b`` transposes the second operand's last two axes, ``scale`` multiplies the result.
    b = jnp.swapaxes(xs[1], -1, -2) if a.get("transpose_b") else xs[1]
    y = jnp.matmul(xs[0], b)
    return y * a["scale"] if "scale" in a else y


def _embed(p, xs, a):
    # Token ids (any numeric dtype; the batch is float like every other input) → rows of the table.
    ids = xs[0].astype(jnp.int32)
    return jnp.take(p["table"], ids, axis=0, mode="clip")


def _causal_mask(p, xs, a):
    # Attention scores [..., queries, keys]: key positions after the query are set to the dtype's
    # lowest value, so softmax gives them zero weight (as GPT-2's exported graphs do).
    x = xs[0]
    q, k = x.shape[-2:]
    keep = jnp.arange(k)[None, :] <= jnp.arange(q)[:, None] + (k - q)
    return jnp.where(keep, x, jnp.finfo(x.dtype).min)


def _key_mask(p, xs, a):
    # Attention scores [..., queries, keys] and the token ids [tokens] of the same examples: keys that
    # hold the padding id ``pad`` get the dtype's lowest value (a padding mask).
    x, ids = xs
    pad = ids.astype(jnp.int32) == int(a["pad"])  # [batch, keys]
    pad = pad.reshape(pad.shape[:1] + (1,) * (x.ndim - 2) + pad.shape[1:])
    return jnp.where(pad, jnp.finfo(x.dtype).min, x)


def _prepend(p, xs, a):
    # A learned token (``p["token"]``, [1, width]) put before the sequence ([batch, tokens, width]).
    x = xs[0]
    token = jnp.broadcast_to(p["token"].astype(x.dtype), (x.shape[0], *p["token"].shape))
    return jnp.concatenate([token, x], axis=1)


def _slice(p, xs, a):
    # ``start:stop`` along a per-example axis (a part of a fused projection: q, k, v of c_attn).
    return lax.slice_in_dim(xs[0], int(a["start"]), int(a["stop"]), axis=1 + int(a["axis"]))


def _take(p, xs, a):
    # One index along a per-example axis (the class token, the last token), dropping that axis.
    return jnp.take(xs[0], int(a["index"]), axis=1 + int(a.get("axis", 0)))


def _constant_operand(p, xs):
    return xs[1] if len(xs) > 1 else p["value"]


#: Unary operators that act element by element and carry no parameters. ACE uses this set to
#: push a single-unit intervention through an activation as a scalar (see ``causal._ace``).
ELEMENTWISE: dict[str, Callable[[jax.Array, dict], jax.Array]] = {
    "relu": lambda x, a: jax.nn.relu(x),
    "leaky_relu": lambda x, a: jax.nn.leaky_relu(x, a.get("alpha", 0.01)),
    "sigmoid": lambda x, a: jax.nn.sigmoid(x),
    "tanh": lambda x, a: jnp.tanh(x),
    "identity": lambda x, a: x,
    "clip": lambda x, a: jnp.clip(x, None if a.get("min") is None else jnp.asarray(a["min"], x.dtype),
                                  None if a.get("max") is None else jnp.asarray(a["max"], x.dtype)),
    "elu": lambda x, a: jax.nn.elu(x, a.get("alpha", 1.0)),
    "selu": lambda x, a: a.get("gamma", 1.0507009873554805) * jnp.where(x > 0, x, a.get("alpha", 1.6732632423543772) * jnp.expm1(x)),
    "softplus": lambda x, a: jax.nn.softplus(x),
    "gelu": lambda x, a: jax.nn.gelu(x, approximate=a.get("approximate", "none") == "tanh"),
    "hard_sigmoid": lambda x, a: jnp.clip(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0.0, 1.0),
    "exp": lambda x, a: jnp.exp(x),
    "abs": lambda x, a: jnp.abs(x),
    "neg": lambda x, a: -x,
    "sqrt": lambda x, a: jnp.sqrt(x),
    "erf": lambda x, a: jax.lax.erf(x),
    "pow": lambda x, a: x ** a["exponent"],
    # torch's guard after an attention softmax (a fully masked row gives NaN): NaN → ``value``
    "nan_to_num": lambda x, a: jnp.where(jnp.isnan(x), jnp.asarray(a.get("value", 0.0), x.dtype), x),
}

OPS: dict[str, Op] = {
    "dense": _dense,
    "conv2d": _conv2d,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "global_avgpool": _global_avgpool,
    "flatten": _flatten,
    "reduce_mean": _reduce_mean,
    "batchnorm": _batchnorm,
    "standardize": _standardize,
    "denormalize": _denormalize,
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "add": lambda p, xs, a: (xs[0] + _constant_operand(p, xs)),
    # ``reverse``: the constant is the left operand (``c - x``, ``c / x``).
    "sub": lambda p, xs, a: (_constant_operand(p, xs) - xs[0]) if a.get("reverse") else (xs[0] - _constant_operand(p, xs)),
    "mul": lambda p, xs, a: (xs[0] * _constant_operand(p, xs)),
    "div": lambda p, xs, a: (_constant_operand(p, xs) / xs[0]) if a.get("reverse") else (xs[0] / _constant_operand(p, xs)),
    "concat": _concat,
    "reshape": _reshape,
    "transpose": _transpose,
    "pad": _pad,
    "layernorm": _layernorm,
    "rmsnorm": _rmsnorm,
    "matmul": _matmul,
    "embed": _embed,
    "causal_mask": _causal_mask,
    "key_mask": _key_mask,
    "prepend": _prepend,
    "take": _take,
    "slice": _slice,
    # Attention heads as a site: each head's output [heads, tokens, head_dim] laid out as
    # [tokens, head_dim, heads], so that a head is a channel (the last axis) and a per-channel
    # intervention acts on one whole head.
    "heads": lambda p, xs, a: jnp.transpose(xs[0], (0, 2, 3, 1)),
    **{name: (lambda f: lambda p, xs, a: f(xs[0], a))(f) for name, f in ELEMENTWISE.items()},
}

#: Parameter names held as batch statistics (not trained, not searched).
STAT_NAMES = frozenset({"mean", "var"})

ACTIVATIONS = frozenset({"relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax", "elu", "selu", "softplus",
                         "gelu", "hard_sigmoid"})


def supported_ops() -> list[str]:
    return sorted(OPS)


def run_op(op: str, params: dict, inputs: list, attrs: dict) -> Any:
    return OPS[op](params, inputs, attrs)
