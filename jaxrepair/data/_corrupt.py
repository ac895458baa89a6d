"""Seeded image corruptions: a shifted test distribution generated in JAX.

Five corruption kinds at five severity levels each, in the style of ImageNet-C / CIFAR-10-C
(Hendrycks & Dietterich, ICLR 2019) and MNIST-C (Mu & Gilmer, 2019): a repair made on clean
images can be evaluated on images it never saw. Every function is pure, works on a batch
``[N, H, W, C]`` of images in ``[0, 1]``, and draws its randomness from an explicit key, so the
same key gives the same corrupted images.

Severities (level 1 → 5) of :func:`corrupt`:

============  ====================================================================  ==================
kind          what one image gets                                                   levels 1–5
============  ====================================================================  ==================
``shift``     integer translation by ``m`` pixels in one of 8 random directions     m = 1, 2, 3, 4, 5
              (rows, columns or both ±m), zero fill
``rotate``    rotation by ±a degrees (random sign) about the centre, bilinear,      a = 10, 20, 30, 40, 50
              zero outside
``noise``     additive Gaussian noise of standard deviation σ, clipped to [0, 1]    σ = .08, .12, .18,
              (ImageNet-C's and MNIST-C's levels)                                    .26, .38
``blur``      Gaussian blur of standard deviation σ pixels (CIFAR-10-C's levels     σ = .4, .6, .7, .8, 1
              for 32 px images), separable, reflected edges
``contrast``  ``(x − mean) · c + mean`` per image (CIFAR-10-C's levels)             c = .75, .5, .4, .3,
                                                                                    .15
============  ====================================================================  ==================

``blur`` and ``contrast`` are deterministic (the key is accepted and unused). The primitives
(:func:`translate`, :func:`rotate`, :func:`gaussian_noise`, :func:`gaussian_blur`,
:func:`adjust_contrast`) take explicit per-image parameters and are checked against
``scipy.ndimage`` in the tests.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

Key = jax.Array

# kind -> the parameter at severity levels 1..5 (see the module docstring for its meaning).
CORRUPTIONS: dict[str, tuple[float, ...]] = {
    "shift": (1, 2, 3, 4, 5),  # pixels
    "rotate": (10.0, 20.0, 30.0, 40.0, 50.0),  # degrees
    "noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # standard deviation, pixel values in [0, 1]
    "blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # standard deviation, pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor
}
_TRUNCATE = 4.0  # blur kernel radius in standard deviations, as scipy.ndimage.gaussian_filter
# the 8 directions a shifted image moves in: [8, 2] (rows, columns)
_DIRECTIONS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)], np.int32)


def _check_images(x, what: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{what}: images must be a batch [N, H, W, C], got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{what}: images must be floating point in [0, 1], got dtype {x.dtype}")
    return x


def _per_image(v, n: int, what: str, dtype) -> jax.Array:
    v = jnp.asarray(v, dtype)
    if v.ndim == 0:
        v = jnp.broadcast_to(v, (n,))
    if v.shape[0] != n:
        raise ValueError(f"{what}: expected one value per image ({n}), got shape {tuple(v.shape)}")
    return v


@jax.jit
def _translate(x, offsets):
    n, h, w, _ = x.shape

    def one(img, off):  # img [H, W, C], off [2]: out[i, j] = img[i - dy, j - dx], 0 outside
        rows = jnp.arange(h) - off[0]
        cols = jnp.arange(w) - off[1]
        inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]  # [H, W]
        moved = img[jnp.clip(rows, 0, h - 1)][:, jnp.clip(cols, 0, w - 1)]
        return jnp.where(inside[..., None], moved, 0.0).astype(img.dtype)

    return jax.vmap(one)(x, offsets)


def translate(x, offsets) -> jax.Array:
    """Moves each image by whole pixels, filling with zeros.

    Args:
      x: images ``[N, H, W, C]``.
      offsets: ``[N, 2]`` integer (rows, columns) offsets, or one ``[2]`` offset for all; positive
        moves content down / right (as ``scipy.ndimage.shift``).

    Returns:
      The translated images, same shape and dtype.
    """
    x = _check_images(x, "translate")
    off = jnp.asarray(offsets)
    if not jnp.issubdtype(off.dtype, jnp.integer):
        raise ValueError(f"translate: offsets must be integers, got dtype {off.dtype}")
    off = jnp.broadcast_to(off, (x.shape[0], 2)) if off.shape == (2,) else off
    if off.shape != (x.shape[0], 2):
        raise ValueError(f"translate: offsets must have shape [N, 2] = [{x.shape[0]}, 2], got {tuple(off.shape)}")
    return _translate(x, off.astype(jnp.int32))


@jax.jit
def _rotate(x, angles):
    _, h, w, _ = x.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    r, c = jnp.meshgrid(jnp.arange(h, dtype=x.dtype), jnp.arange(w, dtype=x.dtype), indexing="ij")  # [H, W]

    def one(img, deg):  # the output pixel (r, c) reads the input at the inverse rotation of (r, c)
        t = jnp.deg2rad(deg).astype(x.dtype)
        src_r = cy + jnp.cos(t) * (r - cy) + jnp.sin(t) * (c - cx)
        src_c = cx - jnp.sin(t) * (r - cy) + jnp.cos(t) * (c - cx)
        chan = lambda ch: map_coordinates(ch, [src_r, src_c], order=1, mode="constant", cval=0.0)
        return jax.vmap(chan, in_axes=-1, out_axes=-1)(img)

    return jax.vmap(one)(x, angles)


def rotate(x, angles) -> jax.Array:
    """Rotates each image about its centre, bilinear, zero outside the image.

    Matches ``scipy.ndimage.rotate(img, angle, reshape=False, order=1, mode="grid-constant")``:
    a positive angle turns the picture counter-clockwise as displayed (row 0 on top).

    Args:
      x: images ``[N, H, W, C]``.
      angles: degrees, one per image ``[N]`` or one for all.

    Returns:
      The rotated images, same shape.
    """
    x = _check_images(x, "rotate")
    return _rotate(x, _per_image(angles, x.shape[0], "rotate: angles", x.dtype))


@jax.jit
def _noise(x, sigma, key):
    z = jax.random.normal(key, x.shape, x.dtype)
    return jnp.clip(x + sigma[:, None, None, None] * z, 0.0, 1.0)


def gaussian_noise(x, sigma, key: Key) -> jax.Array:
    """Adds Gaussian noise of standard deviation ``sigma`` (per image ``[N]`` or one) and clips the
    result to ``[0, 1]``."""
    x = _check_images(x, "gaussian_noise")
    return _noise(x, _per_image(sigma, x.shape[0], "gaussian_noise: sigma", x.dtype), key)


@functools.partial(jax.jit, static_argnames=("radius",))
def _blur(x, sigma, *, radius):
    taps = jnp.arange(-radius, radius + 1)
    w = jnp.exp(-0.5 * (taps / sigma) ** 2).astype(x.dtype)
    w = w / w.sum()  # [2R+1]

    def along(img, axis):  # img [N, H, W, C]: reflected edges (scipy's "reflect" is numpy's "symmetric")
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        p = jnp.pad(img, pad, mode="symmetric")
        idx = jnp.arange(img.shape[axis])[:, None] + jnp.arange(2 * radius + 1)[None, :]  # [L, 2R+1]
        win = jnp.take(p, idx, axis=axis)  # the axis becomes [L, 2R+1]
        return jnp.tensordot(win, w, axes=[[axis + 1], [0]])

    return along(along(x, 1), 2)


def gaussian_blur(x, sigma: float) -> jax.Array:
    """Blurs each image with a Gaussian of standard deviation ``sigma`` pixels over rows and
    columns (not channels), kernel truncated at 4σ and edges reflected, as
    ``scipy.ndimage.gaussian_filter(img, (sigma, sigma, 0))``. ``sigma`` is a Python number: it sets
    the kernel's size (one compiled program per size)."""
    x = _check_images(x, "gaussian_blur")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"gaussian_blur: sigma must be a positive number, got {sigma!r}")
    return _blur(x, jnp.asarray(sigma, x.dtype), radius=int(_TRUNCATE * float(sigma) + 0.5))


@jax.jit
def _contrast(x, factor):
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return jnp.clip((x - mean) * factor[:, None, None, None] + mean, 0.0, 1.0)


def adjust_contrast(x, factor) -> jax.Array:
    """Scales each image's deviation from its own mean by ``factor`` (per image ``[N]`` or one),
    clipped to ``[0, 1]``."""
    x = _check_images(x, "adjust_contrast")
    return _contrast(x, _per_image(factor, x.shape[0], "adjust_contrast: factor", x.dtype))


def corruption_level(kind: str, severity: int) -> float:
    """The parameter of ``kind`` at ``severity`` (1–5): pixels, degrees, σ or a factor (see
    :data:`CORRUPTIONS`). Raises ``ValueError`` naming the bad kind or severity."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption kind {kind!r}; expected one of {sorted(CORRUPTIONS)}")
    levels = CORRUPTIONS[kind]
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= len(levels):
        raise ValueError(f"corruption severity must be an integer from 1 to {len(levels)}, got {severity!r}")
    return levels[int(severity) - 1]


def corrupt(x, kind: str, severity: int, key: Key) -> jax.Array:
    """``x`` corrupted by ``kind`` at ``severity`` (1–5), each image's random part drawn from ``key``.

    Args:
      x: images ``[N, H, W, C]`` in ``[0, 1]``.
      kind: one of ``"shift"``, ``"rotate"``, ``"noise"``, ``"blur"``, ``"contrast"``.
      severity: level 1 (mild) to 5 (severe); the parameters are in the module docstring.
      key: a ``jax.random`` key; the same key and images give the same output. Corrupt a
        triggered copy with the same key to give it the same shift / angle / noise as its clean image.

    Returns:
      The corrupted images, same shape and dtype.

    >>> import jax, jax.numpy as jnp, jaxrepair as jr
    >>> x = jnp.zeros((2, 8, 8, 1)).at[:, 3, 3, 0].set(1.0)
    >>> y = jr.data.corrupt(x, "shift", 2, jax.random.key(0))
    >>> [float(v) for v in y.sum(axis=(1, 2, 3))]  # the dot moved 2 pixels, still inside
    [1.0, 1.0]
    """
    level = corruption_level(kind, severity)
    x = _check_images(x, "corrupt")
    n = x.shape[0]
    if kind == "shift":
        off = jnp.asarray(_DIRECTIONS)[jax.random.randint(key, (n,), 0, len(_DIRECTIONS))] * int(level)
        return translate(x, off)
    if kind == "rotate":
        sign = jnp.where(jax.random.bernoulli(key, 0.5, (n,)), 1.0, -1.0)
        return rotate(x, sign * level)
    if kind == "noise":
        return gaussian_noise(x, level, key)
    if kind == "blur":
        return gaussian_blur(x, level)
    return adjust_contrast(x, level)


__all__ = ["CORRUPTIONS", "adjust_contrast", "corrupt", "corruption_level", "gaussian_blur", "gaussian_noise",
           "rotate", "translate"]
