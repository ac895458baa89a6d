"""CARE's own census benchmark files (Sun et al., ICSE 2022): the reference model and data sets.

Read from a directory the user names (``--care-dir``); nothing is bundled or downloaded. The
directory holds ``census_sex_ref.npz``: the MLP 13→64→32→16→8→4→2 as ``W0..W5`` (``[out, in]``)
and ``b0..b5``, and CARE's data sets as ``*_x``/``*_y`` pairs — ``data`` (10,000 discriminatory
instances of the original model), ``data_pso_di`` and ``data_pso`` (1,000 rows each, the violation
and accuracy terms of CARE's PSO fitness) and ``data_acc`` (15,060 labelled test rows).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from jaxrepair.models import Graph, Network, Node, check_finite

CARE_FILE = "census_sex_ref.npz"
_SETS = {"data": 10_000, "data_pso_di": 1_000, "data_pso": 1_000, "data_acc": 15_060}
_WIDTHS = (13, 64, 32, 16, 8, 4, 2)
SEX_COLUMN = 8


@dataclasses.dataclass
class CareCensus:
    model: Network  # sites layer{i}.pre (CARE's Linear outputs), layer{i} (after ReLU), logits
    sets: dict  # name -> {"x": [N, 13] float32, "y": [N] int32}


def load_care_census(directory: str | os.PathLike) -> CareCensus:
    """Reads CARE's census model and data sets from ``directory`` (checked: names, shapes, values)."""
    path = Path(directory) / CARE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: CARE's census file is missing (the directory should hold {CARE_FILE})")
    try:
        z = dict(np.load(path, allow_pickle=False))
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    nodes, params, prev = [], {}, "input"
    for i in range(len(_WIDTHS) - 1):
        w, b = z.get(f"W{i}"), z.get(f"b{i}")
        want = (_WIDTHS[i + 1], _WIDTHS[i])
        if w is None or b is None or w.shape != want or b.shape != (want[0],):
            raise ValueError(f"{path}: W{i}/b{i} must have shapes {want}/({want[0]},), got "
                             f"{None if w is None else w.shape}/{None if b is None else b.shape}")
        last = i == len(_WIDTHS) - 2
        name = "logits" if last else f"layer{i + 1}.pre"
        nodes.append(Node.make(name, "dense", prev))
        params[name] = {"kernel": w.T.astype(np.float32), "bias": b.astype(np.float32)}
        if not last:
            nodes.append(Node.make(f"layer{i + 1}", "relu", name))
            prev = f"layer{i + 1}"
    check_finite(params, f"{path}: the weights of layer ")
    sets = {}
    for name, n in _SETS.items():
        x, y = z.get(f"{name}_x"), z.get(f"{name}_y")
        if x is None or y is None or x.shape != (n, _WIDTHS[0]) or y.shape != (n,):
            raise ValueError(f"{path}: {name}_x/{name}_y must have shapes ({n}, {_WIDTHS[0]})/({n},)")
        if not np.all(np.isfinite(x)) or not set(np.unique(x[:, SEX_COLUMN])) <= {0.0, 1.0}:
            raise ValueError(f"{path}: {name}_x has non-finite values or a sex column (8) outside {{0, 1}}")
        sets[name] = {"x": x.astype(np.float32), "y": y.astype(np.int32)}
    model = Network(Graph(tuple(nodes), (_WIDTHS[0],), "logits"), params, meta={"source": str(path), "format": "care"})
    return CareCensus(model, sets)
