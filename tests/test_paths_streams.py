"""Reproducible streams: blocks, offsets, chunking, threads, seeds, antithetics, dtype."""
import math

import numpy as np
import pytest

from ltvsim import _config
from ltvsim.paths import gbm
from ltvsim.paths._streams import path_normals, path_uniforms
from _paths_helpers import models

MODELS = models()
DT = 1 / 365
B = _config.RNG_PATH_BLOCK


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return MODELS[request.param]


def test_normals_match_the_normal_cdf():
    z = np.concatenate([path_normals(11, p, 50_000) for p in range(8)])  # 400k draws
    n = z.size
    for q in (-3.5, -2.5, -1.5, -0.5, 0.0, 0.7, 1.8, 3.0):
        p = 0.5 * (1 + math.erf(q / math.sqrt(2)))
        # binomial standard error; 5 SE leaves a 1-in-a-million false alarm per point
        assert abs((z < q).mean() - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-6, q
    assert abs(z.mean()) < 5 / math.sqrt(n) and abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    u = path_uniforms(11, 3, 200_000)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / u.size)


def test_block_i_equals_block_i_alone(model):
    full = model.paths(3 * B, 20, DT, seed=7).prices
    alone = model.paths(B, 20, DT, seed=7, path_offset=2 * B).prices
    np.testing.assert_array_equal(full[2 * B:], alone)
    part = model.paths(B + 5, 20, DT, seed=7).prices  # a run's size never changes a path
    np.testing.assert_array_equal(full[: B + 5], part)


def test_streaming_chunks_concatenate_to_the_whole_run(model):
    whole = model.paths(2 * B + 100, 15, DT, seed=3).prices
    chunks = list(model.stream(2 * B + 100, 15, DT, seed=3, chunk_paths=B))
    assert [c.n_paths for c in chunks] == [B, B, 100]
    np.testing.assert_array_equal(np.concatenate([c.prices for c in chunks]), whole)
    odd = np.concatenate([c.prices for c in model.stream(2 * B + 100, 15, DT, seed=3, chunk_paths=333)])
    np.testing.assert_array_equal(odd, whole)


def test_one_and_two_threads_give_identical_paths(model):
    one = model.paths(2 * B, 30, DT, seed=9, n_threads=1).prices
    two = model.paths(2 * B, 30, DT, seed=9, n_threads=2).prices
    np.testing.assert_array_equal(one, two)


def test_different_seeds_differ_and_same_seed_repeats(model):
    a = model.paths(64, 10, DT, seed=1).prices
    b = model.paths(64, 10, DT, seed=2).prices
    assert np.all(np.any(a[:, 1:] != b[:, 1:], axis=(1, 2)))
    np.testing.assert_array_equal(a, model.paths(64, 10, DT, seed=1).prices)
    # paths within a run differ from each other too
    assert np.unique(a[:, -1, 0]).size == 64


def test_a_shorter_horizon_is_a_prefix(model):
    long = model.paths(50, 40, DT, seed=4).prices
    short = model.paths(50, 25, DT, seed=4).prices
    np.testing.assert_array_equal(long[:, :26], short)


def test_float32_is_the_float64_run_rounded(model):
    p64 = model.paths(100, 20, DT, seed=5).prices
    p32 = model.paths(100, 20, DT, seed=5, dtype=np.float32).prices
    assert p32.dtype == np.float32
    np.testing.assert_array_equal(p32, p64.astype(np.float32))


def test_antithetic_pairs_mirror_gaussian_shocks():
    p = gbm([100.0, 50.0], 0.0, [0.5, 0.9], corr=[[1, 0.3], [0.3, 1]], n_paths=8, n_steps=20, dt=DT, antithetic=True)
    log_inc = np.diff(np.log(p.prices), axis=1)
    drift = (0.0 - 0.5 * np.array([0.5, 0.9]) ** 2) * DT
    np.testing.assert_allclose(log_inc[0::2] - drift, -(log_inc[1::2] - drift), atol=1e-12)
    plain = gbm([100.0, 50.0], 0.0, [0.5, 0.9], corr=[[1, 0.3], [0.3, 1]], n_paths=8, n_steps=20, dt=DT)
    np.testing.assert_array_equal(plain.prices[0], p.prices[0])


def test_antithetic_refused_for_bootstrap():
    with pytest.raises(ValueError, match="antithetic"):
        MODELS["bootstrap"].paths(4, 3, DT, antithetic=True)


def test_gbm_matches_a_numpy_reference_built_from_the_same_stream():
    s0, mu, sigma = np.array([100.0, 20.0]), np.array([0.05, -0.1]), np.array([0.6, 0.9])
    corr = np.array([[1.0, -0.4], [-0.4, 1.0]])
    n_steps, dt = 12, 1 / (365 * 3)
    p = gbm(s0, mu, sigma, corr=corr, n_paths=B + 3, n_steps=n_steps, dt=dt, seed=21).prices
    chol = np.linalg.cholesky(corr)
    for path in (0, 1, B + 2):
        z = path_normals(21, path, n_steps * 2).reshape(n_steps, 2)
        inc = (mu - 0.5 * sigma**2) * dt + (z @ chol.T) * sigma * np.sqrt(dt)
        expected = s0 * np.exp(np.vstack([np.zeros(2), np.cumsum(inc, axis=0)]))
        np.testing.assert_allclose(p[path], expected, rtol=1e-12)
