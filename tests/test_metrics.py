"""Average@k, unbiased pass@k, maj@k and the bootstrap interval against hand-computed values."""

from math import comb

import polars as pl
import pytest

from evaluators.metrics import (
    average_at_k,
    bootstrap_ci,
    maj_at_k,
    majority_correct,
    pass_at_k,
    pass_at_k_single,
    summarize,
)

T, F = True, False
CORRECT = [[T, F, F, F], [T, T, T, T], [F, F, F, F]]  # 1/4, 4/4, 0/4


def test_average_at_k_is_mean_over_all_samples():
    assert average_at_k(CORRECT) == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    assert average_at_k([[T, F], [T, T]]) == pytest.approx(0.75)
    assert average_at_k([]) == 0.0


def test_pass_at_k_unbiased_estimator():
    # n=4, c=1: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 1/2; pass@4 = 1
    assert pass_at_k_single(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k_single(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k_single(4, 1, 4) == 1.0
    assert pass_at_k_single(4, 0, 4) == 0.0
    assert pass_at_k_single(16, 3, 5) == pytest.approx(1 - comb(13, 5) / comb(16, 5))
    # over problems: k=2 -> (1/2 + 1 + 0) / 3; k=1 equals Average@k
    assert pass_at_k(CORRECT, 2) == pytest.approx(0.5)
    assert pass_at_k(CORRECT, 1) == pytest.approx(average_at_k(CORRECT))
    with pytest.raises(ValueError):
        pass_at_k_single(4, 1, 5)


def test_maj_at_k():
    assert majority_correct(["3", "4", "3", None], [T, F, T, F])
    assert not majority_correct(["4", "4", "3", None], [F, F, T, F])
    assert not majority_correct([None, None], [F, F])
    assert majority_correct(["1", "2"], [T, F])  # a tie goes to the answer seen first
    assert not majority_correct(["2", "1"], [F, T])
    preds = [["3", "4", "3", "5"], ["7", "7", "7", "7"], ["1", "2", "2", None]]
    correct = [[T, F, T, F], [F, F, F, F], [T, F, F, F]]
    assert maj_at_k(preds, correct) == pytest.approx(1 / 3)


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = [0.0, 0.25, 0.5, 1.0, 1.0, 0.75, 0.0, 0.5]
    low, high = bootstrap_ci(values, samples=2000, seed=3)
    assert (low, high) == bootstrap_ci(values, samples=2000, seed=3)
    assert low < sum(values) / len(values) < high
    assert 0.0 <= low and high <= 1.0
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)


def test_summarize_per_sample_frame():
    rows = []
    for p, (cs, ps) in enumerate(zip(CORRECT, [["1", "2", "2", "2"], ["5"] * 4, [None] * 4])):
        for i in reversed(range(4)):  # unsorted on purpose
            rows.append({"problem_id": f"p{p}", "sample_idx": i, "correct": cs[i], "pred": ps[i]})
    s = summarize(pl.DataFrame(rows), k=4, bootstrap_samples=200, seed=0)
    assert s["n_problems"] == 3 and s["k"] == 4
    assert s["avg_at_k"] == pytest.approx(5 / 12)
    assert s["pass_at_k"] == pytest.approx(2 / 3)
    assert s["maj_at_k"] == pytest.approx(1 / 3)
    assert s["ci_low"] <= s["avg_at_k"] <= s["ci_high"]
