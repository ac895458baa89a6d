"""The ``.nnet`` format (Reluplex/Marabou/NNV; the ACAS Xu files), read and written.

:func:`from_nnet` reads a file into a Network whose graph reproduces its semantics exactly: inputs
clipped to ``[min, max]`` (``input.clip``), normalised as ``(x − mean) / range`` (``input.norm``), ReLU
hidden layers ``layer{i}.pre``/``layer{i}``, a linear ``logits`` layer and the output
de-normalisation ``scores = logits·range_out + mean_out``.

``.nnet`` holds: layer sizes, per-input clipping bounds, input normalisation ``(x − mean)/range``,
dense layers with ReLU between them, a linear last layer and the output de-normalisation
``y·range + mean``. :func:`to_nnet` recognises that chain in a jaxrepair graph — optional ``clip``
→ optional ``standardize`` → (``dense`` → ``relu``)* → ``dense`` → optional ``denormalize`` — and
refuses anything else with the reason.
"""

from __future__ import annotations

import lzma
import os
from pathlib import Path

import numpy as np

from jaxrepair.models import INPUT, Graph, Network, Node, write_atomic

_BIG = 3.4028235e38


def parse_nnet(text: str, source: str) -> dict:
    """The arrays of a ``.nnet`` text: sizes, input bounds, normalisation, ``[(W [out, in], b)]`` per layer.

    Strict: every line must hold exactly the numbers the header implies, and nothing may follow the
    last layer; errors name the file and the line."""
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())
             if ln.strip() and not ln.lstrip().startswith("//")]

    def nums(item, what, count=None):
        no, line = item
        try:
            vals = [float(v) for v in line.rstrip(",").split(",")]
        except ValueError:
            raise ValueError(f"{source}, line {no}: malformed {what} line {line[:60]!r}") from None
        if count is not None and len(vals) != count:
            raise ValueError(f"{source}, line {no}: the {what} line has {len(vals)} value(s), expected {count}")
        bad = [v for v in vals if not np.isfinite(v)]
        if bad:
            raise ValueError(f"{source}, line {no}: the {what} line holds {bad[0]}, not a finite number")
        return vals

    def ints(item, what, count=None):
        vals = nums(item, what, count)
        if any(v != int(v) or v < 1 for v in vals):
            raise ValueError(f"{source}, line {item[0]}: the {what} must be positive integers, got {item[1][:60]!r}")
        return [int(v) for v in vals]

    if len(lines) < 8:
        raise ValueError(f"{source}: truncated .nnet file ({len(lines)} non-comment lines)")
    n_layers, n_in, n_out, _ = ints(lines[0], "header (layers, inputs, outputs, largest layer)", 4)
    sizes = ints(lines[1], "layer sizes", n_layers + 1)
    if sizes[0] != n_in or sizes[-1] != n_out:
        raise ValueError(f"{source}, line {lines[1][0]}: layer sizes {sizes} disagree with the header "
                         f"({n_layers} layers, {n_in} inputs -> {n_out} outputs)")
    mins, maxs = nums(lines[3], "input minimums", n_in), nums(lines[4], "input maximums", n_in)
    means, ranges = nums(lines[5], "means", n_in + 1), nums(lines[6], "ranges", n_in + 1)
    low = [i for i, (a, b) in enumerate(zip(mins, maxs)) if a > b]
    if low:
        raise ValueError(f"{source}, lines {lines[3][0]}-{lines[4][0]}: input {low[0]}'s minimum {mins[low[0]]} is above "
                         f"its maximum {maxs[low[0]]}")
    if any(r <= 0 for r in ranges):
        i = next(i for i, r in enumerate(ranges) if r <= 0)
        raise ValueError(f"{source}, line {lines[6][0]}: range {i} is {ranges[i]}; normalisation divides by it, so "
                         f"every range must be positive")
    rows = lines[7:]
    layers, pos = [], 0
    for k in range(n_layers):
        fan_in, fan_out = sizes[k], sizes[k + 1]
        need = fan_out * 2
        if pos + need > len(rows):
            raise ValueError(f"{source}: truncated in layer {k + 1} (it needs {need} lines, {len(rows) - pos} are left)")
        w = np.array([nums(r, f"layer {k + 1} weight", fan_in) for r in rows[pos : pos + fan_out]], np.float64)
        b = np.array([nums(r, f"layer {k + 1} bias", 1)[0] for r in rows[pos + fan_out : pos + need]], np.float64)
        layers.append((w, b))
        pos += need
    if pos != len(rows):
        raise ValueError(f"{source}, line {rows[pos][0]}: {len(rows) - pos} line(s) after the last layer; "
                         f"the header describes {n_layers} layers")
    return {"sizes": sizes, "mins": mins, "maxs": maxs, "means": means, "ranges": ranges, "layers": layers}


def network_from_nnet(d: dict, name: str = "nnet") -> Network:
    """A Network with the ``.nnet`` semantics: clip, normalise, ReLU layers, linear output, de-normalise."""
    n_in = d["sizes"][0]
    nodes = [Node.make("input.clip", "clip", "input", min=tuple(d["mins"]), max=tuple(d["maxs"])),
             Node.make("input.norm", "standardize", "input.clip")]
    params = {"input.norm": {"mean": np.array(d["means"][:n_in]), "var": np.array(d["ranges"][:n_in]) ** 2}}
    prev = "input.norm"
    for i, (w, b) in enumerate(d["layers"][:-1], start=1):
        nodes += [Node.make(f"layer{i}.pre", "dense", prev), Node.make(f"layer{i}", "relu", f"layer{i}.pre")]
        params[f"layer{i}.pre"] = {"kernel": w.T, "bias": b}
        prev = f"layer{i}"
    w, b = d["layers"][-1]
    nodes += [Node.make("logits", "dense", prev), Node.make("scores", "denormalize", "logits")]
    params["logits"] = {"kernel": w.T, "bias": b}
    params["scores"] = {"mean": np.array(d["means"][-1]), "var": np.array(d["ranges"][-1]) ** 2}
    return Network(Graph(tuple(nodes), (n_in,), "scores"), params, meta={"source": name, "format": "nnet"})


def from_nnet(path: str | os.PathLike) -> Network:
    """Reads a ``.nnet`` file (plain or ``.xz``) into a Network."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such .nnet file")
    raw = path.read_bytes()
    text = (lzma.decompress(raw) if path.suffix == ".xz" else raw).decode("utf-8", errors="replace")
    return network_from_nnet(parse_nnet(text, str(path)), path.name)


def _fmt(v) -> str:
    return f"{float(v):.10g}"


def _chain(model: Network):
    g = model.graph
    by_input: dict[str, list] = {}
    for n in g.nodes:
        for i in n.inputs:
            by_input.setdefault(i, []).append(n)
    chain, cur = [], INPUT
    while cur != g.output:
        nxt = by_input.get(cur, [])
        if len(nxt) != 1 or len(nxt[0].inputs) != 1:
            raise ValueError(f".nnet export needs a chain of single-input layers; {cur!r} feeds {[n.name for n in nxt]}")
        chain.append(nxt[0])
        cur = nxt[0].name
    return chain


def nnet_text(model: Network) -> str:
    """The ``.nnet`` text of a fully connected ReLU network (raises ``ValueError`` naming what does not fit)."""
    chain = _chain(model)
    params = {k: {n: np.asarray(v, np.float64) for n, v in p.items()} for k, p in model.params().items()}
    if len(model.input_shape) != 1:
        raise ValueError(f".nnet export needs a flat input; the model's input shape is {model.input_shape}")
    n_in = model.input_shape[0]
    mins, maxs = np.full(n_in, -_BIG), np.full(n_in, _BIG)
    means, ranges = np.zeros(n_in + 1), np.ones(n_in + 1)
    i = 0
    if i < len(chain) and chain[i].op == "clip":
        a = chain[i].attr
        if a.get("min") is not None:
            mins = np.broadcast_to(np.asarray(a["min"], np.float64), (n_in,)).copy()
        if a.get("max") is not None:
            maxs = np.broadcast_to(np.asarray(a["max"], np.float64), (n_in,)).copy()
        i += 1
    if i < len(chain) and chain[i].op == "standardize":
        p = params[chain[i].name]
        eps = chain[i].attr.get("eps", 1e-12)
        means[:n_in] = np.broadcast_to(p["mean"], (n_in,))
        ranges[:n_in] = np.sqrt(np.broadcast_to(p["var"], (n_in,)) + eps)
        i += 1
    layers = []
    while i < len(chain):
        n = chain[i]
        if n.op != "dense":
            raise ValueError(f".nnet export: node {n.name!r} is {n.op!r}; expected dense layers with ReLU between them")
        p = params[n.name]
        layers.append((p["kernel"].T, p.get("bias", np.zeros(p["kernel"].shape[1]))))
        i += 1
        if i < len(chain) and chain[i].op == "relu":
            i += 1
            if i == len(chain):
                raise ValueError(".nnet export: the last layer must be linear (the model ends in a ReLU)")
            continue
        break
    if i < len(chain) and chain[i].op == "denormalize":
        p = params[chain[i].name]
        if np.size(p["mean"]) != 1 or np.size(p["var"]) != 1:
            raise ValueError(".nnet export: the output de-normalisation must use one mean and range for all outputs")
        means[n_in], ranges[n_in] = float(np.ravel(p["mean"])[0]), float(np.sqrt(np.ravel(p["var"])[0]))
        i += 1
    if i != len(chain):
        raise ValueError(f".nnet export: node {chain[i].name!r} ({chain[i].op}) does not fit the .nnet layer chain")
    sizes = [n_in] + [w.shape[0] for w, _ in layers]
    out = [
        "// Neural network in .nnet format, written by jaxrepair",
        f"// source: {model.meta.get('source', 'jaxrepair')}",
        f"{len(layers)},{n_in},{sizes[-1]},{max(sizes)},",
        ",".join(str(s) for s in sizes) + ",",
        "0,",
        ",".join(_fmt(v) for v in mins) + ",",
        ",".join(_fmt(v) for v in maxs) + ",",
        ",".join(_fmt(v) for v in means) + ",",
        ",".join(_fmt(v) for v in ranges) + ",",
    ]
    for w, b in layers:
        out += [",".join(_fmt(v) for v in row) + "," for row in w]
        out += [_fmt(v) + "," for v in b]
    return "\n".join(out) + "\n"


def to_nnet(model: Network, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Writes a fully connected ReLU network as ``.nnet`` (never over an existing file unless asked)."""
    text = nnet_text(model)
    return write_atomic(Path(path), lambda f: f.write(text.encode()), overwrite=overwrite)
