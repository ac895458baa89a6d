"""The user's own tabular data: a ``.csv`` (header row) or ``.npz`` file read into a
:class:`~jaxrepair.data.TabularDataset`, so every command that works on a bundled data set works on it.

* ``.csv``: one column per feature plus the label column, named by the header (names must be unique
  and non-empty). A column whose every cell is a number is numeric; a column with no number in it
  becomes integer codes (index in the sorted list of its values), like the bundled sets, and is
  listed in ``categories``; a column that mixes numbers and text is refused unless ``categorical``
  names it (a numeric column never silently becomes codes). Missing cells (blank, ``NA``, ``NaN``,
  ``N/A``, ``null``, ``None``, ``?``) are refused, naming the column and the lines, unless
  ``missing="drop"`` drops their rows (the dropped lines are kept in ``dropped``). ``inf`` is refused.
* ``.npz``: an ``x`` array ``[N, F]`` and a label array (``y`` unless ``label`` names another);
  optional ``columns`` (feature names, unique). Features are used as they are; NaN/inf is refused
  naming the rows and columns.

Rows are split 60/20/20 into train / val / test by a permutation seeded with ``split_seed`` (0 by
default; repair / select / test for repairs); ``rows`` holds each split's row indices in the file
(0-based data rows, the header not counted), so a user can check which rows a figure is on. Nothing
is written; the file is only read.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from jaxrepair.data._tabular import Split, TabularDataset, check_class_indices


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


MISSING = frozenset({"", "na", "nan", "n/a", "null", "none", "?"})  # cells read as missing (any case)


def _lines(numbers: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return f"line{'s' if len(numbers) > 1 else ''} {shown}{f' and {len(numbers) - limit} more' if len(numbers) > limit else ''}"


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _check_header(path: Path, header: list[str]) -> None:
    empty = [j for j, h in enumerate(header) if not h]
    if empty:
        raise ValueError(f"{path}, line 1: column {empty[0]} has no name; every column needs a unique name")
    seen: dict[str, int] = {}
    for j, h in enumerate(header):
        if h in seen:
            raise ValueError(f"{path}, line 1: the column name {h!r} appears twice (columns {seen[h]} and {j}); "
                             f"column names must be unique")
        seen[h] = j


def _read_csv(path: Path, label: str, missing: str, categorical):
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet's byte-order mark is not a name
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a readable UTF-8 CSV file ({e})") from None
    if len(rows) < 2:
        raise ValueError(f"{path}: a CSV file needs a header row and at least one data row")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    _check_header(path, header)
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path}, line {bad[0]}: {len(body[bad[0] - 2])} fields, the header has {len(header)}")
    li = _column(label, header, "label")
    forced = set()
    for c in categorical:
        forced.add(header[_column(c, header, "categorical")])
    cells = [[r[j].strip() for r in body] for j in range(len(header))]
    holes = {name: [i for i, v in enumerate(col) if v.lower() in MISSING] for name, col in zip(header, cells)}
    holes = {k: v for k, v in holes.items() if v}
    keep = np.ones(len(body), bool)
    if holes and missing == "error":
        name, at = next(iter(holes.items()))
        more = f"; {len(holes) - 1} other column(s) too ({', '.join(list(holes)[1:4])})" if len(holes) > 1 else ""
        raise ValueError(f"{path}: column {name!r} has {len(at)} missing value(s) ({_lines([i + 2 for i in at])}: "
                         f"{body[at[0]][header.index(name)]!r}){more}; fill them in, or drop those rows "
                         f"explicitly (missing='drop', --missing drop)")
    for at in holes.values():
        keep[at] = False
    dropped = [int(i) + 2 for i in np.flatnonzero(~keep)]
    if not keep.any():
        raise ValueError(f"{path}: every row has a missing value; nothing is left after dropping them")
    cols, codes = [], {}
    for name, col in zip(header, cells):
        raw = [v for v, k in zip(col, keep) if k]
        lines = [i + 2 for i, k in enumerate(keep) if k]
        nums = [_number(v) for v in raw]
        text = [i for i, v in enumerate(nums) if v is None]
        if name not in forced and not text:
            bad = [lines[i] for i, v in enumerate(nums) if not np.isfinite(v)]
            if bad:
                raise ValueError(f"{path}: column {name!r} holds an infinite value ({_lines(bad)}: "
                                 f"{raw[lines.index(bad[0])]!r}); only finite numbers can be features")
            cols.append(np.asarray(nums, np.float32))
            continue
        if name not in forced and len(text) < len(raw):
            num_at = [lines[i] for i, v in enumerate(nums) if v is not None]
            raise ValueError(f"{path}: column {name!r} mixes numbers ({_lines(num_at, 3)}) and text "
                             f"({_lines([lines[i] for i in text], 3)}: {raw[text[0]]!r}); fix the cells, or name the "
                             f"column as categorical (categorical=[...], --categorical {name})")
        vocab = sorted(set(raw))
        codes[name] = vocab
        index = {v: i for i, v in enumerate(vocab)}
        cols.append(np.asarray([index[v] for v in raw], np.float32))
    table = np.stack(cols, axis=1)
    y = table[:, li]
    feats = [h for j, h in enumerate(header) if j != li]
    x = np.delete(table, li, axis=1)
    return x, y, feats, {k: v for k, v in codes.items() if k != header[li]}, header[li], np.flatnonzero(keep), dropped


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
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise ValueError(f"{path}: 'columns' names {dup[0]!r} more than once; column names must be unique")
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{path}: 'x' holds {int(bad.sum())} NaN/inf value(s) in {int(bad.any(1).sum())} row(s), the "
                         f"first at row {r}, column {c} ({names[c]!r}): {x[r, c]}")
    return x, y, names, {}, label, np.arange(len(x)), []


def load_user_table(path: str | os.PathLike, *, label: str = "y", sensitive: str | None = None,
                    missing: str = "error", categorical=(), split_seed: int = 0) -> TabularDataset:
    """Reads ``path`` (``.csv`` or ``.npz``); ``label`` is the label column/array, ``sensitive`` an
    optional ``COL[:V1,V2,...]``, ``missing`` ``"error"`` or ``"drop"`` (rows with a missing cell),
    ``categorical`` columns to read as codes even where they hold numbers, ``split_seed`` the seed of
    the 60/20/20 split. Checks the labels are class indices 0..C-1 and the values finite."""
    path = Path(path)
    if missing not in ("error", "drop"):
        raise ValueError(f"missing must be 'error' or 'drop', not {missing!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or split_seed < 0:
        raise ValueError(f"split_seed must be a non-negative integer, got {split_seed!r}")
    if isinstance(categorical, str):
        categorical = [c for c in categorical.split(",") if c.strip()]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        x, y, names, codes, label_name, kept, dropped = _read_csv(path, label, missing, list(categorical))
    elif suffix == ".npz":
        if categorical:
            raise ValueError(f"{path}: categorical columns are named for .csv tables; an .npz table is used as it is")
        x, y, names, codes, label_name, kept, dropped = _read_npz(path, label)
    else:
        raise ValueError(f"{path}: data files are .csv (header row) or .npz (x and a label array), not {suffix!r}")
    if len(x) < 5:
        raise ValueError(f"{path}: {len(x)} rows; at least 5 are needed to split into train/val/test")
    yf = check_class_indices(y, f"{path}: the label {label_name!r}")
    sens = {}
    if sensitive is not None:
        col, _ = parse_sensitive(sensitive)
        sens[names[_column(col, names, "sensitive")]] = _column(col, names, "sensitive")
    perm = np.random.default_rng(int(split_seed)).permutation(len(x))
    a, b = int(round(0.6 * len(x))), int(round(0.8 * len(x)))
    parts = {"train": perm[:a], "val": perm[a:b], "test": perm[b:]}
    splits = {k: Split(x[v], yf[v].astype(np.int32)) for k, v in parts.items()}
    rows = {k: kept[v] for k, v in parts.items()}  # in the split's order: rows[k][i] is the file row of splits[k].x[i]
    return TabularDataset(path.stem, names, codes, sens, splits, label_name, rows=rows, dropped=dropped,
                          split_seed=int(split_seed))
