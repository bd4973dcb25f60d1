"""The SmolLM2-sized arithmetic task: splits by fact, pinned benchmarks, seeded prompts, gradable demonstrations."""

import pytest

from data_gen.config import PromptsConfig
from data_gen.prompts import load_prompts
from data_gen.smol_tasks import (
    SMOL_BENCHMARKS,
    fact_key,
    id_facts,
    id_problems,
    is_eval_fact,
    smol_benchmark_rows,
    smol_prompts,
)
from evaluators.benchmarks import get_benchmark


def test_fact_split_is_disjoint_and_covers_every_fact():
    facts = [fact_key(n, o) for n, o in id_facts()]
    held_out = [k for k in facts if is_eval_fact(k)]
    assert len(facts) == 256 + 136 + 64
    assert 0.12 < len(held_out) / len(facts) < 0.28  # about one in five
    train_text = {r["problem"] for r in id_problems(want_eval=False)}
    eval_text = {r["problem"] for r in id_problems(want_eval=True)}
    assert not train_text & eval_text
    assert len(train_text) + len(eval_text) == 2 * len(facts)  # every fact in both phrasings, once


def test_no_test_problem_shares_a_fact_or_text_with_any_training_prompt():
    train = smol_prompts(None, seed=0)
    train_answers = {(p, a) for p, a in zip(train["problem"], train["answer"])}
    for name in SMOL_BENCHMARKS:
        rows = smol_benchmark_rows(name)
        assert not {r["problem"] for r in rows} & {p for p, _ in train_answers}, name
    # smol-id asks held-out facts: the same numbers never appear in a training prompt with the same operator
    train_facts = {tuple(p.rstrip("?.").split()[-3:]) for p in train["problem"]}
    id_facts_asked = {tuple(r["problem"].rstrip("?.").split()[-3:]) for r in smol_benchmark_rows("smol-id")}
    assert not train_facts & id_facts_asked


def test_prompts_are_seeded_prefix_stable_and_bounded():
    a, b = smol_prompts(50, seed=0), smol_prompts(200, seed=0)
    assert a["prompt_id"].to_list() == b["prompt_id"].to_list()[:50]
    assert a["prompt_id"].to_list() != smol_prompts(50, seed=1)["prompt_id"].to_list()
    assert b["prompt_id"].n_unique() == 200
    with pytest.raises(ValueError, match="prompts.max_prompts"):
        smol_prompts(10_000, seed=0)
    df, skipped = load_prompts(PromptsConfig(source="smol", max_prompts=64), seed=0)
    assert df.height == 64 and df["prompt_id"].to_list() == smol_prompts(64, 0)["prompt_id"].to_list()
    assert df.columns == ["prompt_id", "source", "problem", "answer", "solution"] and sum(skipped.values()) == 0


def test_demonstrations_are_in_the_models_format_and_graded_correct():
    from data_gen.verifiers.math import MathVerifier

    verifier = MathVerifier()
    rows = smol_prompts(40, seed=0).to_dicts()
    assert all("=" in r["solution"] and "boxed" not in r["solution"] for r in rows)
    for r in rows:
        assert verifier.grade(r["solution"], verifier.prepare_gold(r["answer"]), 5.0).correct, r
        wrong = r["solution"].rsplit("=", 1)[0] + f"= {int(r['answer']) + 1}"
        assert not verifier.grade(wrong, verifier.prepare_gold(r["answer"]), 5.0).correct, wrong


def test_benchmarks_are_registered_pinned_and_answers_right():
    sizes = {"smol-id": 174, "smol-big": 200, "smol-chain": 120, "smol-words": 200}
    for name in SMOL_BENCHMARKS:
        frame = get_benchmark(name).load(limit=None)
        assert frame.height == sizes[name] and frame["problem"].n_unique() == frame.height
        assert get_benchmark(name).verifier == "math"
    for row in smol_benchmark_rows("smol-big")[:20] + smol_benchmark_rows("smol-chain")[:20]:
        expr = row["problem"].removeprefix("What is ").rstrip("?")
        assert str(sum(int(x) for x in expr.split(" + "))) == row["answer"]
    assert smol_benchmark_rows("smol-words", 5) == smol_benchmark_rows("smol-words")[:5]
    with pytest.raises(ValueError, match="unknown smol benchmark"):
        smol_benchmark_rows("smol-nope")


def test_the_recipe_uses_the_task_and_its_benchmarks():
    from pathlib import Path

    from workbench.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "compare-smollm2.yaml")
    assert recipe.prompts.source == "smol" and recipe.verify.verifier == "math"
    names = [b if isinstance(b, str) else b.name for b in recipe.evaluate.benchmarks]
    assert names[0] == "smol-id" and len(names) >= 3 and all(n in SMOL_BENCHMARKS for n in names)
    assert {e.algorithm for e in recipe.train} >= {"dft", "rft", "dpo", "ppo", "grpo", "sft"}
