"""A spurious-correlation image benchmark: a coloured border that predicts the label.

Grayscale images (Fashion-MNIST, MNIST) are padded to 32×32 and copied to three channels; the
padding ring (``width`` pixels) is painted in one of the ten colours of :data:`PALETTE`. In a
*correlated* split the border takes its label's colour (colour ``k`` for class ``k``) with
probability ``p`` and one of the other colours otherwise; in a *decorrelated* split the colour is
uniform and independent of the label. A network trained on the correlated split learns to read the
border; its accuracy on the decorrelated split shows how much.

:class:`ColourPatch` is a second cue of the same colours in another place (a square in a corner,
on a black border): a shifted domain that a repair of the border never saw.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

# matplotlib's tab10: ten colours far apart in RGB.
PALETTE = np.array([
    [0.122, 0.467, 0.706], [1.000, 0.498, 0.055], [0.173, 0.627, 0.173], [0.839, 0.153, 0.157],
    [0.580, 0.404, 0.741], [0.549, 0.337, 0.294], [0.890, 0.467, 0.761], [0.498, 0.498, 0.498],
    [0.737, 0.741, 0.133], [0.090, 0.745, 0.812],
], np.float32)


def to_rgb32(x: np.ndarray, size: int = 32) -> np.ndarray:
    """``[N, H, W, 1]`` (or ``[N, H, W]``) grayscale images, zero-padded to ``size``×``size`` and
    repeated over three channels: ``[N, size, size, 3]`` float32."""
    x = np.asarray(x, np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] != 1:
        raise ValueError(f"to_rgb32 takes grayscale images [N, H, W(, 1)], got shape {x.shape}")
    ph, pw = size - x.shape[1], size - x.shape[2]
    if ph < 0 or pw < 0:
        raise ValueError(f"images of {x.shape[1]}×{x.shape[2]} do not fit in {size}×{size}")
    x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    return np.repeat(x, 3, axis=-1)


def _rgb(colour):
    return jnp.reshape(jnp.asarray(PALETTE)[jnp.asarray(colour)], (-1, 1, 1, 3))


@dataclasses.dataclass(frozen=True)
class ColourBorder:
    """The outer ``width`` pixels of an image painted in a colour of :data:`PALETTE`."""

    width: int = 2

    def mask(self, shape) -> np.ndarray:
        h, w = shape[:2]
        if not 0 < 2 * self.width < min(h, w):
            raise ValueError(f"a border of width {self.width} does not fit a {h}×{w} image")
        m = np.ones((h, w, 1), bool)
        m[self.width: h - self.width, self.width: w - self.width] = False
        return m

    def paint(self, x, colour):
        """``x`` (``[N, H, W, 3]``) with the border of image ``i`` in colour ``colour[i]`` (ints in 0..9;
        one int paints every image)."""
        return jnp.where(self.mask(x.shape[1:]), _rgb(colour), x)

    def colour(self, x) -> np.ndarray:
        """The palette index of each image's border (the colour nearest the ring's mean): what
        :meth:`paint` painted."""
        x = np.asarray(x)
        ring = x[:, self.mask(x.shape[1:])[..., 0]].mean(1)  # [N, 3]
        return np.argmin(((ring[:, None, :] - PALETTE[None]) ** 2).sum(-1), axis=1).astype(np.int32)

    def recolour(self, x, key):
        """``x`` with each border repainted in a colour drawn uniformly (a counterfactual for training)."""
        return self.paint(x, jax.random.randint(key, (x.shape[0],), 0, len(PALETTE)))


@dataclasses.dataclass(frozen=True)
class ColourPatch:
    """A ``size``×``size`` square of a palette colour at the top-left corner, with the border black."""

    size: int = 6
    border: ColourBorder = ColourBorder()

    def paint(self, x, colour):
        h, w = x.shape[1:3]
        m = np.zeros((h, w, 1), bool)
        m[: self.size, : self.size] = True
        x = jnp.where(self.border.mask(x.shape[1:]), 0.0, x)
        return jnp.where(m, _rgb(colour), x)


def spurious_colours(y, p: float, rng: np.random.Generator, k: int = len(PALETTE)) -> np.ndarray:
    """A colour per label: the label's own with probability ``p``, else one of the other ``k − 1``
    uniformly (``p = 1/k`` makes colour and label independent)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability, got {p}")
    y = np.asarray(y)
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1} to have a colour each, got {y.min()}..{y.max()}")
    other = (y + rng.integers(1, k, size=y.shape)) % k
    return np.where(rng.random(y.shape) < p, y, other).astype(np.int32)


def other_colours(c, rng: np.random.Generator, k: int = len(PALETTE)) -> np.ndarray:
    """For each colour, another one drawn uniformly from the remaining ``k − 1``: a counterfactual."""
    c = np.asarray(c)
    return ((c + rng.integers(1, k, size=c.shape)) % k).astype(np.int32)


def spurious_splits(raw: dict, *, p: float = 0.95, seed: int = 0, border: ColourBorder = ColourBorder(),
                    patch: ColourPatch = ColourPatch()) -> dict:
    """The benchmark's splits from ``{"train"|"val"|"test": Split}`` of grayscale images.

    Each split is ``{"x", "y", "c"}`` (``c``: the colour painted) plus ``c_cf``, another colour for the
    same image (the counterfactual that changes only the border):

    * ``train``, ``val``, ``test``: colour agrees with the label with probability ``p``;
    * ``val_decorrelated``, ``test_decorrelated``: the same images, colour independent of the label;
    * ``test_patch``: the test images on a black border with a uniformly coloured corner square.
    """
    rng = np.random.default_rng(seed)
    out = {}
    k = len(PALETTE)
    for name in ("train", "val", "test"):
        s = raw[name]
        x = to_rgb32(s.x)
        y = np.asarray(s.y, np.int32)
        for suffix, q in (("", p), ("_decorrelated", 1.0 / k)):
            if name == "train" and suffix:
                continue
            c = spurious_colours(y, q, rng, k)
            out[name + suffix] = {"x": np.asarray(border.paint(x, c)), "y": y, "c": c, "c_cf": other_colours(c, rng, k)}
        if name == "test":
            c = rng.integers(0, k, size=y.shape).astype(np.int32)
            out["test_patch"] = {"x": np.asarray(patch.paint(x, c)), "y": y, "c": c, "c_cf": other_colours(c, rng, k)}
    return out
