"""Fully connected ReLU networks → the ``.nnet`` format (Reluplex/Marabou/NNV; the ACAS Xu files).

``.nnet`` holds: layer sizes, per-input clipping bounds, input normalisation ``(x − mean)/range``,
dense layers with ReLU between them, a linear last layer and the output de-normalisation
``y·range + mean``. :func:`to_nnet` recognises that chain in a jaxrepair graph — optional ``clip``
→ optional ``standardize`` → (``dense`` → ``relu``)* → ``dense`` → optional ``denormalize`` — and
refuses anything else with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxrepair.models import INPUT, Network, write_atomic

_BIG = 3.4028235e38


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
