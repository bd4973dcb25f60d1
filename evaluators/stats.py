"""Uncertainty over training seeds and problems, and paired tests between methods.

A method's result on one benchmark is a matrix `scores[seed, problem]`: the share of the k samples of
that problem judged correct, for the checkpoint trained (and evaluated) with that seed. Every method is
evaluated on the same problems with the same seeds, so two methods pair up cell by cell.

- `crossed_means`: bootstrap replicates of the grand mean with seeds and problems resampled as crossed
  factors: each replicate draws one set of problems (with replacement), shared by every seed, and
  independently a set of seeds. It is not the nested (hierarchical) bootstrap, which would draw problems
  afresh within each drawn seed; the problems are the same for every seed here, so crossing them is the
  right model (Owen 2007, "The pigeonhole bootstrap", for crossed factors). The interval
  carries the training-seed variance, not only the finite benchmark. With one seed it is the usual
  bootstrap over problems.
- `seed_mean_interval`: the mean over seeds of Average@k with that interval, the across-seed standard
  deviation of the per-seed means, and their range.
- `paired_bootstrap`: the mean paired difference `a - b` with the same crossed interval and a two-sided
  bootstrap p-value: 2 x min((#replicates <= 0) + 1, (#replicates >= 0) + 1) / (B + 1), capped at 1, so
  never below 2 / (B + 1) for B resamples.
- `paired_permutation_test`: the sign-flip test over problems of the seed-averaged differences (exact
  enumeration for up to 16 problems, Monte Carlo otherwise); the problems-only view, kept beside.
- `holm`: Holm-Bonferroni adjusted p-values over a family of comparisons. Its smallest adjusted value is at
  least m x 2 / (B + 1) for m comparisons (`smallest_holm_p`), so `resamples_for` picks B large enough that
  this floor is at most alpha / 10: otherwise a set of comparisons could never be called significant.

Plain numpy, fixed seeds: the same inputs always give the same numbers.
"""

from __future__ import annotations

import itertools

import numpy as np


def as_matrix(scores) -> np.ndarray:
    """`scores` as a float [seeds, problems] matrix; a flat list is one seed."""
    m = np.asarray(scores, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"stats: expected scores[seed][problem] with at least one of each, got shape {m.shape}")
    return m


def crossed_means(scores, samples: int = 2000, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of the grand mean, seeds and problems resampled as crossed factors: one draw of
    problems per replicate, shared by all seeds, and one independent draw of seeds."""
    m = as_matrix(scores)
    n_seeds, n_problems = m.shape
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, n_seeds, size=(samples, n_seeds)) if n_seeds > 1 else np.zeros((samples, 1), int)
    prob_idx = rng.integers(0, n_problems, size=(samples, n_problems))
    per_seed = m[:, prob_idx]  # [seeds, samples, problems]: the same problems for every seed of a replicate
    per_seed = per_seed.mean(axis=2).T  # [samples, seeds]
    return np.take_along_axis(per_seed, seed_idx, axis=1).mean(axis=1)


hierarchical_means = crossed_means  # the old, wrong name, kept for callers


def _interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    return float(np.percentile(replicates, tail)), float(np.percentile(replicates, 100 - tail))


def seed_mean_interval(scores, samples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """{mean, low, high, seed_sd, seed_min, seed_max, n_seeds, n_problems}: the mean over seeds, its crossed
    bootstrap interval, and the across-seed standard deviation (ddof 1) and range of the per-seed means."""
    m = as_matrix(scores)
    low, high = _interval(crossed_means(m, samples, seed), level)
    per_seed = m.mean(axis=1)
    return {"mean": float(per_seed.mean()), "low": low, "high": high,
            "seed_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0,
            "seed_min": float(per_seed.min()), "seed_max": float(per_seed.max()),
            "n_seeds": m.shape[0], "n_problems": m.shape[1]}


def _paired(a, b) -> np.ndarray:
    a, b = as_matrix(a), as_matrix(b)
    if a.shape != b.shape:
        raise ValueError(f"stats: paired scores need the same seeds and problems, got {a.shape} and {b.shape}")
    return a - b


def paired_bootstrap(a, b, samples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """{difference, low, high, p_value}: mean of `a - b` over seeds and problems, crossed bootstrap.

    The p-value is two-sided: 2 x min((#replicates <= 0) + 1, (#replicates >= 0) + 1) / (samples + 1),
    capped at 1, never below 2 / (samples + 1). Identical inputs give p = 1.
    """
    d = _paired(a, b)
    reps = crossed_means(d, samples, seed)
    low, high = _interval(reps, level)
    below, above = (np.sum(reps <= 0) + 1) / (samples + 1), (np.sum(reps >= 0) + 1) / (samples + 1)
    return {"difference": float(d.mean()), "low": low, "high": high,
            "p_value": float(min(1.0, 2 * min(below, above)))}


def paired_permutation_test(a, b, samples: int = 10000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of mean(a - b) over problems (seed-averaged differences).

    Under the null the two methods' labels are exchangeable within each problem, so each problem's
    difference keeps or flips its sign with probability 1/2. Up to 16 problems every flip pattern is
    enumerated (exact); beyond, `samples` random patterns plus the observed one.
    """
    d = _paired(a, b).mean(axis=0)
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, observed)
    if len(d) <= 16:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
        return float(np.mean(np.abs(signs @ d / len(d)) >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(samples, len(d)))
    hits = np.sum(np.abs(signs @ d / len(d)) >= observed - tol)
    return float((hits + 1) / (samples + 1))


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (controls the family-wise error rate)."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def smallest_holm_p(comparisons: int, samples: int) -> float:
    """The smallest Holm-adjusted bootstrap p-value a family of `comparisons` can reach with `samples`
    resamples: m x 2 / (B + 1) (capped at 1)."""
    return min(1.0, comparisons * 2.0 / (samples + 1))


def resamples_for(comparisons: int, alpha: float, at_least: int = 1000, cap: int = 200_000) -> int:
    """Bootstrap resamples B such that the smallest attainable Holm-adjusted p, 2m / (B + 1), is at most
    alpha / 10: B = ceil(20 m / alpha) - 1, at least `at_least`, at most `cap` (then the report says when the
    family still cannot reach alpha)."""
    need = int(np.ceil(20 * max(1, comparisons) / alpha)) - 1
    return int(min(cap, max(at_least, need)))
