"""ACAS Xu: the ``.nnet`` reader and the 45 bundled networks (Julian et al.; Katz et al., CAV 2017).

A ``.nnet`` file becomes a :class:`~jaxrepair.models.Network` whose graph reproduces the file's
semantics exactly: inputs clipped to ``[min, max]`` (``input.clip``), normalised as
``(x − mean) / range`` (``input.norm``), ReLU hidden layers ``layer{i}.pre``/``layer{i}``, a linear
``logits`` layer and the output de-normalisation ``scores = logits·range_out + mean_out``.
The advisory is the *minimum* score: 0 COC, 1 weak left, 2 weak right, 3 strong left, 4 strong right.
"""

from __future__ import annotations

import lzma
import os
from importlib import resources
from pathlib import Path

import numpy as np

from jaxrepair.models import Graph, Network, Node

ADVISORIES = ("COC", "WL", "WR", "SL", "SR")
INPUTS = ("rho", "theta", "psi", "v_own", "v_int")


def _parse_nnet(text: str, source: str) -> dict:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("//")]

    def nums(line, what):
        try:
            return [float(v) for v in line.rstrip(",").split(",") if v.strip() != ""]
        except ValueError:
            raise ValueError(f"{source}: malformed {what} line {line[:60]!r}") from None

    if len(lines) < 8:
        raise ValueError(f"{source}: truncated .nnet file ({len(lines)} non-comment lines)")
    n_layers, n_in, n_out, _ = (int(v) for v in nums(lines[0], "header")[:4])
    sizes = [int(v) for v in nums(lines[1], "layer sizes")]
    if len(sizes) != n_layers + 1 or sizes[0] != n_in or sizes[-1] != n_out:
        raise ValueError(f"{source}: layer sizes {sizes} disagree with the header ({n_layers} layers, {n_in}→{n_out})")
    mins, maxs = nums(lines[3], "input minimums"), nums(lines[4], "input maximums")
    means, ranges = nums(lines[5], "means"), nums(lines[6], "ranges")
    if len(mins) != n_in or len(maxs) != n_in or len(means) != n_in + 1 or len(ranges) != n_in + 1:
        raise ValueError(f"{source}: normalisation lines have the wrong lengths")
    rows = lines[7:]
    layers, pos = [], 0
    for k in range(n_layers):
        fan_in, fan_out = sizes[k], sizes[k + 1]
        need = fan_out * 2
        if pos + need > len(rows):
            raise ValueError(f"{source}: truncated in layer {k + 1} (needs {need} more lines)")
        w = np.array([nums(r, f"layer {k + 1} weight")[:fan_in] for r in rows[pos : pos + fan_out]], np.float64)
        b = np.array([nums(r, f"layer {k + 1} bias")[0] for r in rows[pos + fan_out : pos + need]], np.float64)
        if w.shape != (fan_out, fan_in):
            raise ValueError(f"{source}: layer {k + 1} weights have shape {w.shape}, expected {(fan_out, fan_in)}")
        layers.append((w, b))
        pos += need
    return {"sizes": sizes, "mins": mins, "maxs": maxs, "means": means, "ranges": ranges, "layers": layers}


def network_from_nnet(d: dict, name: str = "nnet") -> Network:
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


def read_nnet(path: str | os.PathLike) -> Network:
    """Reads a ``.nnet`` file (plain or ``.xz``) into a Network."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such .nnet file")
    raw = path.read_bytes()
    text = (lzma.decompress(raw) if path.suffix == ".xz" else raw).decode("utf-8", errors="replace")
    return network_from_nnet(_parse_nnet(text, str(path)), path.name)


def nnet_arrays(text: str, source: str = "<nnet>") -> dict:
    return _parse_nnet(text, source)


def acasxu_text(i: int, j: int) -> str:
    if not (1 <= i <= 5 and 1 <= j <= 9):
        raise ValueError(f"ACAS Xu networks are N_{{i,j}} with i in 1..5, j in 1..9; got ({i}, {j})")
    f = resources.files("jaxrepair.data") / "bundled" / "acasxu" / f"ACASXU_run2a_{i}_{j}_batch_2000.nnet.xz"
    return lzma.decompress(f.read_bytes()).decode()


def load_acasxu(i: int, j: int) -> Network:
    """The bundled network N_{i,j}."""
    text = acasxu_text(i, j)
    return network_from_nnet(_parse_nnet(text, f"N_{i},{j}"), f"ACASXU_run2a_{i}_{j}")
