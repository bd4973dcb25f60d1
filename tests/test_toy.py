"""The toy task: correct worked solutions, disjoint train/eval splits, stable prompt ids."""

import random

import pytest
from math_verify import parse, verify

from data_gen.config import ToyTaskConfig
from data_gen.toy import (
    TOY_BENCHMARKS,
    is_eval_problem,
    make_demonstration,
    make_problem,
    prompt_id,
    toy_benchmark,
    toy_prompts,
)

CONFIGS = [ToyTaskConfig(), ToyTaskConfig(operators="+-*", max_ops=4), *TOY_BENCHMARKS.values()]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_solutions_box_the_true_value(cfg):
    rng = random.Random(1)
    for _ in range(100):
        item = make_problem(rng, cfg)
        truth = eval(item["problem"])  # the problem is a plain Python expression of ints
        assert item["answer"] == str(truth)
        assert item["solution"].endswith("\\boxed{" + str(truth) + "}")
        assert verify(parse("$" + item["answer"] + "$"), parse(item["solution"]))
        n_ops = sum(item["problem"].count(op) for op in "+-*")  # operands are never negative
        assert cfg.min_ops <= n_ops <= cfg.max_ops


def test_math_verify_rejects_a_wrong_answer():
    item = make_problem(random.Random(0), ToyTaskConfig())
    wrong = item["solution"].replace("\\boxed{" + item["answer"], "\\boxed{" + item["answer"] + "1")
    assert not verify(parse("$" + item["answer"] + "$"), parse(wrong))


def test_slipped_demonstrations_are_wrong_and_rate_is_respected():
    rng = random.Random(2)
    demos = [make_demonstration(rng, ToyTaskConfig(), 0.25) for _ in range(2000)]
    slipped = [d for d in demos if d["slipped"]]
    assert 0.2 < len(slipped) / len(demos) < 0.3
    assert all(not d["solution"].endswith("\\boxed{" + d["answer"] + "}") for d in slipped)
    assert all(d["solution"].endswith("\\boxed{" + str(eval(d["problem"])) + "}") for d in demos if not d["slipped"])
    assert not any(is_eval_problem(d["problem"]) for d in demos)


def test_train_and_eval_splits_are_disjoint():
    train = toy_prompts(ToyTaskConfig(), 3000, seed=0)
    assert train["problem"].n_unique() == 3000 and train["prompt_id"].n_unique() == 3000
    assert set(train["source"]) == {"toy"}
    assert not any(is_eval_problem(p) for p in train["problem"])
    for name in TOY_BENCHMARKS:
        bench = toy_benchmark(name, 200)
        assert bench.columns == ["problem", "answer"] and bench["problem"].n_unique() == 200
        assert all(is_eval_problem(p) for p in bench["problem"])
        assert not set(bench["problem"]) & set(train["problem"])
    # about one problem in ten is held out
    rng = random.Random(3)
    share = sum(is_eval_problem(make_problem(rng, ToyTaskConfig())["problem"]) for _ in range(5000)) / 5000
    assert 0.07 < share < 0.13


def test_prompt_ids_and_benchmarks_are_stable():
    a, b = toy_prompts(ToyTaskConfig(), 50, seed=7), toy_prompts(ToyTaskConfig(), 50, seed=7)
    assert a.equals(b)
    assert a["prompt_id"][0] == prompt_id(a["problem"][0]) == prompt_id(" " + a["problem"][0] + "\n")
    assert prompt_id("1+2") == "toy-829e4d66733e1268"  # ids must never change between versions
    assert toy_prompts(ToyTaskConfig(), 50, seed=8)["prompt_id"].to_list() != a["prompt_id"].to_list()
    assert toy_benchmark("toy-id", 30).equals(toy_benchmark("toy-id", 30))


def test_bad_config_and_name_raise():
    with pytest.raises(ValueError, match="min_ops"):
        make_problem(random.Random(0), ToyTaskConfig(min_ops=3, max_ops=2))
    with pytest.raises(ValueError, match="operators"):
        make_problem(random.Random(0), ToyTaskConfig(operators="/"))
    with pytest.raises(ValueError, match="toy-nope"):
        toy_benchmark("toy-nope")
