"""PyTorch → jaxrepair: a live ``torch.nn.Module`` (through ONNX export), or a plain state dict /
safetensors / ``.npz`` file of a sequential architecture described by a spec.

A state dict is matched to the spec layer by layer: the parameter groups (keys sharing a prefix,
``0.weight``/``0.bias``, ``fc1.weight``/...) in file order go to the spec's parametric layers in
order, with their shapes checked. The spec's layers are PyTorch's own names with their keyword
arguments, e.g. ``["Conv2d(padding=1)", "ReLU", "MaxPool2d(2)", "Flatten", "Linear", "ReLU", "Linear"]``.
The model is assembled as an ONNX graph and converted like any ONNX file, so it exports back.

``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import ast
import io
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxrepair.convert._onnx_import import ConversionError, from_onnx
from jaxrepair.models import Network

_SPEC = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(?:\((.*)\))?\s*$")

#: layer → (positional argument names, parameter names in the state dict).
LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Linear": ((), ("weight", "bias")),
    "Conv2d": ((), ("weight", "bias")),
    "BatchNorm1d": ((), ("weight", "bias", "running_mean", "running_var")),
    "BatchNorm2d": ((), ("weight", "bias", "running_mean", "running_var")),
    "ReLU": ((), ()),
    "LeakyReLU": (("negative_slope",), ()),
    "Sigmoid": ((), ()),
    "Tanh": ((), ()),
    "Softmax": (("dim",), ()),
    "Flatten": ((), ()),
    "MaxPool2d": (("kernel_size", "stride", "padding"), ()),
    "AvgPool2d": (("kernel_size", "stride", "padding"), ()),
    "AdaptiveAvgPool2d": (("output_size",), ()),
    "Dropout": (("p",), ()),
    "Identity": ((), ()),
}


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("this needs PyTorch: pip install torch (CPU build is enough)") from None
    return torch


def from_torch(module, example_input, *, opset: int = 17, dynamo: bool | None = None, **kw) -> Network:
    """Converts a live ``torch.nn.Module`` by exporting it to ONNX in memory (eval mode).

    ``example_input`` fixes the per-example shape (its batch size does not matter). By default the
    TorchScript exporter is used where this torch has it, else the ``torch.export`` one.
    """
    torch = _torch()
    was_training = module.training
    module.eval()
    x = torch.as_tensor(example_input, dtype=torch.float32)
    buf = io.BytesIO()
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not dynamo:
                try:
                    torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"], output_names=["output"])
                except (TypeError, RuntimeError, AttributeError):
                    if dynamo is False:
                        raise
                    buf = io.BytesIO()
                    dynamo = True
            if dynamo:
                prog = torch.onnx.export(module, (x,), dynamo=True, opset_version=opset, input_names=["input"], output_names=["output"])
                buf.write(prog.model_proto.SerializeToString())
    finally:
        module.train(was_training)
    net = from_onnx(buf.getvalue(), **kw)
    net.meta["source"] = f"torch:{type(module).__name__}"
    net.meta["format"] = "torch"
    return net


def load_state_dict(source) -> dict[str, np.ndarray]:
    """A state dict as numpy arrays, from a mapping or a ``.pt``/``.pth``/``.safetensors``/``.npz`` file;
    every floating-point tensor must be finite (the error names the tensor)."""
    out = _read_state_dict(source)
    for k, v in out.items():
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            raise ConversionError(f"{source if not isinstance(source, Mapping) else 'the state dict'}: tensor {k!r} "
                                  f"holds {int(np.size(v) - np.isfinite(v).sum())} NaN/inf value(s)")
    return out


def _read_state_dict(source) -> dict[str, np.ndarray]:
    if isinstance(source, Mapping):
        out = {}
        for k, v in source.items():
            if hasattr(v, "detach"):
                v = v.detach().cpu().numpy()
            out[str(k)] = np.asarray(v)
        return out
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such state-dict file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ImportError("reading .safetensors needs the 'safetensors' package: pip install safetensors") from None
        try:
            return dict(load_file(str(path)))
        except Exception as e:
            raise ConversionError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:
            raise ConversionError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        torch = _torch()
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConversionError(
                f"{path}: cannot be loaded as weights only ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                f"jaxrepair never unpickles code — save model.state_dict(), not the model object"
            ) from None
        if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a state dict")
        return _read_state_dict(obj)
    raise ConversionError(f"{path}: unknown state-dict format {suffix!r} (use .pt, .pth, .safetensors or .npz)")


def parse_spec(spec: Sequence[str] | str) -> list[tuple[str, dict]]:
    """``"Conv2d(padding=1)"`` → ``("Conv2d", {"padding": 1})``; literals only, nothing is evaluated."""
    if isinstance(spec, str):
        spec = [s for s in re.split(r",\s*(?![^()]*\))", spec) if s.strip()]
    out = []
    for item in spec:
        m = _SPEC.match(item)
        if not m or m.group(1) not in LAYERS:
            raise ValueError(f"spec layer {item!r} is not understood; supported layers: {', '.join(LAYERS)}")
        name, args = m.group(1), m.group(2) or ""
        kwargs: dict[str, Any] = {}
        if args.strip():
            try:
                call = ast.parse(f"f({args})", mode="eval").body
                positional = [ast.literal_eval(a) for a in call.args]
                kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            except (SyntaxError, ValueError) as e:
                raise ValueError(f"spec layer {item!r}: arguments must be literals ({e})") from None
            names = LAYERS[name][0]
            if len(positional) > len(names):
                raise ValueError(f"spec layer {item!r}: too many positional arguments (takes {names})")
            kwargs.update(zip(names, positional))
        out.append((name, kwargs))
    return out


def _groups(state: dict[str, np.ndarray]) -> list[tuple[str, dict[str, np.ndarray]]]:
    groups: dict[str, dict[str, np.ndarray]] = {}
    for k, v in state.items():
        prefix, _, leaf = k.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        groups.setdefault(prefix, {})[leaf] = v
    return list(groups.items())


def _pair(v, default=None):
    v = default if v is None else v
    return [int(v), int(v)] if np.ndim(v) == 0 else [int(x) for x in v]


def from_state_dict(source, spec, input_shape: Sequence[int], *, opset: int = 17) -> Network:
    """Builds a network from a sequential ``spec`` and a state dict (mapping or weights-only file).

    ``input_shape`` is per example, in PyTorch's layout (``(C, H, W)`` for images, ``(F,)`` for tables).
    """
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError("from_state_dict assembles an ONNX graph: pip install onnx") from None
    layers = parse_spec(spec)
    groups = _groups(load_state_dict(source))
    where = str(source) if not isinstance(source, Mapping) else "<state dict>"
    nodes, inits = [], []
    cur, shape, gi = "input", [int(s) for s in input_shape], 0

    def init(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    for li, (kind, kw) in enumerate(layers):
        out = f"{li}.{kind}"
        pnames = LAYERS[kind][1]
        p = {}
        if pnames:
            if gi >= len(groups):
                raise ConversionError(f"{where}: spec layer {li} ({kind}) has no parameters left in the state dict")
            prefix, p = groups[gi]
            gi += 1
            missing = [n for n in pnames if n not in p and n != "bias"]
            if missing:
                raise ConversionError(f"{where}: spec layer {li} ({kind}) was matched to {prefix!r}, which lacks {missing} (it has {sorted(p)})")
            out = prefix or out
        if kind == "Linear":
            w = p["weight"]
            if len(shape) != 1 or w.ndim != 2 or w.shape[1] != shape[0]:
                raise ConversionError(f"{where}: layer {out!r} (Linear) has weight {w.shape} but its input is {tuple(shape)}")
            ins = [cur, init(f"{out}.weight", w)] + ([init(f"{out}.bias", p["bias"])] if "bias" in p else [])
            nodes.append(helper.make_node("Gemm", ins, [out], name=out, transB=1))
            shape = [w.shape[0]]
        elif kind == "Conv2d":
            w = p["weight"]
            groups_ = int(kw.get("groups", 1))
            if len(shape) != 3 or w.ndim != 4 or w.shape[1] * groups_ != shape[0]:
                raise ConversionError(f"{where}: layer {out!r} (Conv2d) has weight {w.shape} but its input is {tuple(shape)}")
            s, d = _pair(kw.get("stride"), 1), _pair(kw.get("dilation"), 1)
            pad = kw.get("padding", 0)
            if isinstance(pad, str):
                raise ConversionError(f"{where}: layer {out!r}: string padding {pad!r} is not supported; give integers")
            pd = _pair(pad)
            ins = [cur, init(f"{out}.weight", w)] + ([init(f"{out}.bias", p["bias"])] if "bias" in p else [])
            nodes.append(helper.make_node("Conv", ins, [out], name=out, strides=s, dilations=d, pads=pd + pd, group=groups_,
                                          kernel_shape=list(w.shape[2:])))
            hw = [(shape[1 + i] + 2 * pd[i] - d[i] * (w.shape[2 + i] - 1) - 1) // s[i] + 1 for i in range(2)]
            shape = [w.shape[0], *hw]
        elif kind in ("BatchNorm1d", "BatchNorm2d"):
            want = 1 if kind == "BatchNorm1d" else 3
            if len(shape) != want or p["running_mean"].shape[0] != shape[0]:
                raise ConversionError(f"{where}: layer {out!r} ({kind}) has {p['running_mean'].shape[0]} features but its input is {tuple(shape)}")
            ins = [cur] + [init(f"{out}.{n}", p[n]) for n in ("weight", "bias", "running_mean", "running_var")]
            nodes.append(helper.make_node("BatchNormalization", ins, [out], name=out, epsilon=float(kw.get("eps", 1e-5))))
        elif kind in ("ReLU", "Sigmoid", "Tanh", "Identity", "Dropout"):
            op = {"Dropout": "Identity"}.get(kind, kind.replace("ReLU", "Relu"))
            nodes.append(helper.make_node(op, [cur], [out], name=out))
        elif kind == "LeakyReLU":
            nodes.append(helper.make_node("LeakyRelu", [cur], [out], name=out, alpha=float(kw.get("negative_slope", 0.01))))
        elif kind == "Softmax":
            nodes.append(helper.make_node("Softmax", [cur], [out], name=out, axis=int(kw.get("dim", -1))))
        elif kind == "Flatten":
            nodes.append(helper.make_node("Flatten", [cur], [out], name=out, axis=1))
            shape = [math.prod(shape)]
        elif kind in ("MaxPool2d", "AvgPool2d"):
            if len(shape) != 3:
                raise ConversionError(f"{where}: layer {li} ({kind}) needs a (C, H, W) input, got {tuple(shape)}")
            k = _pair(kw["kernel_size"])
            s = _pair(kw.get("stride"), kw["kernel_size"])
            pd = _pair(kw.get("padding"), 0)
            attrs = dict(kernel_shape=k, strides=s, pads=pd + pd)
            if kind == "AvgPool2d":
                attrs["count_include_pad"] = int(kw.get("count_include_pad", True))
            if kw.get("ceil_mode"):
                raise ConversionError(f"{where}: layer {li} ({kind}): ceil_mode=True is not supported from a spec")
            nodes.append(helper.make_node("MaxPool" if kind == "MaxPool2d" else "AveragePool", [cur], [out], name=out, **attrs))
            shape = [shape[0]] + [(shape[1 + i] + 2 * pd[i] - k[i]) // s[i] + 1 for i in range(2)]
        elif kind == "AdaptiveAvgPool2d":
            if _pair(kw.get("output_size", 1)) != [1, 1]:
                raise ConversionError(f"{where}: layer {li}: only AdaptiveAvgPool2d(1) (global average pooling) is supported")
            nodes.append(helper.make_node("GlobalAveragePool", [cur], [out], name=out))
            shape = [shape[0], 1, 1]
        cur = out
    if gi != len(groups):
        raise ConversionError(
            f"{where}: the spec uses {gi} parameter groups but the state dict has {len(groups)}; "
            f"unused: {[g for g, _ in groups[gi:]]}"
        )
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *[int(s) for s in input_shape]])
    y = helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["N", *shape])
    model = helper.make_model(helper.make_graph(nodes, "state_dict", [x], [y], inits), opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)
    net = from_onnx(model)
    net.meta.update(source=where, format="torch-state-dict", spec=[f"{k}({', '.join(f'{a}={v!r}' for a, v in kw.items())})" for k, kw in layers])
    return net
