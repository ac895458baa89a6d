"""ONNX → :class:`~jaxrepair.models.Network`.

The converter walks the ONNX graph once, in its (topological) node order, and emits jaxrepair
nodes. jaxrepair computes image feature maps channels-last (NHWC, as Flax does), so every rank-4
tensor carries a *layout*: ``"onnx"`` (NCHW, as in the file) or ``"nhwc"``. Convolutions, pools
and batch norms work on NHWC; element-wise operators keep whatever layout they get; operators whose
meaning depends on the axis order (Flatten, Reshape, Transpose, Squeeze, ...) first get the ONNX
layout back through an explicit transpose node. The model's input and output keep the ONNX layout,
so a converted model takes the same arrays as the original.

Every ONNX tensor computed from the input becomes a site named after the tensor (the ONNX output
name of its node); helper transposes are named ``<tensor>.nhwc`` / ``<tensor>.nchw``. Tensors
computed from constants only (initialisers, ``Constant``, shape arithmetic) are folded at
conversion time. Batch-dependent shape arithmetic (``Shape → Gather → Concat → Reshape``, as the
TorchScript exporter writes ``x.view(x.size(0), -1)``) is followed symbolically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.models import INPUT, Graph, Network, Node, check_finite, run_op

MIN_OPSET, MAX_OPSET = 7, 23
#: Below opset 10, only the operators whose definition at opsets 7–9 is the one opset 10 uses (no
#: version of theirs between 7 and 10 changed their meaning); anything else is refused by name.
#: Elementwise arithmetic is multidirectional broadcasting from opset 7 on; BatchNormalization has
#: its opset-10 form from 9 on; Dropout, pooling and Upsample changed at 10 and are refused.
SAME_AS_OPSET_10 = {
    7: ("Abs", "Add", "Clip", "Concat", "Constant", "Conv", "Div", "Elu", "Exp", "Flatten", "Gemm", "GlobalAveragePool",
        "HardSigmoid", "Identity", "LeakyRelu", "LogSoftmax", "MatMul", "Mul", "Neg", "Pad", "Relu", "Reshape", "Selu",
        "Sigmoid", "Softmax", "Softplus", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze", "Shape", "Gather"),
}
SAME_AS_OPSET_10[8] = SAME_AS_OPSET_10[7]
SAME_AS_OPSET_10[9] = SAME_AS_OPSET_10[7] + ("BatchNormalization", "Cast")

#: The batch dimension inside folded shape tensors (``Shape(x)[0]``): never a real size.
BATCH = np.int64(-(2**40))

SUPPORTED = (
    "Abs", "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Constant", "Conv", "Div", "Dropout", "Elu",
    "Erf", "Exp", "Flatten", "Gather", "Gelu", "Gemm", "GlobalAveragePool", "HardSigmoid", "Identity",
    "LayerNormalization", "LeakyRelu", "LogSoftmax", "MatMul", "MaxPool", "Mul", "Neg", "Pad", "ReduceMean", "Relu",
    "Reshape", "Selu", "Sigmoid", "Softmax", "Softplus", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
    "Cast", "Where", "Expand", "IsNaN", "Pow", "Split", "Equal",
)
#: Accepted only when every input is a constant (shape arithmetic, masks); folded with numpy.
CONSTANT_ONLY = ("Shape", "Slice", "Range", "Less", "Greater", "Not", "And", "ConstantOfShape", "Trilu")
#: The binary ops folded on constants (and on constants broadcast along the batch).
_NUMPY_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Equal": np.equal,
                 "Less": np.less, "Greater": np.greater, "And": np.logical_and}
#: Integer input types: token ids, held as floats by jaxrepair (``embed`` casts them back).
_INT_TYPES = {6: "int32", 7: "int64"}

_FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}
_NCHW_TO_NHWC = (1, 2, 0)  # per-example axes (C, H, W) → (H, W, C)
_NHWC_TO_NCHW = (2, 0, 1)
_ONNX_AXIS_IN_NHWC = {1: 3, 2: 1, 3: 2}  # full-tensor axis of an NCHW tensor → the same axis in NHWC


class ConversionError(ValueError):
    """An ONNX model that jaxrepair cannot represent faithfully (the message says why)."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "reading ONNX models needs the 'onnx' package: pip install 'jaxrepair[onnx]' (or pip install onnx)"
        ) from None
    return onnx


def load_onnx_model(source):
    """``onnx.ModelProto`` from a path, bytes or a ModelProto, with clear errors for bad files."""
    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        model = source
        where = "<ModelProto>"
    elif isinstance(source, (bytes, bytearray)):
        where = "<bytes>"
        try:
            model = onnx.load_from_string(bytes(source))
        except Exception as e:  # protobuf DecodeError and friends
            raise ConversionError(f"{where}: not a valid ONNX model ({type(e).__name__}: {e})") from None
    else:
        path = Path(source)
        where = str(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        try:
            model = onnx.load(str(path))
        except Exception as e:
            raise ConversionError(f"{path}: not a valid ONNX file, or truncated ({type(e).__name__}: {e})") from None
    if not model.graph.node:
        raise ConversionError(f"{where}: the ONNX graph has no nodes (empty or truncated file)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ConversionError(f"{where}: the ONNX model is malformed: {str(e).strip().splitlines()[0]}") from None
    return model, where


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _tensor(t) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(t)


def _same_pads(in_size, k, s, d, lower: bool):
    out = -(-in_size // s)
    total = max(0, (out - 1) * s + (k - 1) * d + 1 - in_size)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


class _Renamed:
    """A node seen with other inputs (``Where(IsNaN(t), c, t)`` converted as a unary op of ``t``)."""

    def __init__(self, node, inputs):
        self.node, self.input = node, list(inputs)

    def __getattr__(self, name):
        return getattr(self.node, name)


class _Converter:
    def __init__(self, model, where: str, input_shape=None, output: str | None = None):
        self.model, self.where = model, where
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        if self.opset is None:
            raise ConversionError(f"{where}: the model imports no default-domain ('ai.onnx') opset")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ConversionError(
                f"{where}: opset {self.opset} is not supported (supported: {MIN_OPSET}–{MAX_OPSET}); "
                f"re-export the model with a supported opset_version"
            )
        g = model.graph
        self.const: dict[str, np.ndarray] = {t.name: _tensor(t) for t in g.initializer}
        for k, v in self.const.items():  # NaN is never a weight; ±inf is checked on the parameters at the end
            if v.dtype.kind == "f" and np.isnan(v).any():
                raise ConversionError(f"{where}: initialiser {k!r} holds {int(np.isnan(v).sum())} NaN value(s)")
        self.tensors: dict[str, tuple[str, str]] = {}  # onnx tensor → (jaxrepair node, layout)
        self.nodes: list[Node] = []
        self.params: dict[str, dict[str, np.ndarray]] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # jaxrepair node → per-example shape
        self.names: set[str] = {INPUT}
        self.onnx_sites: dict[str, str] = {}
        inputs = [i for i in g.input if i.name not in self.const]
        if len(inputs) != 1:
            raise ConversionError(
                f"{where}: jaxrepair models take one input; the graph has {len(inputs)} non-constant inputs "
                f"({[i.name for i in inputs]})"
            )
        inp = inputs[0]
        self.input_name = inp.name
        tt = inp.type.tensor_type
        if tt.elem_type not in _FLOAT_TYPES and tt.elem_type not in _INT_TYPES:
            from onnx import TensorProto

            raise ConversionError(
                f"{where}: input {inp.name!r} has dtype {TensorProto.DataType.Name(tt.elem_type)}; "
                f"jaxrepair models take floating-point inputs (or int32/int64 token ids)"
            )
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        if input_shape is not None:
            shape = tuple(int(v) for v in input_shape)
            if len(dims) and len(dims) != len(shape) + 1:
                raise ConversionError(f"{where}: input_shape {shape} has rank {len(shape)}, the input has rank {len(dims) - 1} (plus batch)")
        else:
            if not dims:
                raise ConversionError(f"{where}: input {inp.name!r} has no shape; pass input_shape=(...) (per example)")
            unresolved = [i for i, d in enumerate(dims[1:], start=1) if not isinstance(d, int) or d <= 0]
            if unresolved:
                raise ConversionError(
                    f"{where}: input {inp.name!r} has dynamic dimensions {[dims[i] for i in unresolved]} at axes "
                    f"{unresolved} that cannot be resolved; pass input_shape=(...) (per example, without the batch axis)"
                )
            shape = tuple(int(d) for d in dims[1:])
        self.input_shape = shape
        self.export_batch = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None
        self.integer_input, self.input_elem = tt.elem_type in _INT_TYPES, tt.elem_type
        self.pad_marks: dict[str, tuple] = {}  # Equal(ids, pad) [and its Unsqueeze]: (ids tensor, pad id)
        self.batched: dict[str, np.ndarray] = {}  # Expand of a constant to the batch: [1, ...] per example
        self.tensors[inp.name] = (INPUT, "onnx")
        self.shapes[INPUT] = shape
        outs = [o.name for o in g.output]
        if output is None:
            if len(outs) != 1:
                raise ConversionError(f"{where}: the graph has {len(outs)} outputs {outs}; choose one with output=NAME")
            output = outs[0]
        elif output not in outs and output not in {o for n in g.node for o in n.output}:
            raise ConversionError(f"{where}: output {output!r} is not a tensor of the graph (graph outputs: {outs})")
        self.output = output

    # ------------------------------------------------------------------ helpers

    def fail(self, node, msg: str):
        raise ConversionError(f"{self.where}: node {node.name or node.output[0]!r} ({node.op_type}, opset {self.opset}): {msg}")

    def unique(self, base: str) -> str:
        name, i = base or "node", 1
        while name in self.names:
            name = f"{base}_{i}"
            i += 1
        self.names.add(name)
        return name

    def emit(self, base: str, op: str, inputs, params=None, **attrs) -> str:
        name = self.unique(base)
        node = Node.make(name, op, tuple(inputs), **attrs)
        p = {k: np.asarray(v, np.float32) for k, v in (params or {}).items()}
        structs = [jax.ShapeDtypeStruct((2, *self.shapes[i]), jnp.float32) for i in node.inputs]
        try:
            out = jax.eval_shape(lambda p, *xs: run_op(node.op, p, list(xs), node.attr), p, *structs)
        except Exception as e:
            raise ConversionError(f"{self.where}: cannot build {op} node {name!r}: {type(e).__name__}: {e}") from None
        if out.shape[0] != 2:
            raise ConversionError(f"{self.where}: node {name!r} ({op}) would mix the batch axis")
        self.nodes.append(node)
        if p:
            self.params[name] = p
        self.shapes[name] = tuple(out.shape[1:])
        return name

    def rank(self, tensor: str) -> int:
        node, _ = self.tensors[tensor]
        return len(self.shapes[node]) + 1 - self.merged(tensor)

    def merged(self, tensor: str) -> int:
        """How many leading per-example axes ONNX has folded into the batch axis here (torch's
        ``x.view(-1, width)`` before a Linear): the jaxrepair node keeps them as its own axes."""
        layout = self.tensors[tensor][1]
        return int(layout.split(":")[1]) if layout.startswith("merged:") else 0

    def need_unmerged(self, tensor: str, node):
        if self.merged(tensor):
            self.fail(node, f"{tensor!r} has the batch axis merged with {self.merged(tensor)} other axis(es) "
                            f"(a reshape to [-1, ...]); only dense layers, element-wise ops, transposes and the reshape "
                            f"that splits the batch back out are supported on it")

    def onnx_shape(self, tensor: str) -> tuple[int, ...]:
        """Per-example shape in the ONNX layout."""
        node, layout = self.tensors[tensor]
        if self.merged(tensor):
            return self.shapes[node][self.merged(tensor):]
        s = self.shapes[node]
        return tuple(s[i] for i in _NHWC_TO_NCHW) if layout == "nhwc" else s

    def as_onnx(self, tensor: str) -> str:
        node, layout = self.tensors[tensor]
        if layout == "onnx" or layout.startswith("merged:"):
            return node
        key = f"{tensor}.nchw"
        if key not in self.tensors:
            self.tensors[key] = (self.emit(key, "transpose", [node], perm=_NHWC_TO_NCHW), "onnx")
        return self.tensors[key][0]

    def as_nhwc(self, tensor: str, node) -> str:
        name, layout = self.tensors[tensor]
        if layout == "nhwc":
            return name
        if len(self.shapes[name]) != 3:
            self.fail(node, f"needs a rank-4 (N, C, H, W) input; {tensor!r} has shape {('N', *self.shapes[name])}")
        key = f"{tensor}.nhwc"
        if key not in self.tensors:
            self.tensors[key] = (self.emit(key, "transpose", [name], perm=_NCHW_TO_NHWC), "nhwc")
        return self.tensors[key][0]

    def get_const(self, name: str, node, what: str) -> np.ndarray:
        if name not in self.const:
            self.fail(node, f"{what} ({name!r}) must be a constant (initialiser or Constant), not computed from the input")
        return self.const[name]

    def optional(self, node, i: int):
        return node.input[i] if len(node.input) > i and node.input[i] else None

    def output_site(self, node, jr_node: str, layout: str):
        out = node.output[0]
        self.tensors[out] = (jr_node, layout)
        self.onnx_sites[jr_node] = out

    def axes_arg(self, node, a: dict, input_index: int = 1):
        if "axes" in a:
            return [int(v) for v in a["axes"]]
        name = self.optional(node, input_index)
        return None if name is None else [int(v) for v in self.get_const(name, node, "axes")]

    # ------------------------------------------------------------------ constant folding

    def fold(self, node, a: dict) -> bool:
        """Evaluates a node whose inputs are all constants. Returns False if it is not foldable."""
        op = node.op_type
        if op == "Constant":
            if "value" in a:
                v = _tensor(a["value"])
            elif "value_float" in a:
                v = np.float32(a["value_float"])
            elif "value_floats" in a:
                v = np.asarray(a["value_floats"], np.float32)
            elif "value_int" in a:
                v = np.int64(a["value_int"])
            elif "value_ints" in a:
                v = np.asarray(a["value_ints"], np.int64)
            else:
                self.fail(node, f"unsupported Constant attribute(s) {sorted(a)}")
            self.const[node.output[0]] = np.asarray(v)
            return True
        if op == "Shape":
            x = node.input[0]
            if x in self.batched:
                shape = np.asarray((BATCH, *np.shape(self.batched[x])), np.int64)
                start, end = int(a.get("start", 0)), a.get("end")
                self.const[node.output[0]] = shape[start : (None if end is None else int(end))]
                return True
            if x in self.tensors:
                self.need_unmerged(x, node)
            if x in self.const:
                shape = np.asarray(self.const[x].shape, np.int64)
            else:
                shape = np.asarray((BATCH, *self.onnx_shape(x)), np.int64)
            start, end = int(a.get("start", 0)), a.get("end")
            self.const[node.output[0]] = shape[start : (None if end is None else int(end))]
            return True
        ins = [i for i in node.input if i]
        if any(i in self.batched for i in ins) and all(i in self.const or i in self.batched for i in ins):
            return self.fold_batched(node, a, ins)
        if not all(i in self.const for i in ins):
            if op in CONSTANT_ONLY:
                self.fail(node, f"{op} is supported only on constants (shape arithmetic); its input comes from the model input")
            return False
        c = [self.const[i] for i in ins]
        if op in ("Identity", "Dropout", "Cast"):
            v = c[0]
            if op == "Cast":
                from onnx import helper

                v = v.astype(helper.tensor_dtype_to_np_dtype(int(a["to"])))
        elif op == "Gather":
            v = np.take(c[0], c[1], axis=int(a.get("axis", 0)))
        elif op in ("Add", "Sub", "Mul", "Div"):
            f = _NUMPY_BINARY[op]
            v = f(c[0], c[1])
            if op == "Div" and np.issubdtype(c[0].dtype, np.integer):
                v = np.floor_divide(c[0], c[1])
            if np.any(np.asarray(c[0]) == BATCH) or np.any(np.asarray(c[1]) == BATCH):
                self.fail(node, "shape arithmetic on the batch dimension cannot be resolved (dynamic shape)")
        elif op == "Concat":
            v = np.concatenate([np.atleast_1d(x) for x in c], axis=int(a["axis"]))
        elif op == "Unsqueeze":
            axes = self.axes_arg(node, a)
            v = c[0]
            for ax in sorted(ax % (v.ndim + len(axes)) for ax in axes):
                v = np.expand_dims(v, ax)
        elif op == "Squeeze":
            axes = self.axes_arg(node, a)
            v = np.squeeze(c[0], axis=None if axes is None else tuple(axes))
        elif op == "Reshape":
            v = c[0].reshape([int(s) for s in c[1]])
        elif op == "Transpose":
            v = np.transpose(c[0], a.get("perm"))
        elif op == "Slice":
            starts, ends = (np.asarray(c[i]).reshape(-1) for i in (1, 2))
            axes = np.asarray(c[3]).reshape(-1) if len(c) > 3 else np.arange(len(starts))
            steps = np.asarray(c[4]).reshape(-1) if len(c) > 4 else np.ones(len(starts), np.int64)
            index = [slice(None)] * np.ndim(c[0])
            for st, en, ax, sp in zip(starts, ends, axes, steps):
                index[int(ax)] = slice(int(st), int(max(min(en, 2**62), -2**62)), int(sp))
            v = np.asarray(c[0])[tuple(index)]
        elif op == "Where":
            v = np.where(c[0], c[1], c[2])
        elif op == "Expand":
            shape = [int(d) for d in c[1]]
            if BATCH in shape:
                full = np.broadcast_shapes(np.shape(c[0]), tuple(1 if d == BATCH else d for d in shape))
                if shape.index(BATCH) != 0 or len(full) != len(shape) or full[0] != 1:
                    self.fail(node, f"Expand to {shape}: only a constant broadcast along the batch axis is supported")
                self.batched[node.output[0]] = np.broadcast_to(np.asarray(c[0]), full)[0].copy()
                return True
            v = np.asarray(c[0]) * np.ones(shape, np.asarray(c[0]).dtype)
        elif op == "Range":
            v = np.arange(c[0], c[1], c[2])
        elif op in ("Equal", "Less", "Greater", "And"):
            v = _NUMPY_BINARY[op](c[0], c[1])
        elif op == "Not":
            v = np.logical_not(c[0])
        elif op == "ConstantOfShape":
            fill = _tensor(a["value"]) if "value" in a else np.zeros(1, np.float32)
            v = np.full([int(d) for d in c[0]], fill.reshape(-1)[0], fill.dtype)
        elif op == "Trilu":
            k = int(c[1]) if len(c) > 1 else 0
            v = np.triu(c[0], k) if int(a.get("upper", 1)) else np.tril(c[0], k)
        else:
            return False  # a compute op applied to constants: emitted below only if it reads the input
        self.const[node.output[0]] = np.asarray(v)
        return True

    def fold_batched(self, node, a: dict, ins) -> bool:
        """Folds an op on constants of which some are broadcast along the batch axis (kept per example:
        masks, token-type ids): element-wise ops and lookups. The result is batched again."""
        op = node.op_type
        rank = max(np.ndim(self.batched[i]) for i in ins if i in self.batched) + 1

        def per_example(i):
            if i in self.batched:
                return self.batched[i]
            v = self.const[i]
            if np.ndim(v) == rank:
                if np.shape(v)[0] != 1:
                    self.fail(node, f"constant {i!r} of shape {np.shape(v)} varies over the batch axis")
                return v[0]
            return v

        if op == "Gather" and ins[0] in self.const and ins[1] in self.batched and int(a.get("axis", 0)) == 0:
            self.batched[node.output[0]] = np.take(self.const[ins[0]], self.batched[ins[1]], axis=0)
            return True
        c = [per_example(i) for i in ins]
        if op == "Where":
            v = np.where(c[0], c[1], c[2])
        elif op in ("Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater", "And"):
            v = _NUMPY_BINARY[op](c[0], c[1])
        elif op == "Not":
            v = np.logical_not(c[0])
        elif op in ("Cast", "Identity"):
            from onnx import helper

            v = c[0] if op == "Identity" else c[0].astype(helper.tensor_dtype_to_np_dtype(int(a["to"])))
        else:
            self.fail(node, f"{op} on a constant broadcast along the batch axis is not supported")
        self.batched[node.output[0]] = np.asarray(v)
        return True

    # ------------------------------------------------------------------ operators

    def convert(self) -> Network:
        for node in self.model.graph.node:
            if node.domain not in ("", "ai.onnx"):
                self.fail(node, f"operator {node.domain}.{node.op_type} is outside the default ONNX domain; supported: {list(SUPPORTED)}")
            if self.opset < 10 and node.op_type not in SAME_AS_OPSET_10[self.opset]:
                self.fail(node, f"{node.op_type} at opset {self.opset} differs from its opset-10 form; jaxrepair reads "
                                f"opsets 7-9 for {', '.join(SAME_AS_OPSET_10[self.opset])}; re-export with opset >= 10")
            a = _attrs(node)
            if node.op_type not in SUPPORTED and node.op_type not in CONSTANT_ONLY:
                raise ConversionError(
                    f"{self.where}: unsupported ONNX operator {node.op_type!r} (node {node.name or node.output[0]!r}, "
                    f"opset {self.opset}); supported operators: {', '.join(SUPPORTED)} (and {', '.join(CONSTANT_ONLY)} on constants)"
                )
            if self.fold(node, a):
                continue
            if not any(i in self.tensors or i in self.pad_marks for i in node.input if i):
                self.fail(node, "its inputs are neither constants nor computed from the model input")
            getattr(self, "op_" + node.op_type)(node, a)
        if self.output in self.const:
            raise ConversionError(f"{self.where}: output {self.output!r} is a constant (it does not depend on the input)")
        if self.output not in self.tensors:
            raise ConversionError(f"{self.where}: output {self.output!r} is never computed")
        if self.merged(self.output):
            raise ConversionError(f"{self.where}: output {self.output!r} has the batch merged with other axes")
        out = self.as_onnx(self.output)
        graph = Graph(_fuse_gelu(tuple(self.nodes), self.params), self.input_shape, out).validate()
        used = _reachable(graph)
        graph = Graph(tuple(n for n in graph.nodes if n.name in used), self.input_shape, out)
        if self.integer_input:
            self.check_token_ids(graph)
        params = {k: v for k, v in self.params.items() if k in used}
        try:
            check_finite(params, f"{self.where}: the weights of node ")
        except ValueError as e:
            raise ConversionError(str(e)) from None
        meta = {
            "format": "onnx",
            "source": self.where,
            "onnx": {
                "opset": self.opset,
                "input": self.input_name,
                **({"integer_input": True} if self.integer_input else {}),
                "output": self.output,
                "sites": {k: v for k, v in self.onnx_sites.items() if k in used},
                "producer": f"{self.model.producer_name} {self.model.producer_version}".strip(),
            },
        }
        return Network(graph, params, meta=meta)

    def check_token_ids(self, graph: Graph):
        """An integer input is read as token ids: everything it feeds (through reshapes, clips and
        identities) must be an embedding lookup or a padding test."""
        from onnx import TensorProto

        todo, ends = [INPUT], []
        while todo:
            for c in graph.consumers(todo.pop()):
                (todo.append(c.name) if c.op in ("reshape", "identity", "clip") else ends.append(c))
        wrong = [c for c in ends if c.op not in ("embed", "key_mask")]
        if wrong or not ends:
            dtype = TensorProto.DataType.Name(self.input_elem)
            what = f"feeds {wrong[0].op} (node {wrong[0].name!r})" if wrong else "reaches the output"
            raise ConversionError(f"{self.where}: input {self.input_name!r} has dtype {dtype}; integer inputs are read "
                                  f"as token ids, but this one {what} instead of an embedding lookup")

    def _unary(self, node, op, **attrs):
        x = node.input[0]
        name, layout = self.tensors[x]
        self.output_site(node, self.emit(node.output[0], op, [name], **attrs), layout)

    def op_Relu(self, node, a):
        self._unary(node, "relu")

    def op_Sigmoid(self, node, a):
        self._unary(node, "sigmoid")

    def op_Tanh(self, node, a):
        self._unary(node, "tanh")

    def op_LeakyRelu(self, node, a):
        self._unary(node, "leaky_relu", alpha=float(a.get("alpha", 0.01)))

    def op_Identity(self, node, a):
        self._unary(node, "identity")

    def op_Elu(self, node, a):
        self._unary(node, "elu", alpha=float(a.get("alpha", 1.0)))

    def op_Selu(self, node, a):
        self._unary(node, "selu", alpha=float(a.get("alpha", 1.67326319217681884765625)),
                    gamma=float(a.get("gamma", 1.05070102214813232421875)))

    def op_Softplus(self, node, a):
        self._unary(node, "softplus")

    def op_Gelu(self, node, a):
        approx = a.get("approximate", b"none")
        self._unary(node, "gelu", approximate=approx.decode() if isinstance(approx, bytes) else approx)

    def op_HardSigmoid(self, node, a):
        self._unary(node, "hard_sigmoid", alpha=float(a.get("alpha", 0.2)), beta=float(a.get("beta", 0.5)))

    def op_Exp(self, node, a):
        self._unary(node, "exp")

    def op_Abs(self, node, a):
        self._unary(node, "abs")

    def op_Neg(self, node, a):
        self._unary(node, "neg")

    def op_Sqrt(self, node, a):
        self._unary(node, "sqrt")

    def op_Erf(self, node, a):
        self._unary(node, "erf")

    def op_Dropout(self, node, a):
        if len(node.output) > 1 and node.output[1]:
            consumers = [n for n in self.model.graph.node if node.output[1] in n.input]
            if consumers or node.output[1] in {o.name for o in self.model.graph.output}:
                self.fail(node, "the Dropout mask output is used; only inference-mode Dropout (identity) is supported")
        if self.optional(node, 2) is not None and bool(self.get_const(node.input[2], node, "training_mode")):
            self.fail(node, "training_mode=True Dropout is not supported (inference only)")
        self._unary(node, "identity")

    def op_Clip(self, node, a):
        if self.opset < 11:
            lo, hi = a.get("min"), a.get("max")
        else:
            lo = self.optional(node, 1)
            hi = self.optional(node, 2)
            lo = None if lo is None else float(self.get_const(lo, node, "min"))
            hi = None if hi is None else float(self.get_const(hi, node, "max"))
        self._unary(node, "clip", min=None if lo is None else float(lo), max=None if hi is None else float(hi))

    def op_LogSoftmax(self, node, a):
        self.op_Softmax(node, a, op="log_softmax")

    def op_Softmax(self, node, a, op="softmax"):
        x = node.input[0]
        r = self.rank(x)
        axis = int(a.get("axis", 1 if self.opset < 13 else -1)) % r
        if axis == 0:
            self.fail(node, "softmax over the batch axis is not supported")
        if self.opset < 13 and axis != r - 1:
            self.fail(node, f"opset {self.opset} Softmax with axis={axis} flattens axes {axis}..{r - 1}; only the last axis is supported")
        name, layout = self.tensors[x]
        if layout == "nhwc":
            axis = _ONNX_AXIS_IN_NHWC[axis]
        self.output_site(node, self.emit(node.output[0], op, [name], axis=axis - r), layout)

    def op_Gemm(self, node, a):
        if int(a.get("transA", 0)):
            self.fail(node, "transA=1 is not supported (the batch must be the first axis of A)")
        x = self.as_onnx(node.input[0])
        if self.rank(node.input[0]) != 2:
            self.fail(node, f"Gemm needs a 2-D input; got shape {('N', *self.onnx_shape(node.input[0]))}")
        w = self.get_const(node.input[1], node, "B (the weight matrix)").astype(np.float32)
        w = (w.T if int(a.get("transB", 0)) else w) * float(a.get("alpha", 1.0))
        p = {"kernel": w}
        c = self.optional(node, 2)
        if c is not None:
            cv = self.get_const(c, node, "C (the bias)").astype(np.float32) * float(a.get("beta", 1.0))
            if cv.ndim == 2 and cv.shape[0] != 1:
                self.fail(node, f"a bias C of shape {cv.shape} varies over the batch; only (N_out,) or (1, N_out) is supported")
            p["bias"] = np.broadcast_to(cv.reshape(-1), (w.shape[1],)).copy()
        self.output_site(node, self.emit(node.output[0], "dense", [x], p), self.tensors[node.input[0]][1])

    def op_MatMul(self, node, a):
        if node.input[0] in self.const:
            self.fail(node, "MatMul with a constant left operand and the input on the right is not supported")
        x = self.as_onnx(node.input[0])
        if node.input[1] in self.tensors:  # a product of two activations (attention)
            self.need_unmerged(node.input[0], node)
            self.need_unmerged(node.input[1], node)
            y = self.as_onnx(node.input[1])
            if len(self.shapes[x]) < 2 or len(self.shapes[y]) < 2:
                self.fail(node, f"a product of two computed tensors needs per-example rank >= 2 on both sides; got "
                                f"{('N', *self.shapes[x])} and {('N', *self.shapes[y])}")
            self.output_site(node, self.emit(node.output[0], "matmul", [x, y]), "onnx")
            return
        w = self.get_const(node.input[1], node, "the right operand (weights)")
        if w.ndim != 2:
            self.fail(node, f"MatMul weights must be 2-D; got shape {w.shape}")
        self.output_site(node, self.emit(node.output[0], "dense", [x], {"kernel": w.astype(np.float32)}),
                         self.tensors[node.input[0]][1])

    def _binary(self, node, op):
        a_name, b_name = node.input[0], node.input[1]
        if a_name in self.batched or b_name in self.batched:  # a mask or ids broadcast along the batch
            t, c = (a_name, b_name) if b_name in self.batched else (b_name, a_name)
            v = self.batched[c]
            if not np.all(np.isfinite(v)) or op == "add":
                self.masked_add(node, t, v, op)
                return
            self.const[c] = v[None]
        if a_name in self.const or b_name in self.const:
            reverse = a_name in self.const
            t, c = (b_name, self.const[a_name]) if reverse else (a_name, self.const[b_name])
            c = np.asarray(c, np.float32)
            name, layout = self.tensors[t]
            r = self.rank(t)
            if c.ndim > r:
                self.fail(node, f"the constant operand has rank {c.ndim}, more than the tensor's {r}")
            if c.ndim == r and c.shape[0] != 1:
                self.fail(node, f"the constant operand {c.shape} varies over the batch axis")
            if layout == "nhwc":
                c = np.transpose(c.reshape((1,) * (4 - c.ndim) + c.shape), (0, 2, 3, 1))
            attrs = {"reverse": True} if reverse and op in ("sub", "div") else {}
            self.output_site(node, self.emit(node.output[0], op, [name], {"value": c}, **attrs), layout)
            return
        (na, la), (nb, lb) = self.tensors[a_name], self.tensors[b_name]
        if la != lb and (self.merged(a_name) or self.merged(b_name)):
            self.fail(node, "one operand has the batch merged with other axes and the other does not")
        if la != lb:
            if self.rank(a_name) == 4 and self.rank(b_name) == 4:
                na, nb, layout = self.as_nhwc(a_name, node), self.as_nhwc(b_name, node), "nhwc"
            else:
                na, nb, layout = self.as_onnx(a_name), self.as_onnx(b_name), "onnx"
        else:
            layout = la
        self.output_site(node, self.emit(node.output[0], op, [na, nb]), layout)

    def masked_add(self, node, t: str, v: np.ndarray, op: str):
        """``t + v`` where ``v`` (per example) is an attention mask: all zeros (nothing masked), or 0 where
        a key may be attended and <= -1e9 where not, in the causal pattern."""
        name = self.as_onnx(t)
        if op != "add":
            self.fail(node, f"{node.op_type} with a non-finite constant is not supported")
        shape = self.shapes[name]
        if np.all(v == 0):
            self.output_site(node, self.emit(node.output[0], "identity", [name]), self.tensors[t][1])
            return
        q, k = shape[-2:] if len(shape) >= 2 else (0, 0)
        causal = np.arange(k)[None, :] <= np.arange(q)[:, None] + (k - q)
        try:
            full = np.broadcast_to(v, shape)
        except ValueError:
            full = None
        if full is not None and np.all(full[..., causal] == 0) and np.all(full[..., ~causal] <= -1e9):
            self.output_site(node, self.emit(node.output[0], "causal_mask", [name]), self.tensors[t][1])
            return
        if not np.all(np.isfinite(v)):
            self.fail(node, "an additive mask that is neither empty nor causal (padding masks are not supported)")
        self.output_site(node, self.emit(node.output[0], "add", [name], {"value": v.astype(np.float32)}), self.tensors[t][1])

    def op_Add(self, node, a):
        self._binary(node, "add")

    def op_Sub(self, node, a):
        self._binary(node, "sub")

    def op_Mul(self, node, a):
        self._binary(node, "mul")

    def op_Div(self, node, a):
        self._binary(node, "div")

    def _spatial(self, node, a, kernel, in_hw):
        strides = tuple(int(v) for v in a.get("strides", (1, 1)))
        dil = tuple(int(v) for v in a.get("dilations", (1, 1)))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto == "VALID":
            pads = ((0, 0), (0, 0))
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = tuple(_same_pads(in_hw[i], kernel[i], strides[i], dil[i], auto == "SAME_LOWER") for i in range(2))
        elif auto == "NOTSET":
            p = [int(v) for v in a.get("pads", (0, 0, 0, 0))]
            if any(v < 0 for v in p):
                self.fail(node, f"negative pads {p} are not supported")
            pads = ((p[0], p[2]), (p[1], p[3]))
        else:
            self.fail(node, f"unknown auto_pad {auto!r}")
        return strides, dil, pads

    def op_Conv(self, node, a):
        w = self.get_const(node.input[1], node, "W (the kernel)").astype(np.float32)
        if w.ndim != 4:
            self.fail(node, f"only 2-D convolutions are supported; the kernel has shape {w.shape}")
        x = self.as_nhwc(node.input[0], node)
        strides, dil, pads = self._spatial(node, a, w.shape[2:], self.shapes[x][:2])
        p = {"kernel": np.transpose(w, (2, 3, 1, 0))}  # OIHW → HWIO
        b = self.optional(node, 2)
        if b is not None:
            p["bias"] = self.get_const(b, node, "B (the bias)").astype(np.float32)
        name = self.emit(node.output[0], "conv2d", [x], p, strides=strides, padding=pads, dilation=dil, groups=int(a.get("group", 1)))
        self.output_site(node, name, "nhwc")

    def _pool(self, node, a, op):
        x = self.as_nhwc(node.input[0], node)
        k = tuple(int(v) for v in a["kernel_shape"])
        if len(k) != 2:
            self.fail(node, f"only 2-D pooling is supported (kernel_shape {k})")
        strides, dil, pads = self._spatial(node, a, k, self.shapes[x][:2])
        attrs = {}
        if op == "avgpool":
            if dil != (1, 1):
                self.fail(node, f"AveragePool dilations {dil} are not supported")
            attrs["count_include_pad"] = bool(int(a.get("count_include_pad", 0)))
        elif dil != (1, 1):
            attrs["dilation"] = dil
        if int(a.get("ceil_mode", 0)):
            new = []
            for i in range(2):
                n = self.shapes[x][i] + sum(pads[i])
                span = dil[i] * (k[i] - 1) + 1
                out = -(-(n - span) // strides[i]) + 1
                if (out - 1) * strides[i] >= self.shapes[x][i] + pads[i][0]:
                    out -= 1  # the last window must start inside the input or its left padding
                extra = max(0, (out - 1) * strides[i] + span - n)
                new.append((pads[i][0], pads[i][1] + extra))
            if op == "avgpool" and attrs["count_include_pad"] and tuple(new) != pads:
                self.fail(node, "ceil_mode=1 with count_include_pad=1 is not supported")
            pads = tuple(new)
        self.output_site(node, self.emit(node.output[0], op, [x], window=k, strides=strides, padding=pads, **attrs), "nhwc")

    def op_MaxPool(self, node, a):
        if len(node.output) > 1 and node.output[1]:
            self.fail(node, "the Indices output of MaxPool is not supported")
        self._pool(node, a, "maxpool")

    def op_AveragePool(self, node, a):
        self._pool(node, a, "avgpool")

    def op_GlobalAveragePool(self, node, a):
        x = self.as_nhwc(node.input[0], node)
        self.output_site(node, self.emit(node.output[0], "global_avgpool", [x], keepdims=True), "nhwc")

    def op_ReduceMean(self, node, a):
        r = self.rank(node.input[0])
        axes = self.axes_arg(node, a)
        if not axes:  # no axes input, or an empty one: all axes unless noop_with_empty_axes
            if int(a.get("noop_with_empty_axes", 0)):
                self._unary(node, "identity")
                return
            axes = list(range(r))
        axes = sorted({ax % r for ax in axes})
        if 0 in axes:
            self.fail(node, "averaging over the batch axis is not supported")
        keep = bool(int(a.get("keepdims", 1)))
        name, layout = self.tensors[node.input[0]]
        if layout == "nhwc" and keep:
            axes = sorted(_ONNX_AXIS_IN_NHWC[ax] for ax in axes)
        else:
            name, layout = self.as_onnx(node.input[0]), "onnx"
        self.output_site(node, self.emit(node.output[0], "reduce_mean", [name], axes=tuple(axes), keepdims=keep), layout)

    def op_BatchNormalization(self, node, a):
        if int(a.get("training_mode", 0)) or (len(node.output) > 1 and any(node.output[1:])):
            self.fail(node, "training-mode BatchNormalization (running statistics outputs) is not supported")
        r = self.rank(node.input[0])
        if r == 4:
            x = self.as_nhwc(node.input[0], node)
        elif r == 2:
            x = self.tensors[node.input[0]][0]
        else:
            self.fail(node, f"BatchNormalization on a rank-{r} tensor is not supported (rank 2 or 4)")
        names = ("scale", "bias", "mean", "var")
        p = {k: self.get_const(node.input[i + 1], node, k).astype(np.float32) for i, k in enumerate(names)}
        name = self.emit(node.output[0], "batchnorm", [x], p, eps=float(a.get("epsilon", 1e-5)))
        self.output_site(node, name, "nhwc" if r == 4 else "onnx")

    def op_Flatten(self, node, a):
        r = self.rank(node.input[0])
        axis = int(a.get("axis", 1)) % r if r else 1
        x = self.as_onnx(node.input[0])
        if axis == 0:
            self.fail(node, "Flatten with axis=0 merges the batch axis")
        if axis == 1:
            self.output_site(node, self.emit(node.output[0], "flatten", [x]), "onnx")
        else:
            self.fail(node, f"Flatten with axis={axis} merges the batch axis with others; only axis=1 is supported")

    def op_Reshape(self, node, a):
        x = self.as_onnx(node.input[0])
        target = [int(v) for v in self.get_const(node.input[1], node, "the shape")]
        per = self.shapes[x]
        m = self.merged(node.input[0])
        if m:  # the batch split back out: [N·a·…, rest] → [N, …] is a per-example reshape
            out = [per[i - 1] if s == 0 else s for i, s in enumerate(target[1:], start=1)]
            if (target[0] in (BATCH, -1) or target[0] == self.export_batch) and -1 not in out and math.prod(out) == math.prod(per):
                y = x if tuple(out) == per else self.emit(node.output[0], "reshape", [x], shape=tuple(out))
                self.output_site(node, y, "onnx")
                return
            self.fail(node, f"reshape of a tensor with merged batch axes (per example {per}) to {target}")
        if (target[0] == -1 and len(target) >= 2 and -1 not in target[1:] and 0 not in target[1:]
                and math.prod(target[1:]) < math.prod(per)):
            # torch's x.view(-1, width): the batch merged with the leading per-example axes (when the
            # -1 can be the batch alone, as in a flatten, it is a per-example reshape below)
            for k in range(1, len(per)):
                if math.prod(target[1:]) == math.prod(per[k:]):
                    y = x if tuple(target[1:]) == per[k:] else self.emit(node.output[0], "reshape", [x],
                                                                         shape=(*per[:k], *target[1:]))
                    self.tensors[node.output[0]] = (y, f"merged:{k}")
                    return
        size = math.prod(per)
        if int(a.get("allowzero", 0)) and 0 in target:
            self.fail(node, "allowzero=1 with a 0 in the shape (a zero-size tensor) is not supported")
        out = []
        for i, s in enumerate(target[1:], start=1):
            if s == BATCH:
                self.fail(node, f"shape {target}: the batch dimension appears at axis {i}; cannot resolve")
            out.append(per[i - 1] if s == 0 else s)
        if any(s < -1 for s in out) or target[0] < -1 and target[0] != BATCH:
            self.fail(node, f"shape {target} cannot be resolved statically")
        if out.count(-1) > 1 or (-1 in out and target[0] == -1):
            self.fail(node, f"shape {target} has more than one inferred (-1) dimension besides the batch")
        if -1 in out:
            known = math.prod(s for s in out if s != -1)
            if known == 0 or size % known:
                self.fail(node, f"cannot reshape a per-example {per} into {target}")
            out[out.index(-1)] = size // known
        if math.prod(out) != size:
            self.fail(node, f"reshape of per-example {per} to {target} changes the batch axis (only per-example reshapes are supported)")
        self.output_site(node, self.emit(node.output[0], "reshape", [x], shape=tuple(out)), "onnx")

    def op_Transpose(self, node, a):
        r = self.rank(node.input[0])
        perm = [int(v) for v in a.get("perm", range(r - 1, -1, -1))]
        if perm[0] != 0:
            self.fail(node, f"perm {perm} moves the batch axis")
        m = self.merged(node.input[0])
        if m:  # the merged axes stay in front
            name = self.tensors[node.input[0]][0]
            full = tuple(range(m)) + tuple(m + p - 1 for p in perm[1:])
            self.output_site(node, self.emit(node.output[0], "transpose", [name], perm=full), f"merged:{m}")
            return
        name, layout = self.tensors[node.input[0]]
        if layout == "nhwc" and perm == [0, 2, 3, 1]:
            self.output_site(node, self.emit(node.output[0], "identity", [name]), "onnx")  # NCHW→NHWC is the storage
            return
        x = self.as_onnx(node.input[0])
        if perm == list(range(r)):
            self.output_site(node, self.emit(node.output[0], "identity", [x]), "onnx")
        else:
            self.output_site(node, self.emit(node.output[0], "transpose", [x], perm=tuple(p - 1 for p in perm[1:])), "onnx")

    def op_Concat(self, node, a):
        ins = [i for i in node.input if i]
        if len(ins) == 2 and ins[0] in self.batched and ins[1] in self.tensors:  # a class token put first
            token, x = self.batched[ins[0]], self.as_onnx(ins[1])
            if int(a["axis"]) % self.rank(ins[1]) != 1 or token.shape[1:] != self.shapes[x][1:]:
                self.fail(node, f"a broadcast constant of shape {token.shape} is concatenated with {('N', *self.shapes[x])} "
                                f"along axis {a['axis']}; only a token put before the sequence (axis 1) is supported")
            self.output_site(node, self.emit(node.output[0], "prepend", [x], {"token": token}), "onnx")
            return
        if any(i in self.batched for i in ins):
            self.fail(node, "a constant broadcast to the batch is concatenated other than as a leading token")
        if any(i in self.const for i in ins):
            self.fail(node, "concatenating constants with computed tensors is not supported")
        r = self.rank(ins[0])
        axis = int(a["axis"]) % r
        if axis == 0:
            self.fail(node, "concatenation along the batch axis is not supported")
        if r == 4 and all(self.tensors[i][1] == "nhwc" for i in ins):
            xs, axis, layout = [self.tensors[i][0] for i in ins], _ONNX_AXIS_IN_NHWC[axis], "nhwc"
        else:
            xs, layout = [self.as_onnx(i) for i in ins], "onnx"
        self.output_site(node, self.emit(node.output[0], "concat", xs, axis=axis), layout)

    def op_Pad(self, node, a):
        r = self.rank(node.input[0])
        if self.opset < 11:
            pads, value = [int(v) for v in a["pads"]], float(a.get("value", 0.0))
        else:
            pads = [int(v) for v in self.get_const(node.input[1], node, "pads")]
            cv = self.optional(node, 2)
            value = 0.0 if cv is None else float(self.get_const(cv, node, "constant_value"))
            axes_in = self.optional(node, 3)
            if axes_in is not None:
                axes = [int(v) % r for v in self.get_const(axes_in, node, "axes")]
                full = [0] * (2 * r)
                for j, ax in enumerate(axes):
                    full[ax], full[ax + r] = pads[j], pads[j + len(axes)]
                pads = full
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode not in ("constant", "reflect", "edge", "wrap"):
            self.fail(node, f"pad mode {mode!r} is not supported")
        pairs = [(pads[i], pads[i + r]) for i in range(r)]
        if pairs[0] != (0, 0):
            self.fail(node, f"padding the batch axis ({pairs[0]}) is not supported")
        if any(v < 0 for v in pads):
            self.fail(node, f"negative pads (cropping) {pads} are not supported")
        name, layout = self.tensors[node.input[0]]
        per = pairs[1:]
        if layout == "nhwc":
            per = [per[i] for i in _NCHW_TO_NHWC]
        attrs = {"mode": mode} if mode != "constant" else {"value": value}
        self.output_site(node, self.emit(node.output[0], "pad", [name], pads=tuple(per), **attrs), layout)

    def op_LayerNormalization(self, node, a):
        x = self.as_onnx(node.input[0])
        r = self.rank(node.input[0])
        if int(a.get("axis", -1)) % r != r - 1:
            self.fail(node, f"LayerNormalization over axes {int(a.get('axis', -1)) % r}..{r - 1}; only the last axis is supported")
        if len(node.output) > 1 and any(node.output[1:]):
            self.fail(node, "the mean / inverse-std outputs of LayerNormalization are used; only the normalised output is supported")
        width = self.shapes[x][-1]
        scale = np.broadcast_to(self.get_const(node.input[1], node, "scale"), (width,)).astype(np.float32)
        b = self.optional(node, 2)
        p = {"scale": scale, "bias": np.zeros(width, np.float32) if b is None else
             np.broadcast_to(self.get_const(b, node, "bias"), (width,)).astype(np.float32)}
        self.output_site(node, self.emit(node.output[0], "layernorm", [x], p, eps=float(a.get("epsilon", 1e-5))), "onnx")

    def op_Gather(self, node, a):
        data, idx = node.input[0], node.input[1]
        axis = int(a.get("axis", 0))
        if data in self.const and idx in self.tensors:  # an embedding table looked up by token ids
            table = np.asarray(self.const[data], np.float32)
            if axis % table.ndim != 0 or table.ndim != 2:
                self.fail(node, f"a lookup into a constant of shape {table.shape} along axis {axis}; only a 2-D table "
                                f"indexed along axis 0 (an embedding) is supported")
            self.output_site(node, self.emit(node.output[0], "embed", [self.as_onnx(idx)], {"table": table}), "onnx")
            return
        if idx in self.const and np.ndim(self.const[idx]) == 0:  # one position of a computed tensor
            r = self.rank(data)
            axis %= r
            if axis == 0:
                self.fail(node, "gathering along the batch axis is not supported")
            self.output_site(node, self.emit(node.output[0], "take", [self.as_onnx(data)], axis=axis - 1,
                                             index=int(self.const[idx]) % self.onnx_shape(data)[axis - 1]), "onnx")
            return
        self.fail(node, "only an embedding lookup (constant table, computed ids) or one constant index of a computed tensor is supported")

    def op_Cast(self, node, a):
        # Values stay float32 inside jaxrepair: a cast to an integer type marks token ids (read by embed,
        # which casts them itself); any other cast of a computed tensor is the identity.
        from onnx import helper

        to = helper.tensor_dtype_to_np_dtype(int(a["to"]))
        if np.issubdtype(to, np.integer) and not self.integer_input:
            todo, ends = [node.output[0]], []
            while todo:  # follow Clips of the ids down to what reads them
                t = todo.pop()
                for n in self.model.graph.node:
                    if t in n.input:
                        (todo.append(n.output[0]) if n.op_type == "Clip" else ends.append(n.op_type))
            if not ends or any(e != "Gather" for e in ends):
                self.fail(node, f"a cast of a computed tensor to {to} feeds {ends}; only ids for an embedding lookup are supported")
        self._unary(node, "identity")

    def op_Equal(self, node, a):
        # Only Equal(token ids, pad id) feeding a padding mask (Where(is_pad[keys], lowest, scores)).
        t, c = node.input
        if t in self.const:
            t, c = c, t
        if c not in self.const or np.size(self.const[c]) != 1 or self.tensors[t][0] != INPUT:
            self.fail(node, "Equal of computed tensors is supported only as the padding test of the model's token ids")
        self.pad_marks[node.output[0]] = (t, float(np.reshape(self.const[c], ())))

    def op_IsNaN(self, node, a):
        # Only as Where(IsNaN(t), c, t) (torch's guard after a softmax): recorded, emitted by Where.
        self.isnan = getattr(self, "isnan", {})
        self.isnan[node.output[0]] = node.input[0]

    def op_Pow(self, node, a):
        e = self.get_const(node.input[1], node, "the exponent")
        if np.size(e) != 1:
            self.fail(node, f"only a scalar exponent is supported, got shape {np.shape(e)}")
        self._unary(node, "pow", exponent=float(np.reshape(e, ())))

    def op_Split(self, node, a):
        x = node.input[0]
        self.need_unmerged(x, node)
        r = self.rank(x)
        axis = int(a.get("axis", 0)) % r
        if axis == 0:
            self.fail(node, "splitting the batch axis is not supported")
        size = self.onnx_shape(x)[axis - 1]
        sizes = self.optional(node, 1)
        if sizes is not None:
            sizes = [int(v) for v in self.get_const(sizes, node, "split")]
        elif "split" in a:
            sizes = [int(v) for v in a["split"]]
        else:
            n = int(a.get("num_outputs", len(node.output)))
            step = -(-size // n)
            sizes = [min(step, size - i * step) for i in range(n)]
        if sum(sizes) != size or len(sizes) != len(node.output):
            self.fail(node, f"split sizes {sizes} do not cover the {size} values of axis {axis}")
        name = self.as_onnx(x)
        start = 0
        for out, n in zip(node.output, sizes):
            self.tensors[out] = (self.emit(out, "slice", [name], axis=axis - 1, start=start, stop=start + n), "onnx")
            self.onnx_sites[self.tensors[out][0]] = out
            start += n

    def op_Where(self, node, a):
        cond, x, y = node.input
        if cond in self.pad_marks and x in self.const and y in self.tensors:  # a padding mask
            ids, pad = self.pad_marks[cond]
            if np.size(self.const[x]) != 1 or float(np.reshape(self.const[x], ())) > -1e9:
                self.fail(node, "a padding mask must fill with a value <= -1e9")
            self.output_site(node, self.emit(node.output[0], "key_mask", [self.as_onnx(y), self.as_onnx(ids)], pad=int(pad)), "onnx")
            return
        nan = getattr(self, "isnan", {})
        if cond in nan and nan[cond] == y and x in self.const and np.size(self.const[x]) == 1:
            self._unary(_Renamed(node, [y]), "nan_to_num", value=float(np.reshape(self.const[x], ())))
            return
        if cond not in self.const or y not in self.const or x not in self.tensors:
            self.fail(node, "only Where(constant mask, computed scores, constant fill) — an attention mask — is supported")
        mask, fill = np.asarray(self.const[cond], bool), np.asarray(self.const[y])
        shape = self.onnx_shape(x)
        q, k = shape[-2:] if len(shape) >= 2 else (0, 0)
        causal = np.arange(k)[None, :] <= np.arange(q)[:, None] + (k - q)
        full = np.broadcast_to(mask, (1, *shape)) if mask.ndim <= len(shape) + 1 else None
        if (full is None or fill.size != 1 or float(fill) > -1e9 or not (full == causal).all()):
            self.fail(node, "only a causal attention mask (keep key <= query, fill <= -1e9) is supported")
        self.output_site(node, self.emit(node.output[0], "causal_mask", [self.as_onnx(x)]), "onnx")

    def op_Expand(self, node, a):
        self.fail(node, "only a constant broadcast along the batch axis (a class token) is supported")

    def op_Squeeze(self, node, a):
        x = self.as_onnx(node.input[0])
        per = self.shapes[x]
        r = len(per) + 1
        axes = self.axes_arg(node, a)
        if axes is None:
            axes = [i + 1 for i, s in enumerate(per) if s == 1]
        axes = sorted({ax % r for ax in axes})
        if 0 in axes:
            self.fail(node, "squeezing the batch axis is not supported")
        bad = [ax for ax in axes if per[ax - 1] != 1]
        if bad:
            self.fail(node, f"cannot squeeze axes {bad} of size {[per[ax - 1] for ax in bad]}")
        out = tuple(s for i, s in enumerate(per, start=1) if i not in axes)
        self.output_site(node, self.emit(node.output[0], "reshape", [x], shape=out), "onnx")

    def op_Unsqueeze(self, node, a):
        if node.input[0] in self.pad_marks:  # the padding test broadcast over heads and queries
            self.pad_marks[node.output[0]] = self.pad_marks[node.input[0]]
            return
        x = self.as_onnx(node.input[0])
        per = list(self.shapes[x])
        axes = self.axes_arg(node, a)
        r = len(per) + 1 + len(axes)
        axes = sorted(ax % r for ax in axes)
        if 0 in axes:
            self.fail(node, "inserting an axis before the batch axis is not supported")
        full = ["N", *per]
        for ax in axes:
            full.insert(ax, 1)
        self.output_site(node, self.emit(node.output[0], "reshape", [x], shape=tuple(full[1:])), "onnx")


_GELU_PARTS = frozenset({"add", "sub", "mul", "div", "erf", "tanh", "pow"})


def _fuse_gelu(nodes: tuple, params: dict) -> tuple:
    """Replaces element-wise chains that compute GELU — torch's decompositions ``0.5·x·(1 + erf(x/√2))``
    and ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`` — by one ``gelu`` node (keeping the chain's last
    name), so an imported transformer's MLP neurons are post-activation sites. A chain is recognised by
    value: every node of it reads one tensor ``x`` (or another node of it, or a constant), and it equals
    GELU on a grid of ``x`` to 1e-6."""
    from jaxrepair.models import run_op

    by = {n.name: n for n in nodes}
    z = jnp.linspace(-6.0, 6.0, 121)
    replaced: dict[str, Node] = {}
    for end in nodes:
        if end.op != "mul" or len(end.inputs) != 2:
            continue
        members, leaves, todo = {}, set(), [end.name]
        while todo and len(members) <= 9:
            name = todo.pop()
            n = by.get(name)
            if n is None or name in members:
                leaves.add(name) if n is None else None
                continue
            if n.op not in _GELU_PARTS or (len(n.inputs) == 2 and n.op == "pow"):
                leaves.add(name)
                continue
            if len(n.inputs) == 1 and n.op in ("add", "sub", "mul", "div", "pow") and np.size(params.get(name, {}).get("value", 0)) != 1:
                leaves.add(name)
                continue
            members[name] = n
            todo.extend(n.inputs)
        leaves -= set(members)
        if len(leaves) != 1 or not 4 <= len(members) <= 9:
            continue
        (x,) = leaves
        env = {x: z}
        order = [n for n in nodes if n.name in members]
        try:
            for n in order:
                env[n.name] = run_op(n.op, params.get(n.name, {}), [env[i] for i in n.inputs], n.attr)
        except (KeyError, TypeError, ValueError):
            continue
        got = np.asarray(env[end.name])
        for approx in ("none", "tanh"):
            if got.shape == z.shape and np.allclose(got, np.asarray(jax.nn.gelu(z, approximate=approx == "tanh")), atol=1e-6):
                replaced[end.name] = Node.make(end.name, "gelu", (x,), approximate=approx)
                break
    return tuple(replaced.get(n.name, n) for n in nodes)


def _reachable(graph: Graph) -> set[str]:
    need, todo = set(), [graph.output]
    by_name = {n.name: n for n in graph.nodes}
    while todo:
        n = todo.pop()
        if n in need or n == INPUT:
            continue
        need.add(n)
        todo.extend(by_name[n].inputs)
    return need


def from_onnx(source: Any, *, input_shape=None, output: str | None = None) -> Network:
    """Converts an ONNX model (path, bytes or ``onnx.ModelProto``) into a :class:`Network`.

    Args:
      input_shape: per-example input shape, for models whose input has dynamic non-batch axes.
      output: which graph output (or intermediate tensor) becomes the model output, when there are several.

    Raises:
      ConversionError: unsupported operator (named, with its node, opset and the supported list),
        malformed file, unresolvable dynamic shape, non-float input.
    """
    model, where = load_onnx_model(source)
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
    return _Converter(model, where, input_shape=input_shape, output=output).convert()
