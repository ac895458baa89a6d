"""Keras → jaxrepair, read straight from the file: Keras 3 ``.keras`` archives and ``.h5`` files.

Keras need not be installed: the architecture comes from the file's JSON config and the weights
from its HDF5 part (``h5py``), and no code stored in the file runs — a ``Lambda`` layer or a custom
class is refused by name. Keras computes images channels-last, as jaxrepair does, so kernels are
used as stored. Sequential and functional models (one input, one output, no shared layers) with
the layers in :data:`LAYERS` are supported. A layer with a fused activation becomes two sites:
``<layer>.pre`` (before) and ``<layer>`` (after).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from jaxrepair.convert._onnx_import import ConversionError
from jaxrepair.models import INPUT, Graph, Network, Node, check_finite, check_shapes, site_shapes

LAYERS = (
    "InputLayer", "Dense", "Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten",
    "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "Softmax", "Dropout", "Add", "Concatenate",
    "ZeroPadding2D",
)
_ACTIVATIONS = {"linear": None, "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax", "leaky_relu": "leaky_relu"}
_NO_WEIGHTS = {"InputLayer", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten", "Activation",
               "ReLU", "LeakyReLU", "Softmax", "Dropout", "Add", "Concatenate", "ZeroPadding2D"}


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading Keras files needs h5py: pip install 'jaxrepair[keras]' (or pip install h5py)") from None
    return h5py


def _snake(name: str) -> str:  # Keras' naming.to_snake_case
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def _read(path: Path):
    """(model config dict, {layer name: [arrays in creation order]})."""
    h5py = _h5py()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such Keras file")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                config = json.loads(z.read("config.json"))
                weights = z.read("model.weights.h5")
        except (KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise ConversionError(f"{path}: not a readable .keras archive ({type(e).__name__}: {e})") from None
        with h5py.File(io.BytesIO(weights), "r") as f:
            stored = {}
            group = f.get("layers")
            if group is not None:
                for key in group:
                    v = group[key].get("vars")
                    stored[key] = [np.asarray(v[str(i)]) for i in range(len(v))] if v is not None else []
        layers = config.get("config", {}).get("layers", [])
        skip_input = config.get("class_name") == "Sequential"
        out, used = {}, {}
        for layer in layers:
            if skip_input and layer["class_name"] == "InputLayer":
                continue
            base = _snake(layer["class_name"])
            key = base if base not in used else f"{base}_{used[base]}"
            used[base] = used.get(base, 0) + 1
            out[layer["config"]["name"]] = stored.get(key, [])
        return config, out
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ConversionError(f"{path}: neither a .keras archive nor a readable HDF5 file ({e})") from None
    with f:
        if "model_config" not in f.attrs:
            raise ConversionError(f"{path}: an HDF5 file without a model_config (weights only?); save the whole model")
        raw = f.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        mw = f["model_weights"] if "model_weights" in f else f
        out = {}
        for name in mw:
            g = mw[name]
            names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
            out[name] = [np.asarray(g[n]) for n in names]
        return config, out


def _inbound(layer) -> list[str]:
    nodes = layer.get("inbound_nodes", [])
    if not nodes:
        return []
    if len(nodes) > 1:
        raise ConversionError(f"layer {layer['config']['name']!r} is called more than once (shared layers are not supported)")
    node = nodes[0]
    refs = []
    if isinstance(node, dict):  # Keras 3
        def walk(v):
            if isinstance(v, dict) and v.get("class_name") == "__keras_tensor__":
                refs.append(v["config"]["keras_history"])
            elif isinstance(v, (list, tuple)):
                for x in v:
                    walk(x)
        walk(node.get("args", []))
    else:  # Keras 2: [[layer, node_index, tensor_index, kwargs], ...]
        refs = [r[:3] for r in node]
    for r in refs:
        if r[1] != 0 or r[2] != 0:
            raise ConversionError(f"layer {layer['config']['name']!r} reads a shared layer's output {r}; not supported")
    return [r[0] for r in refs]


def _input_shape(cfg: dict):
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key):
            return tuple(int(s) for s in cfg[key][1:])
    return None


class _Builder:
    def __init__(self, where: str, weights: dict):
        self.where, self.weights = where, weights
        self.nodes: list[Node] = []
        self.params: dict = {}
        self.bn_axes: list = []  # (layer, node, axis): checked against the shapes once the graph is built

    def fail(self, layer, msg):
        raise ConversionError(f"{self.where}: layer {layer['config'].get('name')!r} ({layer['class_name']}): {msg}")

    def add(self, name, op, inputs, params=None, **attrs):
        self.nodes.append(Node.make(name, op, tuple(inputs), **attrs))
        if params:
            self.params[name] = {k: np.asarray(v, np.float32) for k, v in params.items()}
        return name

    def activation(self, layer, name, x, act, alpha=None):
        if isinstance(act, dict):
            act = act.get("config", {}).get("name", act.get("class_name"))
        if act not in _ACTIVATIONS:
            self.fail(layer, f"activation {act!r} is not supported (supported: {sorted(_ACTIVATIONS)})")
        op = _ACTIVATIONS[act]
        if op is None:
            return self.add(name, "identity", [x]) if name != x else x
        attrs = {"alpha": 0.2 if alpha is None else alpha} if op == "leaky_relu" else {}
        return self.add(name, op, [x], **attrs)

    def layer(self, layer, inputs: list[str]) -> str:
        cls, cfg = layer["class_name"], layer["config"]
        name = cfg["name"]
        if cls not in LAYERS:
            self.fail(layer, f"unsupported Keras layer; supported: {', '.join(LAYERS)}")
        w = self.weights.get(name, [])
        if cls in _NO_WEIGHTS and w:
            self.fail(layer, f"unexpected weights {[a.shape for a in w]}")
        if cfg.get("data_format", "channels_last") != "channels_last":
            self.fail(layer, "only channels_last models are supported")
        x = inputs[0] if inputs else None
        act = cfg.get("activation", "linear")
        if cls in ("Dense", "Conv2D"):
            use_bias = cfg.get("use_bias", True)
            if len(w) != 1 + use_bias:
                self.fail(layer, f"expected {1 + use_bias} weight arrays, found {len(w)}")
            want = 2 if cls == "Dense" else 4
            if np.ndim(w[0]) != want or (use_bias and np.shape(w[1]) != (np.shape(w[0])[-1],)):
                self.fail(layer, f"kernel of shape {np.shape(w[0])}" + (f" with bias {np.shape(w[1])}" if use_bias else "")
                          + f"; a {cls} kernel has rank {want} and a bias of its last dimension")
            p = {"kernel": w[0]} | ({"bias": w[1]} if use_bias else {})
            linear = isinstance(act, str) and act == "linear"
            pre = name if linear else f"{name}.pre"
            if cls == "Dense":
                self.add(pre, "dense", [x], p)
            else:
                pad = cfg.get("padding", "valid").upper()
                if pad not in ("SAME", "VALID"):
                    self.fail(layer, f"padding {pad!r} is not supported")
                self.add(pre, "conv2d", [x], p, strides=tuple(cfg.get("strides", (1, 1))), padding=pad,
                         dilation=tuple(cfg.get("dilation_rate", (1, 1))), groups=int(cfg.get("groups", 1)))
            return self.activation(layer, name, pre, act) if pre != name else name
        if cls in ("MaxPooling2D", "AveragePooling2D"):
            pool = tuple(cfg.get("pool_size", (2, 2)))
            strides = tuple(cfg.get("strides") or pool)
            pad = cfg.get("padding", "valid").upper()
            return self.add(name, "maxpool" if cls == "MaxPooling2D" else "avgpool", [x], window=pool, strides=strides, padding=pad)
        if cls == "GlobalAveragePooling2D":
            return self.add(name, "global_avgpool", [x], keepdims=bool(cfg.get("keepdims", False)))
        if cls == "Flatten":
            return self.add(name, "flatten", [x])
        if cls == "BatchNormalization":
            axis = np.ravel(cfg.get("axis", -1))
            if len(axis) != 1:
                self.fail(layer, f"normalisation over several axes {list(axis)} is not supported")
            self.bn_axes.append((layer, name, int(axis[0])))
            scale, center = cfg.get("scale", True), cfg.get("center", True)
            if len(w) != 2 + scale + center:
                self.fail(layer, f"expected {2 + scale + center} weight arrays, found {len(w)}")
            i = 0
            gamma = w[i] if scale else np.ones_like(w[-2])
            i += scale
            beta = w[i] if center else np.zeros_like(w[-2])
            return self.add(name, "batchnorm", [x], {"scale": gamma, "bias": beta, "mean": w[-2], "var": w[-1]},
                            eps=float(cfg.get("epsilon", 1e-3)))
        if cls == "Activation":
            return self.activation(layer, name, x, cfg["activation"])
        if cls == "ReLU":
            if cfg.get("max_value") is not None or cfg.get("threshold", 0) or cfg.get("negative_slope", 0):
                self.fail(layer, "ReLU with max_value/threshold/negative_slope is not supported")
            return self.add(name, "relu", [x])
        if cls == "LeakyReLU":
            return self.add(name, "leaky_relu", [x], alpha=float(cfg.get("negative_slope", cfg.get("alpha", 0.3))))
        if cls == "Softmax":
            return self.add(name, "softmax", [x], axis=int(np.ravel(cfg.get("axis", -1))[0]))
        if cls == "Dropout":
            return self.add(name, "identity", [x])
        if cls == "Add":
            out = inputs[0]
            for i, y in enumerate(inputs[1:], start=1):
                out = self.add(name if i == len(inputs) - 1 else f"{name}.{i}", "add", [out, y])
            return out
        if cls == "Concatenate":
            return self.add(name, "concat", inputs, axis=int(cfg.get("axis", -1)))
        if cls == "ZeroPadding2D":
            pad = cfg.get("padding", (1, 1))
            pad = [(int(p), int(p)) if np.ndim(p) == 0 else tuple(int(v) for v in p) for p in (pad if np.ndim(pad) else (pad, pad))]
            return self.add(name, "pad", [x], pads=(pad[0], pad[1], (0, 0)))
        self.fail(layer, "not handled")  # pragma: no cover


def from_keras(path: str | os.PathLike) -> Network:
    """Reads a Keras ``.keras`` or ``.h5`` model (Sequential or functional) without running Keras."""
    path = Path(path)
    config, weights = _read(path)
    where = str(path)
    cls = config.get("class_name")
    if cls not in ("Sequential", "Functional", "Model"):
        raise ConversionError(f"{where}: top-level class {cls!r} is not a Sequential or functional model (subclassed models have no config)")
    layers = config["config"]["layers"]
    for layer in layers:
        if layer.get("class_name") in ("Sequential", "Functional", "Model"):
            raise ConversionError(f"{where}: nested model {layer['config'].get('name')!r} is not supported; flatten it first")
    b = _Builder(where, weights)
    if cls == "Sequential":
        shape = None
        if layers and layers[0]["class_name"] == "InputLayer":
            shape = _input_shape(layers[0]["config"])
            layers = layers[1:]
        shape = shape or _input_shape(config["config"]) or (layers and _input_shape(layers[0]["config"]))
        if not shape and layers:
            bc = layers[0].get("build_config", {}).get("input_shape")
            shape = tuple(int(s) for s in bc[1:]) if bc else None
        if not shape:
            raise ConversionError(f"{where}: the Sequential model has no input shape (build it with an Input first)")
        cur = INPUT
        for layer in layers:
            cur = b.layer(layer, [cur])
        output = cur
    else:
        ins = [l for l in layers if l["class_name"] == "InputLayer"]
        if len(ins) != 1:
            raise ConversionError(f"{where}: jaxrepair models take one input; this model has {len(ins)}")
        shape = _input_shape(ins[0]["config"])
        outs = config["config"].get("output_layers", [])
        if outs and isinstance(outs[0], str):
            outs = [outs]
        if len(outs) != 1:
            raise ConversionError(f"{where}: jaxrepair models have one output; this model has {len(outs)}")
        site = {ins[0]["config"]["name"]: INPUT}
        for layer in layers:
            if layer["class_name"] == "InputLayer":
                continue
            srcs = _inbound(layer)
            missing = [s for s in srcs if s not in site]
            if missing:
                raise ConversionError(f"{where}: layer {layer['config']['name']!r} reads {missing} before they are defined")
            site[layer["config"]["name"]] = b.layer(layer, [site[s] for s in srcs])
        output = site[outs[0][0]]
    if any(s is None or int(s) <= 0 for s in shape):
        raise ConversionError(f"{where}: the input shape {shape} has unknown dimensions")
    graph = Graph(tuple(b.nodes), tuple(int(s) for s in shape), output).validate()
    net = Network(graph, b.params, meta={"format": "keras", "source": where})
    try:
        check_shapes(graph, net.params(), f"{where}: ")
        check_finite(b.params, f"{where}: the weights of layer ")
    except ValueError as e:
        raise ConversionError(str(e)) from None
    shapes = site_shapes(graph, net.params())
    for layer, node, axis in b.bn_axes:
        rank = len(shapes[node]) + 1
        if axis % rank != rank - 1:
            b.fail(layer, f"normalisation axis {axis} is not the last (channel) axis of a rank-{rank} tensor")
    return net
