"""The image benchmarks of the backdoor-repair literature, read from a directory the user names.

MNIST and Fashion-MNIST are the official IDX ``.gz`` files; GTSRB is the 32×32 derivative described
in the data folder's README (one ``.tar.xz`` of binary PPMs with the official annotation CSVs).
Nothing is downloaded and nothing is bundled: :func:`data_dir` takes the directory from the caller,
else from ``$JAXREPAIR_DATA``. Every file is checked (present, size, md5 against the published sums,
magic numbers and counts) before any work, and the error names the file and what was wrong.

The decoded GTSRB arrays are cached under the cache directory (``$JAXREPAIR_CACHE/data``, keyed by
the archive's md5), because unpacking 52k PPMs from xz takes a while; the IDX files decode in well
under a second and are read directly.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np

from jaxrepair.data._images import read_idx
from jaxrepair.data._tabular import Split

ENV = "JAXREPAIR_DATA"


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """A data set's folder and its files: name -> (bytes, md5)."""

    name: str
    folder: str
    files: dict
    num_classes: int
    shape: tuple[int, int, int]


_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz")
IMAGE_SETS = {
    s.name: s
    for s in [
        ImageSet("mnist", "mnist", dict(zip(_IDX, [
            (9_912_422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"), (28_881, "d53e105ee54ea40749a09fcbcd1e9432"),
            (1_648_877, "9fb629c4189551a2d022fa330f9573f3"), (4_542, "ec29112dd5afa0611ce80d1b7f02629c")])),
            10, (28, 28, 1)),
        ImageSet("fashion-mnist", "fashion-mnist", dict(zip(_IDX, [
            (26_421_880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"), (29_515, "25c81989df183df01b3e8a0aad5dffbe"),
            (4_422_102, "bef4ecab320f06d8554ea6380940ec79"), (5_148, "bb300cfdad3c16e7a12a480ee83cd310")])),
            10, (28, 28, 1)),
        ImageSet("gtsrb", "gtsrb", {"gtsrb-32x32-ppm.tar.xz": (106_216_212, "4cc92d027f6d2ba7dabaac1eb1f8f40a")},
                 43, (32, 32, 3)),
    ]
}
GTSRB_COUNTS = (39_209, 12_630)


def cache_root() -> Path:
    """``$JAXREPAIR_CACHE`` or ``~/.cache/jaxrepair``: where built models and decoded data are kept."""
    return Path(os.environ.get("JAXREPAIR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jaxrepair"))


def data_dir(explicit=None, *, need: str | None = None) -> Path:
    """The directory holding the image sets: ``explicit``, else ``$JAXREPAIR_DATA``.

    It may be the folder that holds ``mnist/``, ``fashion-mnist/`` and ``gtsrb/`` or one level above
    it (``DIR/images/mnist``). ``need`` names what is asked for, for the error message.
    """
    raw = explicit if explicit not in (None, "") else os.environ.get(ENV)
    what = f"{need} needs" if need else "the image benchmarks need"
    if not raw:
        raise ValueError(f"{what} the image files, which jaxrepair never downloads: pass --data-dir DIR (or "
                         f"data_dir=DIR) or set {ENV}=DIR, where DIR holds mnist/, fashion-mnist/ and gtsrb/ "
                         f"as described in the README's 'Image benchmarks' section")
    d = Path(raw).expanduser()
    if not d.is_dir():
        raise ValueError(f"data directory {d} does not exist or is not a directory")
    if not any((d / s.folder).is_dir() for s in IMAGE_SETS.values()) and (d / "images").is_dir():
        d = d / "images"
    return d


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def check_files(name: str, root, *, verify: bool = True) -> dict[str, Path]:
    """The paths of ``name``'s files under ``root``, each checked for presence and (``verify``) for
    its published size and md5. Raises ``ValueError`` naming every missing or corrupt file."""
    s = image_set(name)
    folder = Path(root) / s.folder
    paths, problems = {}, []
    for fname, (size, md5) in s.files.items():
        p = folder / fname
        if not p.is_file():
            problems.append(f"{p}: missing")
            continue
        if verify:
            got = p.stat().st_size
            if got != size:
                problems.append(f"{p}: {got:,} bytes, the published file has {size:,} (truncated or a different file)")
                continue
            if (h := _md5(p)) != md5:
                problems.append(f"{p}: md5 {h}, the published file has {md5} (corrupt or a different file)")
                continue
        paths[fname] = p
    if problems:
        raise ValueError(f"{s.name} data is incomplete: " + "; ".join(problems))
    return paths


def image_set(name: str) -> ImageSet:
    if name not in IMAGE_SETS:
        raise ValueError(f"unknown image set {name!r}; available: {sorted(IMAGE_SETS)}")
    return IMAGE_SETS[name]


def _holdout(x, y, n_val: int, seed: int = 0):
    perm = np.random.default_rng(seed).permutation(len(y))
    return Split(x[perm[n_val:]], y[perm[n_val:]]), Split(x[perm[:n_val]], y[perm[:n_val]])


def _read_idx_pair(paths, prefix: str, name: str):
    x, y = read_idx(paths[f"{prefix}-images-idx3-ubyte.gz"]), read_idx(paths[f"{prefix}-labels-idx1-ubyte.gz"])
    if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),) or y.max(initial=0) > 9:
        raise ValueError(f"{name} {prefix} files hold images {x.shape} and labels {y.shape}; expected [N, 28, 28] "
                         f"and [N] labels in 0..9")
    return x[..., None], y.astype(np.int32)


def _ppm(data: bytes, where: str) -> np.ndarray:
    """A binary (P6) PPM → ``[H, W, 3]`` uint8."""
    tokens, pos = [], 0
    while len(tokens) < 4:  # magic, width, height, maxval; comments run to the end of their line
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while end < len(data) and not data[end : end + 1].isspace():
            end += 1
        tokens.append(data[pos:end])
        pos = end
    if tokens[0] != b"P6" or tokens[3] != b"255":
        raise ValueError(f"{where}: not an 8-bit binary PPM (header {tokens})")
    w, h = int(tokens[1]), int(tokens[2])
    body = data[pos + 1 :]
    if len(body) != w * h * 3:
        raise ValueError(f"{where}: a {w}×{h} PPM should carry {w * h * 3} bytes of pixels, it has {len(body)}")
    return np.frombuffer(body, np.uint8).reshape(h, w, 3)


def decode_gtsrb(archive) -> dict[str, np.ndarray]:
    """The GTSRB archive → ``{"x_train", "y_train", "x_test", "y_test"}`` (uint8 ``[N, 32, 32, 3]``,
    int32 labels), labels from the official annotation CSVs; every row must have its image."""
    archive = Path(archive)
    images, labels = {}, {}
    with tarfile.open(archive, "r:xz") as tar:
        for m in tar:
            if not m.isfile():
                continue
            data = tar.extractfile(m).read()
            if m.name.endswith(".ppm"):
                images[m.name] = _ppm(data, f"{archive}:{m.name}")
            elif m.name.endswith(".csv") and "GT-" in m.name and not m.name.endswith(".test.csv"):
                folder = m.name.rsplit("/", 1)[0]
                if m.name.endswith("GT-final_test.csv"):
                    folder += "/Images"
                for row in csv.DictReader(io.StringIO(data.decode()), delimiter=";"):
                    labels[f"{folder}/{row['Filename']}"] = int(row["ClassId"])
    out = {}
    for split, marker in (("train", "/Final_Training/"), ("test", "/Final_Test/")):
        names = sorted(k for k in labels if marker in k)
        missing = [k for k in names if k not in images]
        if not names or missing:
            raise ValueError(f"{archive}: the {split} annotations name {len(names)} images, {len(missing)} of them "
                             f"missing from the archive (e.g. {missing[:3]})")
        shapes = {images[k].shape for k in names}
        if len(shapes) != 1:
            raise ValueError(f"{archive}: {split} images have several sizes {sorted(shapes)}; expected one")
        out[f"x_{split}"] = np.stack([images[k] for k in names])
        out[f"y_{split}"] = np.asarray([labels[k] for k in names], np.int32)
    return out


def _gtsrb_arrays(paths, verify: bool) -> dict[str, np.ndarray]:
    archive = paths["gtsrb-32x32-ppm.tar.xz"]
    key = image_set("gtsrb").files[archive.name][1] if verify else _md5(archive)
    cached = cache_root() / "data" / f"gtsrb-32x32-{key}.npz"
    if cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            pass  # a broken cache file is decoded again
    arrays = decode_gtsrb(archive)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, cached)
    return arrays


def load_image_set(name: str, root=None, *, verify: bool = True, val: int | None = None) -> dict[str, Split]:
    """``mnist``, ``fashion-mnist`` or ``gtsrb`` as ``{"train", "val", "test"}`` splits, NHWC float32
    images in [0, 1] and int32 labels.

    Test is the official test set; val is a seeded random hold-out of the official training set
    (5,000 images for MNIST/Fashion, 10% for GTSRB — GTSRB's training images come in tracks of 30
    frames of one sign, so its val figures are optimistic; report on test).

    Args:
      name: the image set.
      root: the data directory (see :func:`data_dir`).
      verify: check sizes and md5 sums against the published ones (``False`` for test fixtures).
      val: images held out of train for the val split (default per set, above).
    """
    s = image_set(name)
    paths = check_files(name, data_dir(root, need=name), verify=verify)
    if s.name == "gtsrb":
        a = _gtsrb_arrays(paths, verify)
        if verify and (len(a["y_train"]), len(a["y_test"])) != GTSRB_COUNTS:
            raise ValueError(f"GTSRB archive holds {len(a['y_train'])} + {len(a['y_test'])} images, the "
                             f"benchmark has {GTSRB_COUNTS[0]} + {GTSRB_COUNTS[1]}")
        xtr, ytr, xte, yte = a["x_train"], a["y_train"], a["x_test"], a["y_test"]
    else:
        (xtr, ytr), (xte, yte) = (_read_idx_pair(paths, p, name) for p in ("train", "t10k"))
    n_val = val if val is not None else (5000 if s.name != "gtsrb" else len(ytr) // 10)
    if not 0 < n_val < len(ytr):
        raise ValueError(f"val must hold between 1 and {len(ytr) - 1} of {name}'s {len(ytr)} training images, got {n_val}")
    train, valid = _holdout(xtr, ytr, n_val)
    scale = np.float32(1 / 255)
    return {k: Split(v.x.astype(np.float32) * scale, v.y) for k, v in
            (("train", train), ("val", valid), ("test", Split(xte, yte)))}
