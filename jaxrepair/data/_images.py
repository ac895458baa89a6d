"""Image data: the bundled 8×8 digits, loaders for user files (MNIST IDX, ``.npz``, CIFAR-10
binary batches), and BadNets-style triggers. Images are NHWC float32 in [0, 1].
"""

from __future__ import annotations

import dataclasses
import gzip
import io
from importlib import resources
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxrepair.data._tabular import Split, check_class_indices


def load_digits() -> dict[str, Split]:
    """scikit-learn's digits (1,797 8×8 images, 10 classes), split 70/15/15 with seed 0."""
    raw = (resources.files("jaxrepair.data") / "bundled" / "digits.npz").read_bytes()
    with np.load(io.BytesIO(raw)) as z:
        x = z["images"].astype(np.float32)[..., None] / 16.0
        y = z["target"].astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(y))
    a, b = int(0.7 * len(y)), int(0.85 * len(y))
    return {k: Split(x[idx], y[idx]) for k, idx in (("train", perm[:a]), ("val", perm[a:b]), ("test", perm[b:]))}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path) -> np.ndarray:
    """Reads an IDX file (MNIST format, optionally gzipped) into a numpy array."""
    path = Path(path)
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    dims = np.frombuffer(data, ">u4", ndim, 4).astype(int)
    dt = np.dtype(dtypes[data[2]])
    need = int(np.prod(dims)) * dt.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != need:
        raise ValueError(f"{path}: IDX header promises {need} bytes of data, the file has {len(body)}")
    return np.frombuffer(body, dt).reshape(dims)


def load_mnist_idx(images, labels) -> Split:
    """MNIST-style IDX image and label files → ``Split`` with images ``[N, H, W, 1]`` in [0, 1]."""
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"IDX shapes {x.shape} and {y.shape} are not [N, H, W] images with [N] labels")
    return Split((x.astype(np.float32) / 255.0)[..., None], y.astype(np.int32))


def load_npz(path, *, x_key: str = "x", y_key: str = "y") -> Split:
    """Images and labels from an ``.npz`` (no pickle); uint8 images are scaled to [0, 1], and
    ``[N, H, W]`` images get a channel axis."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in (x_key, y_key) if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}; it has {z.files}")
        x, y = z[x_key], z[y_key]
    if len(x) != len(y.reshape(-1)):
        raise ValueError(f"{path}: {len(x)} images but {y.size} labels")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: {x_key!r} holds {int(np.size(x) - np.isfinite(x).sum())} NaN/inf value(s), the "
                         f"first in image {int(np.argwhere(~np.isfinite(x))[0][0])}")
    check_class_indices(y, f"{path}: {y_key!r}")
    x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    return Split(x[..., None] if x.ndim == 3 else x, y.astype(np.int32).reshape(-1))


def load_cifar_binary(path) -> Split:
    """A CIFAR-10 binary batch (``data_batch_1.bin``: records of 1 label byte + 3×32×32 bytes)."""
    path = Path(path)
    raw = np.fromfile(path, np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise ValueError(f"{path}: size {raw.size} is not a whole number of 3073-byte CIFAR-10 records")
    rec = raw.reshape(-1, 3073)
    x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    return Split(x, rec[:, 0].astype(np.int32))


@dataclasses.dataclass(frozen=True)
class Trigger:
    """A BadNets patch: ``size×size`` pixels set to ``value`` with its top-left corner at ``position``
    (negative positions count from the bottom/right edge)."""

    size: int = 2
    position: tuple[int, int] = (-2, -2)
    value: float = 1.0

    def mask(self, shape) -> np.ndarray:
        h, w = shape[:2]
        r, c = (p if p >= 0 else d + p for p, d in zip(self.position, (h, w)))
        if not (0 <= r <= h - self.size and 0 <= c <= w - self.size):
            raise ValueError(f"trigger of size {self.size} at {self.position} does not fit a {h}×{w} image")
        m = np.zeros((h, w, 1), bool)
        m[r : r + self.size, c : c + self.size] = True
        return m

    def stamp(self, x):
        """``x`` with the patch stamped on (``[N, H, W, C]``)."""
        return jnp.where(self.mask(x.shape[1:]), self.value, x)
