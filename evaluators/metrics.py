"""Accuracy metrics over k sampled responses per problem.

- Average@k (the paper's metric): sample k responses per problem at temperature 1.0 and take the mean
  correctness over all of them, i.e. the mean over problems of (correct samples / k).
- pass@k: the chance that at least one of k samples is correct, with the unbiased estimator of
  Chen et al. (2021) from n >= k samples of which c are correct: `1 - C(n-c, k) / C(n, k)`.
- maj@k: majority vote over the k extracted answers (`pred`); the problem counts as solved when the
  most frequent answer is a correct one.
- A bootstrap 95% interval for Average@k, resampling problems (not samples) with a fixed seed.

Every function takes plain Python lists so it can be checked by hand; `summarize` applies them to a
per-sample frame (problem_id, sample_idx, correct, pred).
"""

from __future__ import annotations

from collections import Counter
from math import comb

import numpy as np
import polars as pl


def average_at_k(correct: list[list[bool]]) -> float:
    """Mean correctness over all samples of every problem (`correct[problem][sample]`)."""
    if not correct:
        return 0.0
    return float(np.mean([sum(c) / len(c) for c in correct]))


def pass_at_k_single(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with n samples, c of them correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def pass_at_k(correct: list[list[bool]], k: int) -> float:
    """Mean unbiased pass@k over problems."""
    if not correct:
        return 0.0
    return float(np.mean([pass_at_k_single(len(c), sum(c), k) for c in correct]))


def majority_correct(preds: list[str | None], correct: list[bool]) -> bool:
    """Is the most frequent extracted answer correct? Ties go to the answer seen first; no answers: False."""
    counts = Counter(p for p in preds if p is not None and p != "")
    if not counts:
        return False
    best = max(counts.values())
    winner = next(p for p in preds if p is not None and p != "" and counts[p] == best)
    votes = [ok for p, ok in zip(preds, correct) if p == winner]
    return sum(votes) * 2 > len(votes) or (sum(votes) * 2 == len(votes) and votes[0])


def maj_at_k(preds: list[list[str | None]], correct: list[list[bool]]) -> float:
    """Share of problems whose majority-vote answer is correct."""
    if not correct:
        return 0.0
    return float(np.mean([majority_correct(p, c) for p, c in zip(preds, correct)]))


def bootstrap_ci(per_problem: list[float], samples: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap interval (low, high) of the mean of `per_problem`, resampling problems."""
    values = np.asarray(per_problem, dtype=float)
    if len(values) == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(samples, len(values)))
    means = values[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def group_by_problem(samples: pl.DataFrame) -> tuple[list[list[bool]], list[list[str | None]]]:
    """(correct, pred) lists per problem, in first-seen problem order and sample_idx order."""
    ordered = samples.with_row_index("_row").sort(["problem_id", "sample_idx"])
    grouped = ordered.group_by("problem_id", maintain_order=True).agg(
        pl.col("_row").min().alias("_first"), pl.col("correct"), pl.col("pred")
    ).sort("_first")
    return [list(map(bool, c)) for c in grouped["correct"]], list(grouped["pred"])


def summarize(samples: pl.DataFrame, k: int, bootstrap_samples: int = 1000, seed: int = 0) -> dict:
    """Metrics of one benchmark from its per-sample frame; accuracies are fractions in [0, 1]."""
    correct, preds = group_by_problem(samples)
    low, high = bootstrap_ci([sum(c) / len(c) for c in correct], bootstrap_samples, seed)
    return {
        "n_problems": len(correct),
        "k": k,
        "avg_at_k": average_at_k(correct),
        "pass_at_k": pass_at_k(correct, min([k] + [len(c) for c in correct])),
        "maj_at_k": maj_at_k(preds, correct),
        "ci_low": low,
        "ci_high": high,
    }
