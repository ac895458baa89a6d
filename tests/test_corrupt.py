"""Seeded image corruptions (jaxrepair/data/_corrupt.py) against scipy.ndimage on small images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as nd

import jaxrepair as jr

RNG = np.random.default_rng(0)
X = RNG.random((3, 9, 11, 2)).astype(np.float32)  # [N, H, W, C], not square: rows and columns differ


def test_translate_matches_scipy_shift():
    off = np.array([[2, -3], [0, 4], [-9, 1]])  # the last one moves every row out
    got = np.asarray(jr.data.translate(X, off))
    want = np.stack([nd.shift(X[i], (*off[i], 0), order=0, mode="constant", cval=0.0) for i in range(3)])
    np.testing.assert_array_equal(got, want)
    assert got[2].sum() == 0.0


def test_rotate_matches_scipy_rotate_bilinear():
    angles = np.array([17.0, -33.0, 90.0], np.float32)
    got = np.asarray(jr.data.rotate(X, angles))
    want = np.stack([nd.rotate(X[i], angles[i], reshape=False, order=1, mode="grid-constant") for i in range(3)])
    np.testing.assert_allclose(got, want, atol=2e-6)
    # direction: a dot right of the centre goes to the top at +90 degrees (counter-clockwise as displayed)
    dot = np.zeros((1, 7, 7, 1), np.float32)
    dot[0, 3, 6, 0] = 1.0
    assert np.argwhere(np.asarray(jr.data.rotate(dot, 90.0))[0, ..., 0] > 0.5).tolist() == [[0, 3]]


@pytest.mark.parametrize("sigma", [0.4, 1.0, 2.3])
def test_gaussian_blur_matches_scipy_gaussian_filter(sigma):
    got = np.asarray(jr.data.gaussian_blur(X, sigma))
    want = np.stack([nd.gaussian_filter(X[i], (sigma, sigma, 0)) for i in range(3)])  # reflect, truncate 4
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_noise_and_contrast_against_numpy():
    key = jax.random.key(3)
    got = np.asarray(jr.data.gaussian_noise(X, 0.2, key))
    z = np.asarray(jax.random.normal(key, X.shape, jnp.float32))
    np.testing.assert_allclose(got, np.clip(X + 0.2 * z, 0, 1), atol=1e-6)
    assert got.min() == 0.0 and got.max() == 1.0  # clipped at both ends
    got = np.asarray(jr.data.adjust_contrast(X, np.array([0.5, 1.0, 0.0], np.float32)))
    mean = X.mean(axis=(1, 2, 3), keepdims=True)
    want = np.clip((X - mean) * np.array([0.5, 1.0, 0.0])[:, None, None, None] + mean, 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got[2], np.full(X.shape[1:], mean[2, 0, 0, 0]), atol=1e-6)


def test_corrupt_levels_and_seeding():
    x = jnp.zeros((64, 12, 12, 1)).at[:, 5:7, 5:7, 0].set(1.0)  # a 2x2 square in the middle
    k = jax.random.key(0)
    for kind in jr.data.CORRUPTIONS:
        a, b = jr.data.corrupt(x, kind, 3, k), jr.data.corrupt(x, kind, 3, k)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # same key, same images
        assert a.shape == x.shape and a.dtype == x.dtype
    # shift: every image moves by exactly the level in rows or columns, mass kept inside the frame
    s = np.asarray(jr.data.corrupt(x, "shift", 3, k))
    pos = np.array([np.argwhere(img[..., 0] > 0).min(axis=0) for img in s]) - 5
    assert set(np.abs(pos).max(axis=1)) == {3} and len({tuple(p) for p in pos}) == 8
    np.testing.assert_array_equal(s.sum(axis=(1, 2, 3)), 4.0)
    assert not np.array_equal(s, np.asarray(jr.data.corrupt(x, "shift", 3, jax.random.key(1))))
    # rotate: each image turned by +level or -level degrees, both signs drawn
    r = np.asarray(jr.data.corrupt(x, "rotate", 5, k))
    turned = {sgn: np.asarray(jr.data.rotate(x[:1], sgn * 50.0))[0] for sgn in (1, -1)}
    signs = [[sgn for sgn, t in turned.items() if np.allclose(img, t, atol=1e-6)] for img in r]
    assert all(len(m) == 1 for m in signs) and {m[0] for m in signs} == {1, -1}
    # deterministic kinds equal their primitive at the documented level
    np.testing.assert_allclose(np.asarray(jr.data.corrupt(x, "blur", 5, k)),
                               np.asarray(jr.data.gaussian_blur(x, 1.0)), atol=0)
    assert jr.data.corruption_level("contrast", 1) == 0.75 and jr.data.corruption_level("noise", 5) == 0.38
    # noise grows with the level
    d = [float(jnp.abs(jr.data.corrupt(x, "noise", s_, k) - x).mean()) for s_ in (1, 5)]
    assert d[1] > 2 * d[0]


def test_bad_input_is_named():
    k = jax.random.key(0)
    with pytest.raises(ValueError, match="unknown corruption kind 'fog'"):
        jr.data.corrupt(X, "fog", 1, k)
    for bad in (0, 6, 2.0, True, "3"):
        with pytest.raises(ValueError, match="severity must be an integer from 1 to 5"):
            jr.data.corrupt(X, "shift", bad, k)
    with pytest.raises(ValueError, match=r"batch \[N, H, W, C\]"):
        jr.data.corrupt(X[0], "noise", 1, k)
    with pytest.raises(ValueError, match="floating point"):
        jr.data.corrupt((X * 255).astype(np.uint8), "noise", 1, k)
    with pytest.raises(ValueError, match="offsets must be integers"):
        jr.data.translate(X, np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="one value per image"):
        jr.data.rotate(X, np.zeros(2))
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        jr.data.gaussian_blur(X, 0.0)


def test_severities_share_one_compiled_program():
    from jaxrepair.data import _corrupt

    x = jnp.asarray(X)
    k = jax.random.key(0)
    jitted = {"shift": _corrupt._translate, "rotate": _corrupt._rotate, "noise": _corrupt._noise,
              "contrast": _corrupt._contrast}
    for kind, fn in jitted.items():
        jr.data.corrupt(x, kind, 1, k)
        size = fn._cache_size()
        for s in range(2, 6):  # the level is data, not a static argument
            jr.data.corrupt(x, kind, s, jax.random.key(s))
        assert fn._cache_size() == size, kind
