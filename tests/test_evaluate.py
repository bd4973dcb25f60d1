"""End to end: the toy model evaluated on toy benchmarks with k=4 through the real sampler and verifier."""

import polars as pl
import pytest

from evaluators.config import EvaluateConfig
from evaluators.evaluate import (
    SAMPLE_COLUMNS,
    benchmark_refs,
    evaluate_model,
    evaluate_standalone,
    render_summary,
    summarize_folder,
)


@pytest.fixture(scope="module")
def toy_model():
    """A toy model pretrained for a few steps (about 10 s, cached); the full `toy:arith` takes minutes."""
    import torch

    from workbench.models import build_toy_model

    torch.set_num_threads(1)
    return str(build_toy_model("arith", steps=30, log=None))


def test_benchmark_refs():
    refs = benchmark_refs(["toy-id", {"name": "toy-long", "limit": 3}], default_limit=5)
    assert [(r.name, r.limit) for r in refs] == [("toy-id", 5), ("toy-long", 3)]
    with pytest.raises(ValueError, match="listed twice"):
        benchmark_refs(["toy-id", "toy-id"])


def test_toy_model_end_to_end(ray_local, toy_model, tmp_path):
    from workbench.models import toy_template

    cfg = EvaluateConfig(benchmarks=["toy-id", "toy-long"], k=4, limit=6, engine="hf",
                         max_tokens=48, bootstrap_samples=200)
    summary = evaluate_model(toy_model, cfg.benchmarks, cfg, toy_template(), tmp_path / "a", "base", seed=0)

    assert summary.columns == ["model", "benchmark", "n_problems", "k", "avg_at_k", "pass_at_k", "maj_at_k",
                               "ci_low", "ci_high"]
    assert summary["benchmark"].to_list() == ["toy-id", "toy-long"]
    assert summary["n_problems"].to_list() == [6, 6] and summary["k"].to_list() == [4, 4]
    for r in summary.iter_rows(named=True):
        assert 0 <= r["ci_low"] <= r["avg_at_k"] <= r["ci_high"] <= 1
        assert r["avg_at_k"] <= r["pass_at_k"] <= 1

    samples = pl.read_parquet(tmp_path / "a" / "toy-id.parquet")
    assert samples.columns == SAMPLE_COLUMNS
    assert samples.height == 6 * 4
    assert samples.group_by("problem_id").len()["len"].to_list() == [4] * 6
    assert set(samples["finish_reason"]) <= {"stop", "length"}
    assert set(samples["status"]) <= {"ok", "no_answer", "timeout", "error"}
    assert (samples["num_tokens"] <= 48).all() and (samples["num_tokens"] > 0).all()
    # Average@k is the mean of the stored per-sample correctness, and files alone reproduce the summary
    assert summary["avg_at_k"][0] == pytest.approx(samples["correct"].cast(float).mean())
    assert summarize_folder(tmp_path / "a", "base", ["toy-id", "toy-long"], 4, 200, 0).equals(summary)
    assert pl.read_parquet(tmp_path / "a" / "summary.parquet").equals(summary)
    assert "| toy-id | 6 | 4 |" in render_summary(summary)

    # the standalone command, same model, prompts, template and seed: the same samples
    # (sampled batches must match too: a different prompt mix draws different random numbers)
    again = evaluate_standalone(toy_model, ["toy-id", "toy-long"], k=4, out=tmp_path / "b", limit=6, template=toy_template(),
                                engine="hf", max_tokens=48)
    assert again["avg_at_k"].to_list() == summary["avg_at_k"].to_list()
    again_samples = pl.read_parquet(tmp_path / "b" / "toy-id.parquet")
    assert again_samples["response"].to_list() == samples["response"].to_list()


def test_evaluate_stage(ray_local, toy_model, tmp_path):
    from evaluators.stages import evaluate_stage
    from workbench.models import toy_template
    from workbench.recipe import parse_recipe
    from workbench.stage import StageContext

    recipe = parse_recipe({"run": {"name": "t"}, "model": "toy:arith", "template": toy_template().model_dump(),
                           "evaluate": {"benchmarks": [{"name": "toy-big", "limit": 3}], "k": 2, "engine": "hf",
                                        "max_tokens": 32, "bootstrap_samples": 100}})
    ctx = StageContext(recipe, tmp_path, extra={"model_name": "base", "model_path": toy_model})
    counts = evaluate_stage(ctx)
    assert counts["benchmarks"] == 1 and counts["problems"] == 3 and counts["k"] == 2
    assert "avg@2/toy-big" in counts
    assert pl.read_parquet(tmp_path / "toy-big.parquet").height == 6
    assert pl.read_parquet(tmp_path / "summary.parquet")["model"].to_list() == ["base"]
