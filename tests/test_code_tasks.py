"""Code tasks: the generated toy set and the shipped HumanEval-style problems load as prompts and benchmarks,
and their reference solutions pass the code verifier."""

import pytest

from data_gen.code_tasks import humaneval_style_rows, toy_code_benchmark_rows, toy_code_prompts
from data_gen.config import PromptsConfig
from data_gen.prompts import load_prompts
from data_gen.verifiers import grade_many, make_verifier
from data_gen.verifiers.sandbox import bwrap_path
from evaluators.benchmarks import get_benchmark


def test_toy_code_prompts_deterministic_and_held_out():
    a, b = toy_code_prompts(30, seed=1), toy_code_prompts(30, seed=1)
    assert a.equals(b) and a["prompt_id"].n_unique() == 30
    held_out = {r["problem"] for r in toy_code_benchmark_rows()}
    assert len(held_out) == 50 and not held_out & set(toy_code_prompts(200, seed=2)["problem"])
    df, _ = load_prompts(PromptsConfig(source="toy-code", max_prompts=5), seed=0)
    assert df.height == 5 and set(df["source"]) == {"toy-code"} and df["answer"].str.contains("assert").all()


def test_benchmarks_name_the_code_verifier():
    for name, n in (("toy-code", 50), ("humaneval-style", 8)):
        bench = get_benchmark(name)
        assert bench.verifier == "code" and bench.load().height == n
    assert get_benchmark("math500").verifier == "math"


@pytest.mark.skipif(bwrap_path() is None, reason="bwrap not installed")
def test_reference_solutions_pass_and_wrong_ones_fail():
    rows = humaneval_style_rows() + toy_code_benchmark_rows()[:8]
    v = make_verifier("code")
    grades = grade_many(v, [r["solution"] for r in rows], [r["answer"] for r in rows], timeout_s=5.0)
    assert [g.pred for g in grades] == ["passed"] * len(rows)
    wrong = [r["solution"].replace("return", "return None and", 1) for r in rows[:4]]
    assert not any(g.correct for g in grade_many(v, wrong, [r["answer"] for r in rows[:4]], timeout_s=5.0))
