"""Seed aggregation and paired tests (evaluators/stats.py) against answers worked out by hand."""

import numpy as np
import pytest

from evaluators.stats import (
    hierarchical_means,
    holm,
    paired_bootstrap,
    paired_permutation_test,
    seed_mean_interval,
)


def test_permutation_test_known_answers():
    # three problems, all +1: of the 8 sign patterns only all-plus and all-minus reach |mean| = 1
    assert paired_permutation_test([1, 1, 1], [0, 0, 0]) == pytest.approx(2 / 8)
    # +1, -1: the observed mean is 0, every pattern is at least as extreme
    assert paired_permutation_test([1, 0], [0, 1]) == 1.0
    # differences 2, 1, 1 (mean 4/3): patterns with |sum| >= 4 are +++ and --- only -> 2/8
    assert paired_permutation_test([[2, 1, 1]], [[0, 0, 0]]) == pytest.approx(0.25)
    # differences 1, 1, 1, 0: the sign of the zero does not matter -> 4/16
    assert paired_permutation_test([1, 1, 1, 0], [0, 0, 0, 0]) == pytest.approx(0.25)


def test_identical_inputs_give_p_one():
    rng = np.random.default_rng(0)
    a = rng.random((3, 200))
    assert paired_permutation_test(a, a) == 1.0
    result = paired_bootstrap(a, a)
    assert result["p_value"] == 1.0 and result["difference"] == 0.0 and result["low"] == result["high"] == 0.0


def test_large_shift_gives_small_p_and_interval_around_it():
    rng = np.random.default_rng(1)
    b = rng.random((3, 300)) * 0.5
    a = b + 0.3 + rng.normal(0, 0.05, size=b.shape)
    result = paired_bootstrap(a, b, samples=2000)
    assert result["p_value"] < 0.002
    assert result["low"] < result["difference"] < result["high"]
    assert 0.28 < result["low"] and result["high"] < 0.32
    assert paired_permutation_test(a, b, samples=2000) < 0.001
    assert paired_bootstrap(b, a)["difference"] == pytest.approx(-result["difference"])


def test_no_shift_is_not_significant():
    rng = np.random.default_rng(2)
    a, b = rng.random((3, 400)), rng.random((3, 400))
    assert paired_bootstrap(a, b)["p_value"] > 0.05
    assert paired_permutation_test(a, b) > 0.05


def test_seed_variance_widens_the_interval():
    problems = np.random.default_rng(3).random(200)
    same = np.stack([problems] * 3)
    spread = np.stack([problems - 0.1, problems, problems + 0.1])
    a, b = seed_mean_interval(same), seed_mean_interval(spread)
    assert a["mean"] == pytest.approx(b["mean"]) and a["seed_sd"] == 0.0 and b["seed_sd"] == pytest.approx(0.1)
    assert (b["high"] - b["low"]) > 2 * (a["high"] - a["low"])
    # one seed: the plain bootstrap over problems, around the mean
    one = seed_mean_interval(problems)
    assert one["n_seeds"] == 1 and one["low"] < one["mean"] < one["high"]


def test_hierarchical_means_are_deterministic_and_constant_for_constants():
    m = np.full((2, 50), 0.4)
    assert np.allclose(hierarchical_means(m, 100), 0.4)
    x = np.random.default_rng(4).random((3, 30))
    assert np.array_equal(hierarchical_means(x, 100, seed=5), hierarchical_means(x, 100, seed=5))


def test_shape_errors_and_holm():
    with pytest.raises(ValueError, match="same seeds and problems"):
        paired_bootstrap([[1, 0]], [[1, 0, 1]])
    with pytest.raises(ValueError, match="at least one"):
        seed_mean_interval([])
    # Holm: sorted 0.01, 0.02, 0.04 times 3, 2, 1 -> 0.03, 0.04, 0.04 (monotone)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
