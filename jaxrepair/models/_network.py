"""The one model representation: a Flax NNX module wrapping a :class:`Graph`.

Hand-built, zoo and converted models are all :class:`Network`. Its parameters live in NNX
variables (``nnx.Param``; batch-norm statistics as ``nnx.BatchStat``) and :func:`functional`
splits them out into a plain dict so the model is a pure function
``apply(params, x, intervention=None) -> logits``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrepair.models._graph import INPUT, Graph, Node, Params, resume, run, site_shapes
from jaxrepair.models._ops import ACTIVATIONS, STAT_NAMES

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Apply:
    """``apply(params, x, intervention=None) -> output``: a hashable pure function of the graph."""

    graph: Graph

    def __call__(self, params: Params, x: jax.Array, intervention: Mapping | None = None) -> jax.Array:
        return run(self.graph, params, x, intervention)

    def sites(self, params: Params, x: jax.Array, intervention: Mapping | None = None) -> dict:
        """Every site's value: ``{site: [batch, *site_shape]}``."""
        return run(self.graph, params, x, intervention, all_sites=True)

    def resume(self, params: Params, env: Mapping, intervention=None, *, overrides=None) -> jax.Array:
        return resume(self.graph, params, env, intervention, overrides=overrides)


class Network(nnx.Module):
    """A feed-forward network given by a graph of named nodes. Every node output is a site."""

    def __init__(self, graph: Graph, params: Mapping[str, Mapping[str, Any]], *, meta: Mapping | None = None):
        graph.validate()
        self.graph = graph
        self.meta = dict(meta or {})
        self.weights = nnx.Dict(
            {
                node: nnx.Dict(
                    {
                        k: (nnx.BatchStat if k in STAT_NAMES else nnx.Param)(jnp.asarray(v, jnp.float32))
                        for k, v in p.items()
                    }
                )
                for node, p in params.items()
            }
        )

    def __call__(self, x: jax.Array, intervention: Mapping | None = None) -> jax.Array:
        return run(self.graph, self.params(), x, intervention)

    def params(self) -> Params:
        """The parameters as a plain ``{node: {name: array}}`` dict (batch statistics included)."""
        return nnx.to_pure_dict(nnx.state(self)).get("weights", {})  # a parameter-free graph has none

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.graph.input_shape

    def with_params(self, params: Params) -> "Network":
        """A new network with the same graph and ``params`` (e.g. a repaired set)."""
        return Network(self.graph, params, meta=self.meta)


def split(model: Network) -> tuple[Apply, Params, Params]:
    """Splits a network the NNX way — ``nnx.split(model, nnx.Param, nnx.BatchStat)`` — into a pure
    function, its trainable parameters and its batch statistics (normalisation constants included).

    Repairs and fine-tuning change only the first; ``apply`` takes :func:`merge` of both.

    >>> import jaxrepair as jr, jax
    >>> apply, params, stats = jr.models.split(jr.models.mlp([3, 4, 2], key=jax.random.key(0)))
    >>> sorted(params), stats
    (['layer1.pre', 'logits'], {})
    """
    _, p, s = nnx.split(model, nnx.Param, nnx.BatchStat)
    params = {k: v for k, v in nnx.to_pure_dict(p).get("weights", {}).items() if v}
    stats = {k: v for k, v in nnx.to_pure_dict(s).get("weights", {}).items() if v}
    return Apply(model.graph), params, stats


def merge(params: Params, stats: Params) -> Params:
    """One ``{node: {name: array}}`` dict from trainable parameters and batch statistics."""
    out = {k: dict(v) for k, v in params.items()}
    for k, v in stats.items():
        out.setdefault(k, {}).update(v)
    return out


def functional(model: Network) -> tuple[Apply, Params]:
    """Splits a network into a pure function and all its arrays (parameters and batch statistics).

    >>> import jaxrepair as jr, jax
    >>> apply, params = jr.functional(jr.models.mlp([3, 4, 2], key=jax.random.key(0)))
    >>> apply(params, jax.numpy.ones((5, 3))).shape
    (5, 2)
    """
    _, state = nnx.split(model)
    return Apply(model.graph), nnx.to_pure_dict(state).get("weights", {})


class SiteInfo(NamedTuple):
    name: str
    shape: tuple[int, ...]
    op: str
    kind: str  # "input" | "pre-activation" | "post-activation" | "hidden" | "attention-heads" | "attention-weights" | "output"

    @property
    def num_units(self) -> int:
        return int(np.prod(self.shape))

    @property
    def per_channel(self) -> bool:
        """Whether localisation's units are this site's channels (see :func:`channel_units`)."""
        return channel_units(self.shape)

    @property
    def units(self) -> int:
        """How many units localisation ranks here: channels, or every value of a flat site."""
        return int(self.shape[-1]) if self.per_channel else self.num_units


def channel_units(shape) -> bool:
    """The default unit of a site: a site with more than one axis — a conv feature map [h, w, c], a
    token sequence [tokens, width], attention heads [tokens, head_dim, heads] — is intervened on per
    channel (the last axis, at every position); a flat site per value."""
    return len(tuple(shape)) >= 2


def sites(model: Network | Apply | Graph, params: Params | None = None) -> dict[str, SiteInfo]:
    """Lists the intervention sites of a model with their per-example shapes and kinds."""
    graph = model if isinstance(model, Graph) else model.graph
    if params is None:
        params = model.params() if isinstance(model, Network) else None
    if params is None:
        raise ValueError("sites() of an Apply or Graph needs the params")
    shapes = site_shapes(graph, params)
    out = {INPUT: SiteInfo(INPUT, shapes[INPUT], "input", "input")}
    for n in graph.nodes:
        if n.name == graph.output:
            kind = "output"
        elif n.op == "heads":
            kind = "attention-heads"
        elif n.op == "softmax" and _feeds_matmul(graph, n.name):
            kind = "attention-weights"
        elif n.op in ACTIVATIONS:
            kind = "post-activation"
        elif any(c.op in ACTIVATIONS for c in graph.consumers(n.name)):
            kind = "pre-activation"
        else:
            kind = "hidden"
        out[n.name] = SiteInfo(n.name, shapes[n.name], n.op, kind)
    return out


def _feeds_matmul(graph: Graph, name: str) -> bool:
    """Whether a value is an operand of a product of activations (attention weights), directly or
    through the NaN guard / identities an exporter puts after the softmax."""
    for c in graph.consumers(name):
        if c.op == "matmul" or (c.op in ("nan_to_num", "identity") and _feeds_matmul(graph, c.name)):
            return True
    return False


def hidden_sites(model, params=None) -> list[str]:
    """The default sites for localisation: hidden post-activation outputs and attention heads."""
    return [s.name for s in sites(model, params).values() if s.kind in ("post-activation", "attention-heads")]


def check_finite(tree, what: str) -> None:
    """Raises ``ValueError`` naming the leaf that holds NaN or inf (checked on the host, no compile)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.asarray(leaf)
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            where = jax.tree_util.keystr(path)
            bad = int(np.size(a) - np.isfinite(a).sum())
            raise ValueError(f"{what}{where} contains {bad} NaN/inf value(s)")


# --------------------------------------------------------------------------- persistence


def _graph_to_json(graph: Graph) -> dict:
    return {
        "format": "jaxrepair.network",
        "version": FORMAT_VERSION,
        "input_shape": list(graph.input_shape),
        "output": graph.output,
        "nodes": [
            {"name": n.name, "op": n.op, "inputs": list(n.inputs), "attrs": [[k, v] for k, v in n.attrs]}
            for n in graph.nodes
        ],
    }


def _json_to_graph(d: dict, path) -> Graph:
    if d.get("format") != "jaxrepair.network":
        raise ValueError(f"{path}: not a jaxrepair network file (format field is {d.get('format')!r})")
    if int(d.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: written by a newer jaxrepair (format version {d['version']})")
    nodes = tuple(
        Node.make(n["name"], n["op"], tuple(n["inputs"]), **{k: v for k, v in n["attrs"]}) for n in d["nodes"]
    )
    return Graph(nodes, tuple(d["input_shape"]), d["output"]).validate()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write, *, overwrite: bool = False) -> Path:
    """Writes via a temporary file and a rename; refuses to replace an existing file unless asked.

    In a multi-process run only process 0 writes (every file jaxrepair writes goes through here);
    the other processes return the path without touching the file system."""
    path = Path(path)
    if jax.process_count() > 1 and jax.process_index() != 0:
        return path
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; jaxrepair does not overwrite files (choose another name)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save(model: Network, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Saves a network as one ``.npz`` (arrays + the graph as JSON; no pickle)."""
    arrays = {f"{node}//{k}": np.asarray(v) for node, p in model.params().items() for k, v in p.items()}
    header = json.dumps({"graph": _graph_to_json(model.graph), "meta": model.meta})
    return write_atomic(path, lambda f: np.savez_compressed(f, __header__=np.array(header), **arrays), overwrite=overwrite)


def load(path: str | os.PathLike) -> Network:
    """Loads a network written by :func:`save`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["__header__"]))
            params: dict = {}
            for key in z.files:
                if key == "__header__":
                    continue
                node, _, name = key.rpartition("//")
                params.setdefault(node, {})[name] = z[key]
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable jaxrepair model file ({type(e).__name__}: {e})") from None
    graph = _json_to_graph(header["graph"], path)
    check_finite(params, f"{path}: the weights of node ")
    return Network(graph, params, meta=header.get("meta"))
