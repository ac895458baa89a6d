"""The user's own tabular data: a ``.csv`` (header row) or ``.npz`` file read into a
:class:`~jaxrepair.data.TabularDataset`, so every command that works on a bundled data set works on it.

* ``.csv``: one column per feature plus the label column; numeric columns are read as numbers,
  any other column becomes integer codes (index in the sorted list of its values), like the bundled
  sets. Columns are named by the header.
* ``.npz``: an ``x`` array ``[N, F]`` and a label array (``y`` unless ``label`` names another);
  optional ``columns`` (feature names). Features are used as they are.

Rows are split 60/20/20 into train / val / test by a permutation seeded with 0 (repair / select /
test for repairs). Nothing is written; the file is only read.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from jaxrepair.data._tabular import Split, TabularDataset


def _column(spec: str, columns: list[str], what: str) -> int:
    if spec in columns:
        return columns.index(spec)
    if spec.lstrip("-").isdigit():
        i = int(spec)
        if 0 <= i < len(columns):
            return i
        raise ValueError(f"{what} column {i} is out of range: the data has {len(columns)} columns (0..{len(columns) - 1})")
    raise ValueError(f"{what} column {spec!r} is not a column of the data; columns: {columns}")


def parse_sensitive(spec: str) -> tuple[str, list[float] | None]:
    """``COL`` or ``COL:V1,V2,...`` (a column name or index, optionally with its values)."""
    col, _, vals = spec.partition(":")
    if not col:
        raise ValueError(f"--sensitive {spec!r}: name a column (COL or COL:V1,V2)")
    if not vals:
        return col, None
    try:
        values = [float(v) for v in vals.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--sensitive {spec!r}: the values must be numbers") from None
    if len(set(values)) < 2:
        raise ValueError(f"--sensitive {spec!r}: a sensitive attribute needs at least two distinct values")
    return col, values


def _read_csv(path: Path, label: str):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise ValueError(f"{path}: a CSV file needs a header row and at least one data row")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path}, line {bad[0]}: {len(body[bad[0] - 2])} fields, the header has {len(header)}")
    li = _column(label, header, "label")
    cols, codes = [], {}
    for j, name in enumerate(header):
        raw = [r[j].strip() for r in body]
        try:
            cols.append(np.asarray([float(v) for v in raw], np.float32))
        except ValueError:
            vocab = sorted(set(raw))
            codes[name] = vocab
            index = {v: i for i, v in enumerate(vocab)}
            cols.append(np.asarray([index[v] for v in raw], np.float32))
    table = np.stack(cols, axis=1)
    y = table[:, li]
    feats = [h for j, h in enumerate(header) if j != li]
    x = np.delete(table, li, axis=1)
    return x, y, feats, {k: v for k, v in codes.items() if k != header[li]}, header[li]


def _read_npz(path: Path, label: str):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    if "x" not in arrays:
        raise ValueError(f"{path}: the .npz file needs an 'x' array (it has {sorted(arrays)})")
    if label not in arrays:
        raise ValueError(f"{path}: no label array {label!r} (it has {sorted(arrays)}); name it with --label")
    x, y = np.asarray(arrays["x"], np.float32), np.asarray(arrays[label])
    if x.ndim != 2:
        raise ValueError(f"{path}: 'x' must be a table [rows, features], got shape {x.shape}")
    if y.shape != (len(x),):
        raise ValueError(f"{path}: the label array {label!r} has shape {y.shape}, expected ({len(x)},)")
    names = [str(c) for c in arrays["columns"]] if "columns" in arrays else [f"x{i}" for i in range(x.shape[1])]
    if len(names) != x.shape[1]:
        raise ValueError(f"{path}: 'columns' names {len(names)} features, 'x' has {x.shape[1]}")
    return x, y, names, {}, label


def load_user_table(path: str | os.PathLike, *, label: str = "y", sensitive: str | None = None) -> TabularDataset:
    """Reads ``path`` (``.csv`` or ``.npz``); ``label`` is the label column/array, ``sensitive`` an
    optional ``COL[:V1,V2,...]``. Checks the labels are class indices 0..C-1 and the values finite."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        x, y, names, codes, label_name = _read_csv(path, label)
    elif suffix == ".npz":
        x, y, names, codes, label_name = _read_npz(path, label)
    else:
        raise ValueError(f"{path}: data files are .csv (header row) or .npz (x and a label array), not {suffix!r}")
    if len(x) < 5:
        raise ValueError(f"{path}: {len(x)} rows; at least 5 are needed to split into train/val/test")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: the features hold {int(np.size(x) - np.isfinite(x).sum())} NaN/inf value(s)")
    yf = np.asarray(y, np.float64)
    if not np.all(np.isfinite(yf)) or np.any(yf != np.round(yf)) or yf.min() < 0:
        raise ValueError(f"{path}: the label {label_name!r} must hold class indices 0, 1, ...; got values such as "
                         f"{np.unique(yf)[:5].tolist()}")
    sens = {}
    if sensitive is not None:
        col, _ = parse_sensitive(sensitive)
        sens[names[_column(col, names, "sensitive")]] = _column(col, names, "sensitive")
    perm = np.random.default_rng(0).permutation(len(x))
    a, b = int(round(0.6 * len(x))), int(round(0.8 * len(x)))
    parts = {"train": perm[:a], "val": perm[a:b], "test": perm[b:]}
    splits = {k: Split(x[v], yf[v].astype(np.int32)) for k, v in parts.items()}
    return TabularDataset(path.stem, names, codes, sens, splits, label_name)
