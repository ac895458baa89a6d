""":class:`~jaxrepair.models.Network` → ONNX.

Each jaxrepair node becomes one or a few ONNX nodes. Rank-4 feature maps are NHWC in jaxrepair and
NCHW in ONNX's Conv/Pool/BatchNormalization, so a tensor may exist in two *forms*: ``ours``
(jaxrepair's layout) and ``nchw``; a Transpose makes the missing form when a consumer needs it.
Element-wise operators keep the form they get. A final pass removes Transpose pairs that cancel,
so a model imported from ONNX exports without the transposes the import added.

The exported model takes the same input as the jaxrepair model and gives the same output; the
tests check it with onnx's reference evaluator.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxrepair.models import INPUT, Network, site_shapes, write_atomic

DEFAULT_OPSET = 17
_TO_NCHW = [0, 3, 1, 2]
_TO_NHWC = [0, 2, 3, 1]


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("exporting to ONNX needs the 'onnx' package: pip install 'jaxrepair[onnx]'") from None
    return onnx


def _explicit_pads(padding, in_hw, k, s, d):
    """jaxrepair padding ("SAME", "VALID" or pairs) → ONNX pads ``[top, left, bottom, right]``."""
    if padding == "VALID":
        return [0, 0, 0, 0]
    if padding == "SAME":
        pairs = []
        for i in range(2):
            out = -(-in_hw[i] // s[i])
            total = max(0, (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - in_hw[i])
            pairs.append((total // 2, total - total // 2))
    else:
        pairs = [tuple(int(v) for v in p) for p in padding]
    return [pairs[0][0], pairs[1][0], pairs[0][1], pairs[1][1]]


class _Exporter:
    def __init__(self, model: Network, opset: int):
        onnx = _onnx()
        self.onnx, self.helper = onnx, onnx.helper
        self.graph = model.graph
        self.params = {k: {n: np.asarray(v, np.float32) for n, v in p.items()} for k, p in model.params().items()}
        self.shapes = site_shapes(model.graph, model.params())
        self.opset = opset
        self.nodes, self.inits = [], []
        self.forms: dict[str, dict[str, str]] = {}
        self.used: set[str] = set()
        onnx_meta = model.meta.get("onnx", {}) if isinstance(model.meta, dict) else {}
        self.input_name = onnx_meta.get("input", "input")
        self.forms[INPUT] = {"ours": self.input_name}
        self.used.add(self.input_name)

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name = f"{base}_{i}"
            i += 1
        self.used.add(name)
        return name

    def const(self, base: str, value) -> str:
        name = self.fresh(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs, output: str, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output

    def get(self, site: str, form: str) -> str:
        forms = self.forms[site]
        if form in forms:
            return forms[form]
        if len(self.shapes[site]) != 3:
            return forms["ours"]  # only rank-4 tensors have two forms
        src = "nchw" if form == "ours" else "ours"
        perm = _TO_NHWC if form == "ours" else _TO_NCHW
        out = self.fresh(f"{site}.{'nhwc' if form == 'ours' else 'nchw'}")
        forms[form] = self.node("Transpose", [forms[src]], out, perm=perm)
        return out

    def any_form(self, site: str) -> tuple[str, str]:
        forms = self.forms[site]
        return ("ours", forms["ours"]) if "ours" in forms else ("nchw", forms["nchw"])

    def export(self):
        for n in self.graph.nodes:
            getattr(self, "op_" + n.op)(n, n.attr, self.params.get(n.name, {}))
        out = self.get(self.graph.output, "ours")
        batch = "N"
        x = self.helper.make_tensor_value_info(self.input_name, self.onnx.TensorProto.FLOAT, [batch, *self.shapes[INPUT]])
        y = self.helper.make_tensor_value_info(out, self.onnx.TensorProto.FLOAT, [batch, *self.shapes[self.graph.output]])
        nodes = _cancel_transposes(self.nodes, out)
        used = {i for nd in nodes for i in nd.input}
        inits = [t for t in self.inits if t.name in used]
        g = self.helper.make_graph(nodes, "jaxrepair", [x], [y], inits)
        m = self.helper.make_model(g, opset_imports=[self.helper.make_opsetid("", self.opset)], producer_name="jaxrepair")
        m.ir_version = min(m.ir_version, 9)
        self.onnx.checker.check_model(m, full_check=True)
        return m

    # -------------------------------------------------------------- operators

    def _set(self, n, form: str, name: str):
        self.forms[n.name] = {form: name}

    def _elementwise(self, n, op, **attrs):
        form, x = self.any_form(n.inputs[0])
        self._set(n, form, self.node(op, [x], self.fresh(n.name), **attrs))

    def op_relu(self, n, a, p):
        self._elementwise(n, "Relu")

    def op_sigmoid(self, n, a, p):
        self._elementwise(n, "Sigmoid")

    def op_tanh(self, n, a, p):
        self._elementwise(n, "Tanh")

    def op_identity(self, n, a, p):
        self._elementwise(n, "Identity")

    def op_elu(self, n, a, p):
        self._elementwise(n, "Elu", alpha=float(a.get("alpha", 1.0)))

    def op_selu(self, n, a, p):
        self._elementwise(n, "Selu", alpha=float(a.get("alpha", 1.6732632423543772)), gamma=float(a.get("gamma", 1.0507009873554805)))

    def op_softplus(self, n, a, p):
        self._elementwise(n, "Softplus")

    def op_hard_sigmoid(self, n, a, p):
        self._elementwise(n, "HardSigmoid", alpha=float(a.get("alpha", 0.2)), beta=float(a.get("beta", 0.5)))

    def op_exp(self, n, a, p):
        self._elementwise(n, "Exp")

    def op_abs(self, n, a, p):
        self._elementwise(n, "Abs")

    def op_neg(self, n, a, p):
        self._elementwise(n, "Neg")

    def op_sqrt(self, n, a, p):
        self._elementwise(n, "Sqrt")

    def op_erf(self, n, a, p):
        self._elementwise(n, "Erf")

    def op_gelu(self, n, a, p):
        approx = a.get("approximate", "none")
        if self.opset >= 20:
            self._elementwise(n, "Gelu", approximate=approx)
            return
        form, x = self.any_form(n.inputs[0])  # decomposed before opset 20

        def c(name, v):
            return self.const(f"{n.name}.{name}", np.float32(v))

        if approx == "tanh":
            x3 = self.node("Mul", [self.node("Mul", [x, x], self.fresh(f"{n.name}.x2")), x], self.fresh(f"{n.name}.x3"))
            inner = self.node("Add", [x, self.node("Mul", [x3, c("k3", 0.044715)], self.fresh(f"{n.name}.cx3"))], self.fresh(f"{n.name}.in"))
            t = self.node("Tanh", [self.node("Mul", [inner, c("k", np.sqrt(2 / np.pi))], self.fresh(f"{n.name}.scaled"))], self.fresh(f"{n.name}.t"))
        else:
            t = self.node("Erf", [self.node("Div", [x, c("sqrt2", np.sqrt(2.0))], self.fresh(f"{n.name}.z"))], self.fresh(f"{n.name}.t"))
        one = self.node("Add", [t, c("one", 1.0)], self.fresh(f"{n.name}.1p"))
        half = self.node("Mul", [self.node("Mul", [x, one], self.fresh(f"{n.name}.xt")), c("half", 0.5)], self.fresh(n.name))
        self._set(n, form, half)

    def op_log_softmax(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        self._set(n, "ours", self.node("LogSoftmax", [x], self.fresh(n.name), axis=int(a.get("axis", -1))))

    def op_leaky_relu(self, n, a, p):
        self._elementwise(n, "LeakyRelu", alpha=float(a.get("alpha", 0.01)))

    def op_clip(self, n, a, p):
        lo, hi = a.get("min"), a.get("max")
        if all(v is None or np.ndim(v) == 0 for v in (lo, hi)):
            form, x = self.any_form(n.inputs[0])
            ins = [x, "" if lo is None else self.const(f"{n.name}.min", np.float32(lo)),
                   "" if hi is None else self.const(f"{n.name}.max", np.float32(hi))]
            while ins and ins[-1] == "":
                ins.pop()
            self._set(n, form, self.node("Clip", ins, self.fresh(n.name)))
            return
        x = self.get(n.inputs[0], "ours")  # per-feature bounds broadcast over the last axis
        if lo is not None:
            x = self.node("Max", [x, self.const(f"{n.name}.min", np.asarray(lo, np.float32))], self.fresh(f"{n.name}.lo"))
        if hi is not None:
            x = self.node("Min", [x, self.const(f"{n.name}.max", np.asarray(hi, np.float32))], self.fresh(n.name))
        self._set(n, "ours", x)

    def op_softmax(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        self._set(n, "ours", self.node("Softmax", [x], self.fresh(n.name), axis=int(a.get("axis", -1))))

    def op_dense(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        w = self.const(f"{n.name}.kernel", p["kernel"])
        if len(self.shapes[n.inputs[0]]) == 1:
            ins = [x, w] + ([self.const(f"{n.name}.bias", p["bias"])] if "bias" in p else [])
            self._set(n, "ours", self.node("Gemm", ins, self.fresh(n.name)))
            return
        y = self.node("MatMul", [x, w], self.fresh(f"{n.name}.matmul" if "bias" in p else n.name))
        if "bias" in p:
            y = self.node("Add", [y, self.const(f"{n.name}.bias", p["bias"])], self.fresh(n.name))
        self._set(n, "ours", y)

    def op_conv2d(self, n, a, p):
        x = self.get(n.inputs[0], "nchw")
        k = p["kernel"].shape[:2]
        s = tuple(a.get("strides", (1, 1)))
        d = tuple(a.get("dilation", (1, 1)))
        pads = _explicit_pads(a.get("padding", "SAME"), self.shapes[n.inputs[0]][:2], k, s, d)
        ins = [x, self.const(f"{n.name}.kernel", np.transpose(p["kernel"], (3, 2, 0, 1)))]
        if "bias" in p:
            ins.append(self.const(f"{n.name}.bias", p["bias"]))
        y = self.node("Conv", ins, self.fresh(n.name), kernel_shape=list(k), strides=list(s), dilations=list(d),
                      pads=pads, group=int(a.get("groups", 1)))
        self._set(n, "nchw", y)

    def _pool(self, n, a, op):
        x = self.get(n.inputs[0], "nchw")
        k = tuple(a["window"])
        s = tuple(a.get("strides", k))
        d = tuple(a.get("dilation", (1, 1)))
        padding = a.get("padding", "VALID")
        pads = _explicit_pads(padding, self.shapes[n.inputs[0]][:2], k, s, d)
        attrs = dict(kernel_shape=list(k), strides=list(s), pads=pads)
        if op == "AveragePool":
            attrs["count_include_pad"] = int(bool(a.get("count_include_pad", False)) or padding == "VALID")
        elif d != (1, 1):
            attrs["dilations"] = list(d)
        self._set(n, "nchw", self.node(op, [x], self.fresh(n.name), **attrs))

    def op_maxpool(self, n, a, p):
        self._pool(n, a, "MaxPool")

    def op_avgpool(self, n, a, p):
        self._pool(n, a, "AveragePool")

    def op_global_avgpool(self, n, a, p):
        x = self.get(n.inputs[0], "nchw")
        if a.get("keepdims"):
            self._set(n, "nchw", self.node("GlobalAveragePool", [x], self.fresh(n.name)))
        else:
            y = self.node("GlobalAveragePool", [x], self.fresh(f"{n.name}.pool"))
            self._set(n, "ours", self.node("Flatten", [y], self.fresh(n.name), axis=1))

    def reduce_mean(self, n, x, axes, keep: int, out: str) -> str:
        """ReduceMean over ``axes``: an input from opset 18, an attribute before."""
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.const(f"{n.name}.axes", np.asarray(axes, np.int64))], out, keepdims=keep)
        return self.node("ReduceMean", [x], out, axes=list(axes), keepdims=keep)

    def op_reduce_mean(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        axes, keep = [int(v) for v in a["axes"]], int(bool(a.get("keepdims", True)))
        self._set(n, "ours", self.reduce_mean(n, x, axes, keep, self.fresh(n.name)))

    def op_flatten(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        self._set(n, "ours", self.node("Flatten", [x], self.fresh(n.name), axis=1))

    def op_batchnorm(self, n, a, p):
        rank4 = len(self.shapes[n.inputs[0]]) == 3
        if len(self.shapes[n.inputs[0]]) not in (1, 3):
            raise ValueError(f"node {n.name!r}: batchnorm on a rank-{len(self.shapes[n.inputs[0]]) + 1} tensor has no ONNX form")
        x = self.get(n.inputs[0], "nchw" if rank4 else "ours")
        ins = [x] + [self.const(f"{n.name}.{k}", p[k]) for k in ("scale", "bias", "mean", "var")]
        y = self.node("BatchNormalization", ins, self.fresh(n.name), epsilon=float(a.get("eps", 1e-5)))
        self._set(n, "nchw" if rank4 else "ours", y)

    def op_standardize(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        y = self.node("Sub", [x, self.const(f"{n.name}.mean", p["mean"])], self.fresh(f"{n.name}.centred"))
        inv = (1.0 / np.sqrt(p["var"].astype(np.float64) + a.get("eps", 1e-12))).astype(np.float32)
        self._set(n, "ours", self.node("Mul", [y, self.const(f"{n.name}.inv_std", inv)], self.fresh(n.name)))

    def op_denormalize(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        y = self.node("Mul", [x, self.const(f"{n.name}.std", np.sqrt(p["var"]))], self.fresh(f"{n.name}.scaled"))
        self._set(n, "ours", self.node("Add", [y, self.const(f"{n.name}.mean", p["mean"])], self.fresh(n.name)))

    def _binary(self, n, a, p, op):
        if len(n.inputs) == 2:
            shared = [f for f in ("ours", "nchw") if all(f in self.forms[i] for i in n.inputs)]
            form = shared[0] if shared and self.shapes[n.inputs[0]] == self.shapes[n.inputs[1]] else "ours"
            self._set(n, form, self.node(op, [self.get(i, form) for i in n.inputs], self.fresh(n.name)))
            return
        else:
            x, c = self.get(n.inputs[0], "ours"), self.const(f"{n.name}.value", p["value"])
            ins = [c, x] if a.get("reverse") else [x, c]
        self._set(n, "ours", self.node(op, ins, self.fresh(n.name)))

    def op_add(self, n, a, p):
        self._binary(n, a, p, "Add")

    def op_sub(self, n, a, p):
        self._binary(n, a, p, "Sub")

    def op_mul(self, n, a, p):
        self._binary(n, a, p, "Mul")

    def op_div(self, n, a, p):
        self._binary(n, a, p, "Div")

    def op_concat(self, n, a, p):
        ins = [self.get(i, "ours") for i in n.inputs]
        self._set(n, "ours", self.node("Concat", ins, self.fresh(n.name), axis=int(a.get("axis", -1))))

    def op_reshape(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        shape = self.const(f"{n.name}.shape", np.asarray([0, *self.shapes[n.name]], np.int64))
        self._set(n, "ours", self.node("Reshape", [x, shape], self.fresh(n.name)))

    def op_transpose(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        perm = [0, *(1 + int(i) for i in a["perm"])]
        self._set(n, "ours", self.node("Transpose", [x], self.fresh(n.name), perm=perm))

    def op_pad(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        pairs = [(0, 0), *a["pads"]]
        pads = self.const(f"{n.name}.pads", np.asarray([v[0] for v in pairs] + [v[1] for v in pairs], np.int64))
        mode = a.get("mode", "constant")
        ins = [x, pads]
        if mode == "constant":
            ins.append(self.const(f"{n.name}.value", np.float32(a.get("value", 0.0))))
        self._set(n, "ours", self.node("Pad", ins, self.fresh(n.name), mode=mode))

    # -------------------------------------------------------------- transformer operators

    def _mean_last(self, n, x, tag):
        return self.reduce_mean(n, x, [-1], 1, self.fresh(f"{n.name}.{tag}"))

    def op_layernorm(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        eps = float(a.get("eps", 1e-5))
        scale = self.const(f"{n.name}.scale", p["scale"])
        bias = self.const(f"{n.name}.bias", p["bias"] if "bias" in p else np.zeros_like(p["scale"]))
        if self.opset >= 17:
            self._set(n, "ours", self.node("LayerNormalization", [x, scale, bias], self.fresh(n.name), axis=-1, epsilon=eps))
            return
        centred = self.node("Sub", [x, self._mean_last(n, x, "mean")], self.fresh(f"{n.name}.centred"))
        var = self._mean_last(n, self.node("Mul", [centred, centred], self.fresh(f"{n.name}.sq")), "var")
        std = self.node("Sqrt", [self.node("Add", [var, self.const(f"{n.name}.eps", np.float32(eps))], self.fresh(f"{n.name}.var_eps"))], self.fresh(f"{n.name}.std"))
        y = self.node("Mul", [self.node("Div", [centred, std], self.fresh(f"{n.name}.norm")), scale], self.fresh(f"{n.name}.scaled"))
        self._set(n, "ours", self.node("Add", [y, bias], self.fresh(n.name)))

    def op_rmsnorm(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        ms = self._mean_last(n, self.node("Mul", [x, x], self.fresh(f"{n.name}.sq")), "ms")
        eps = self.const(f"{n.name}.eps", np.float32(a.get("eps", 1e-6)))
        rms = self.node("Sqrt", [self.node("Add", [ms, eps], self.fresh(f"{n.name}.ms_eps"))], self.fresh(f"{n.name}.rms"))
        y = self.node("Div", [x, rms], self.fresh(f"{n.name}.norm"))
        self._set(n, "ours", self.node("Mul", [y, self.const(f"{n.name}.scale", p["scale"])], self.fresh(n.name)))

    def op_matmul(self, n, a, p):
        x, b = self.get(n.inputs[0], "ours"), self.get(n.inputs[1], "ours")
        if a.get("transpose_b"):
            rank = len(self.shapes[n.inputs[1]]) + 1
            perm = [*range(rank - 2), rank - 1, rank - 2]
            b = self.node("Transpose", [b], self.fresh(f"{n.name}.bT"), perm=perm)
        y = self.node("MatMul", [x, b], self.fresh(f"{n.name}.matmul" if "scale" in a else n.name))
        if "scale" in a:
            y = self.node("Mul", [y, self.const(f"{n.name}.scale", np.float32(a["scale"]))], self.fresh(n.name))
        self._set(n, "ours", y)

    def op_embed(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        table = p["table"]
        ids = self.node("Cast", [x], self.fresh(f"{n.name}.ids"), to=self.onnx.TensorProto.INT64)
        # jaxrepair clips ids into the table; ONNX Gather would refuse an id out of range.
        ids = self.node("Clip", [ids, self.const(f"{n.name}.lo", np.int64(0)), self.const(f"{n.name}.hi", np.int64(table.shape[0] - 1))],
                        self.fresh(f"{n.name}.ids_clipped"))
        self._set(n, "ours", self.node("Gather", [self.const(f"{n.name}.table", table), ids], self.fresh(n.name), axis=0))

    def op_causal_mask(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        q, k = self.shapes[n.inputs[0]][-2:]
        keep = np.arange(k)[None, :] <= np.arange(q)[:, None] + (k - q)
        low = np.float32(np.finfo(np.float32).min)
        self._set(n, "ours", self.node("Where", [self.const(f"{n.name}.keep", keep), x, self.const(f"{n.name}.low", low)],
                                       self.fresh(n.name)))

    def op_key_mask(self, n, a, p):
        x, ids = self.get(n.inputs[0], "ours"), self.get(n.inputs[1], "ours")
        rank = len(self.shapes[n.inputs[0]]) + 1
        pad = self.node("Equal", [ids, self.const(f"{n.name}.pad", np.float32(a["pad"]))], self.fresh(f"{n.name}.is_pad"))
        axes = list(range(1, rank - 1))
        if self.opset >= 13:
            pad = self.node("Unsqueeze", [pad, self.const(f"{n.name}.axes", np.asarray(axes, np.int64))], self.fresh(f"{n.name}.keys"))
        else:
            pad = self.node("Unsqueeze", [pad], self.fresh(f"{n.name}.keys"), axes=axes)
        low = self.const(f"{n.name}.low", np.float32(np.finfo(np.float32).min))
        self._set(n, "ours", self.node("Where", [pad, low, x], self.fresh(n.name)))

    def op_prepend(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        token = p["token"]
        full = self.node("Shape", [x], self.fresh(f"{n.name}.shape"))
        batch = self.node("Slice", [full, self.const(f"{n.name}.start", np.asarray([0], np.int64)),
                                    self.const(f"{n.name}.end", np.asarray([1], np.int64))], self.fresh(f"{n.name}.batch"))
        shape = self.node("Concat", [batch, self.const(f"{n.name}.rest", np.asarray(token.shape, np.int64))],
                          self.fresh(f"{n.name}.expand_to"), axis=0)
        t = self.node("Expand", [self.const(f"{n.name}.token", token[None]), shape], self.fresh(f"{n.name}.tokens"))
        self._set(n, "ours", self.node("Concat", [t, x], self.fresh(n.name), axis=1))

    def op_take(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        idx = self.const(f"{n.name}.index", np.int64(a["index"]))
        self._set(n, "ours", self.node("Gather", [x, idx], self.fresh(n.name), axis=1 + int(a.get("axis", 0))))

    def op_slice(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        c = lambda tag, v: self.const(f"{n.name}.{tag}", np.asarray([v], np.int64))  # noqa: E731
        self._set(n, "ours", self.node("Slice", [x, c("start", a["start"]), c("stop", a["stop"]), c("axis", 1 + int(a["axis"]))],
                                       self.fresh(n.name)))

    def op_pow(self, n, a, p):
        form, x = self.any_form(n.inputs[0])
        self._set(n, form, self.node("Pow", [x, self.const(f"{n.name}.exponent", np.float32(a["exponent"]))], self.fresh(n.name)))

    def op_nan_to_num(self, n, a, p):
        form, x = self.any_form(n.inputs[0])
        nan = self.node("IsNaN", [x], self.fresh(f"{n.name}.isnan"))
        self._set(n, form, self.node("Where", [nan, self.const(f"{n.name}.value", np.float32(a.get("value", 0.0))), x],
                                     self.fresh(n.name)))

    def op_heads(self, n, a, p):
        x = self.get(n.inputs[0], "ours")
        self._set(n, "ours", self.node("Transpose", [x], self.fresh(n.name), perm=[0, 2, 3, 1]))


def _cancel_transposes(nodes, output: str):
    """Drops Transpose pairs that compose to the identity and the nodes nothing reads any more."""
    from onnx import helper

    producer = {nd.output[0]: nd for nd in nodes}
    rename: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for nd in nodes:
        if nd.op_type != "Transpose":
            continue
        sig = (nd.input[0], tuple(helper.get_attribute_value(nd.attribute[0])))
        if sig in seen and nd.output[0] != output:  # the same transpose twice
            rename[nd.output[0]] = seen[sig]
            continue
        seen.setdefault(sig, nd.output[0])
        src = producer.get(nd.input[0])
        if src is None or src.op_type != "Transpose":
            continue
        p1 = list(helper.get_attribute_value(src.attribute[0]))
        p2 = list(helper.get_attribute_value(nd.attribute[0]))
        if [p1[j] for j in p2] == list(range(len(p2))) and nd.output[0] != output:
            rename[nd.output[0]] = src.input[0]

    def resolve(name):
        while name in rename:
            name = rename[name]
        return name

    for nd in nodes:
        for i, name in enumerate(nd.input):
            nd.input[i] = resolve(name)
    kept, needed = [], {output}
    for nd in reversed(nodes):
        if nd.output[0] in needed and nd.output[0] not in rename:
            kept.append(nd)
            needed.update(nd.input)
    return kept[::-1]


def to_onnx(model: Network, path: str | os.PathLike | None = None, *, opset: int = DEFAULT_OPSET, overwrite: bool = False):
    """Exports a network to ONNX; returns the ``onnx.ModelProto`` (and writes it when ``path`` is given).

    The model is checked with ``onnx.checker`` (full check, shape inference included) before it is
    written; an existing file is never replaced unless ``overwrite=True``.
    """
    if not 13 <= opset <= 21:
        raise ValueError(f"export opset {opset} is not supported (13–21)")
    m = _Exporter(model, opset).export()
    if path is not None:
        write_atomic(Path(path), lambda f: f.write(m.SerializeToString()), overwrite=overwrite)
    return m
