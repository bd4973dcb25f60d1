"""Builders: positives, DPO pair invariants, rl prompts, demonstrations, stats."""

import polars as pl

from data_gen.builders import (
    build_demonstrations,
    build_pairs,
    build_positives,
    build_rl_prompts,
    build_stats,
    print_stats,
)
from data_gen.config import BuildConfig

PROMPTS = pl.DataFrame({
    "prompt_id": ["a", "b", "c", "d"], "source": ["t"] * 4, "problem": ["pa", "pb", "pc", "pd"],
    "answer": ["1", "2", "3", "4"], "solution": [r"\boxed{1}", None, "", r"\boxed{4}"],
})
# a: mixed (2 distinct correct incl. a duplicate, 2 wrong); b: all correct; c: all wrong; d: 1 right 3 wrong
SAMPLES = {
    "a": [("r1", True), ("r1", True), ("w1", False), ("r2", True), ("w2", False)],
    "b": [("x", True), ("y", True)],
    "c": [("u", False), ("v", False)],
    "d": [("ok", True), ("n1", False), ("n2", False), ("n3", False)],
}


def verified():
    rows = [{"prompt_id": p, "sample_idx": i, "response": r, "correct": c, "num_tokens": 3,
             "finish_reason": "stop", "pred": None, "status": "ok"}
            for p, items in SAMPLES.items() for i, (r, c) in enumerate(items)]
    return pl.DataFrame(rows)


def test_positives_dedup():
    pos = build_positives(verified(), PROMPTS, BuildConfig())
    assert pos.filter(pl.col("prompt_id") == "a")["response"].to_list() == ["r1", "r2"]
    assert len(pos) == 2 + 2 + 0 + 1
    assert len(build_positives(verified(), PROMPTS, BuildConfig(dedup_positives=False))) == 6


def _check_pair_invariants(pairs):
    correct = {(p, r) for p, items in SAMPLES.items() for r, c in items if c}
    wrong = {(p, r) for p, items in SAMPLES.items() for r, c in items if not c}
    for row in pairs.to_dicts():
        assert (row["prompt_id"], row["chosen"]) in correct
        assert (row["prompt_id"], row["rejected"]) in wrong
        assert row["problem"] == "p" + row["prompt_id"]
    assert not set(pairs["prompt_id"]) & {"b", "c"}  # no pair from all-correct or all-wrong prompts


def test_pairs_invariants_and_limits():
    for strategy in ("random", "first"):
        for k in (1, 2, 10):
            pairs = build_pairs(verified(), PROMPTS, BuildConfig(pair_strategy=strategy, max_pairs_per_prompt=k), 0)
            _check_pair_invariants(pairs)
            counts = dict(pairs.group_by("prompt_id").len().iter_rows())
            assert counts == {"a": min(k, 4), "d": min(k, 3)}
            assert pairs.unique().height == pairs.height
    first = build_pairs(verified(), PROMPTS, BuildConfig(pair_strategy="first"), 0)
    assert first.filter(pl.col("prompt_id") == "a").row(0, named=True)["chosen"] == "r1"
    capped = build_pairs(verified(), PROMPTS, BuildConfig(max_pairs_per_prompt=5, target_pairs=3), 0)
    assert len(capped) == 3
    _check_pair_invariants(capped)
    again = build_pairs(verified(), PROMPTS, BuildConfig(max_pairs_per_prompt=5, target_pairs=3), 0)
    assert capped.equals(again)


def test_rl_prompts_demonstrations_and_stats(capsys):
    assert build_rl_prompts(PROMPTS).columns == ["prompt_id", "problem", "answer"]
    demos = build_demonstrations(PROMPTS)
    assert demos["prompt_id"].to_list() == ["a", "d"] and demos.columns == ["prompt_id", "problem", "response"]
    v = verified()
    pos = build_positives(v, PROMPTS, BuildConfig())
    pairs = build_pairs(v, PROMPTS, BuildConfig(), 0)
    stats = build_stats(v, pos, pairs)
    assert stats["samples"] == 13 and stats["prompts_with_correct"] == 3
    assert abs(stats["pass@1"] - (3 / 5 + 1 + 0 + 1 / 4) / 4) < 1e-9
    assert stats["pass@5"] == 0.75
    assert stats["prompts_without_pairs"] == {"all_correct": 1, "all_wrong": 1, "target_reached": 0}
    assert stats["positives"] == 5 and stats["pairs"] == 2
    print_stats(stats)
    assert "pass@1" in capsys.readouterr().out


def test_truncated_correct_is_no_positive_nor_chosen():
    """A correct response cut at max_tokens ("y" of prompt b) is excluded from positives and chosen, kept as a
    rejected, counted in stats; keep_truncated restores the old behaviour."""
    v = verified().with_columns(
        pl.when((pl.col("prompt_id") == "b") & (pl.col("response") == "y")).then(pl.lit("length"))
        .otherwise(pl.col("finish_reason")).alias("finish_reason"))
    pos = build_positives(v, PROMPTS, BuildConfig())
    assert pos.filter(pl.col("prompt_id") == "b")["response"].to_list() == ["x"]
    pairs = build_pairs(v, PROMPTS, BuildConfig(), 0)
    assert pairs.filter(pl.col("prompt_id") == "b").select("chosen", "rejected").rows() == [("x", "y")]
    assert "y" not in pairs["chosen"].to_list()
    stats = build_stats(v, pos, pairs, BuildConfig())
    assert (stats["truncated"], stats["truncated_correct"], stats["truncated_kept"]) == (1, 1, False)
    assert stats["prompts_without_pairs"]["all_correct"] == 0
    keep = BuildConfig(keep_truncated=True)
    assert build_positives(v, PROMPTS, keep).filter(pl.col("prompt_id") == "b")["response"].to_list() == ["x", "y"]
    assert "b" not in build_pairs(v, PROMPTS, keep, 0)["prompt_id"].to_list()
    assert build_stats(v, pos, pairs, keep)["truncated_kept"] is True
