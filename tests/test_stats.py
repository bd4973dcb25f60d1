"""Seed aggregation and paired tests (evaluators/stats.py) against answers worked out by hand."""

import numpy as np
import pytest

from evaluators.stats import (
    crossed_means,
    hierarchical_means,
    holm,
    paired_bootstrap,
    paired_permutation_test,
    resamples_for,
    seed_mean_interval,
    smallest_holm_p,
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


def test_p_value_floor_is_two_over_b_plus_one():
    a, b = np.ones((1, 50)), np.zeros((1, 50))  # every replicate is +1: the smallest p the bootstrap gives
    for samples in (100, 999):
        assert paired_bootstrap(a, b, samples=samples)["p_value"] == pytest.approx(2 / (samples + 1))


def test_resamples_grow_with_comparisons_so_alpha_can_be_reached():
    for m, alpha in [(4, 0.05), (15, 0.05), (16, 0.05), (25, 0.05), (40, 0.01)]:
        b = resamples_for(m, alpha, at_least=1000)
        assert smallest_holm_p(m, b) <= alpha / 10 < smallest_holm_p(m, b - 1) or b == 1000
    assert resamples_for(1, 0.05, at_least=1000) == 1000
    assert smallest_holm_p(16, 200) == pytest.approx(32 / 201)  # dft-family's old setting: 0.159 > alpha
    assert resamples_for(10**6, 0.05, cap=5000) == 5000  # capped: the report then says alpha is out of reach
    # with the grown B, a clear difference in each of m = 25 comparisons survives Holm
    a, b = np.ones((3, 100)), np.zeros((3, 100))
    samples = resamples_for(25, 0.05)
    assert min(holm([paired_bootstrap(a, b, samples=samples)["p_value"]] * 25)) < 0.05


def test_crossed_bootstrap_shares_one_problem_draw_across_seeds():
    assert hierarchical_means is crossed_means  # the old name stays for callers
    # two identical seeds: a crossed draw (one problem set for both seeds) has the variance of one seed's
    # problem bootstrap; a nested draw (problems drawn afresh per seed) would halve it
    row = np.random.default_rng(1).random(200)
    one = crossed_means(row[None, :], samples=4000, seed=2).var()
    two = crossed_means(np.stack([row, row]), samples=4000, seed=3).var()
    assert two == pytest.approx(one, rel=0.15) and two > 0.75 * one


def test_seed_spread():
    r = seed_mean_interval([[0.2] * 10, [0.4] * 10, [0.3] * 10])
    assert r["seed_sd"] == pytest.approx(0.1) and (r["seed_min"], r["seed_max"]) == pytest.approx((0.2, 0.4))
