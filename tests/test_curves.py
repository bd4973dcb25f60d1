"""Learning curves (Figure 1): kept checkpoints are found in the train stage layout, scored with one set of
engines that reload weights between checkpoints, and joined into curves.csv with the base model as step 0."""

import json

import polars as pl
import pytest

from evaluators.curves import curves_table, evaluate_checkpoints, kept_checkpoints, write_curves
from evaluators.evaluate import evaluate_model

SUMMARY = {"model": pl.Utf8, "benchmark": pl.Utf8, "avg_at_k": pl.Float64}


def summary(a: float, b: float) -> pl.DataFrame:
    return pl.DataFrame({"model": ["m", "m"], "benchmark": ["x", "y"], "avg_at_k": [a, b]}, schema=SUMMARY)


def curve(points) -> pl.DataFrame:
    return pl.DataFrame([{"step": s, "tokens": t, "benchmark": b, "avg_at_k": v} for s, t, b, v in points],
                        schema={"step": pl.Int64, "tokens": pl.Int64, "benchmark": pl.Utf8, "avg_at_k": pl.Float64})


def test_curves_table_starts_at_the_base_model_and_averages_seeds(tmp_path):
    seed0 = curve([(2, 100, "x", 0.5), (2, 100, "y", 0.3), (4, 200, "x", 0.6), (4, 200, "y", 0.4)])
    seed1 = curve([(2, 102, "x", 0.7), (2, 102, "y", 0.1), (4, 204, "x", 0.8), (4, 204, "y", 0.2)])
    table = write_curves(tmp_path, summary(0.2, 0.0), {"dft": [seed0, seed1], "sft": [seed0]}, ["x", "y"])
    dft = table.filter(pl.col("method") == "dft")
    assert dft["step"].to_list() == [0, 2, 4] and dft["tokens"].to_list() == [0, 101, 202]
    assert dft["x"].to_list() == [20.0, 60.0, 70.0] and dft["y"].to_list() == [0.0, 20.0, 30.0]
    assert dft["average"].to_list() == [10.0, 40.0, 50.0]
    assert table.filter(pl.col("method") == "sft")["x"].to_list() == [20.0, 50.0, 60.0]
    assert pl.read_csv(tmp_path / "curves.csv").equals(table)
    assert (tmp_path / "curves.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no score for y"):
        curves_table(summary(0.2, 0.0), {"dft": [curve([(2, 1, "x", 0.5)])]}, ["x", "y"])


def _fake_checkpoint(stage, step, model_src=None, tokens=0):
    from workbench.trainers.checkpoint import INFO, step_dir

    path = step_dir(stage, step)
    path.mkdir(parents=True)
    (path / INFO).write_text(json.dumps({"step": step, "train_tokens": tokens}))
    if model_src is not None:
        (path / "model").symlink_to(model_src, target_is_directory=True)
    return path


def test_kept_checkpoints_follow_the_layout(tmp_path):
    from workbench.toy_model import save_random_toy_model

    model = save_random_toy_model(tmp_path / "m")
    stage = tmp_path / "train-dft"
    _fake_checkpoint(stage, 10, model, tokens=1000)
    _fake_checkpoint(stage, 5, model, tokens=500)
    _fake_checkpoint(stage, 15)  # resumable state only: its model was not kept
    (stage / "checkpoints" / ".partial-step-20").mkdir()  # a checkpoint being written
    assert kept_checkpoints(stage) == [(5, stage / "checkpoints" / "step-5" / "model", 500),
                                       (10, stage / "checkpoints" / "step-10" / "model", 1000)]
    assert kept_checkpoints(tmp_path / "nothing") == []


def test_one_engine_reloads_each_checkpoint(ray_local, tmp_path, monkeypatch):
    """Scoring the second checkpoint on the reused (reloaded) engine gives exactly what a fresh engine on that
    checkpoint gives, and engines start once for the whole entry."""
    import torch
    from transformers import AutoModelForCausalLM

    from data_gen import engines
    from evaluators.config import EvaluateConfig
    from workbench.models import toy_template
    from workbench.toy_model import save_random_toy_model

    first = save_random_toy_model(tmp_path / "a")
    second = tmp_path / "b"
    model = AutoModelForCausalLM.from_pretrained(first)
    with torch.no_grad():
        model.lm_head.weight.mul_(-3.0)  # a different model with the same architecture
    model.save_pretrained(second)
    for f in first.iterdir():
        if "token" in f.name or f.name == "chat_template.jinja":
            (second / f.name).write_bytes(f.read_bytes())
    starts = []
    real_start = engines.start_engines
    monkeypatch.setattr(engines, "start_engines", lambda *a, **k: starts.append(a[0]) or real_start(*a, **k))
    cfg = EvaluateConfig(benchmarks=["toy-id"], k=2, limit=4, engine="hf", max_tokens=16, bootstrap_samples=100)
    curve = evaluate_checkpoints([(1, first, 10), (2, second, 20)], cfg.benchmarks, cfg, toy_template(),
                                 tmp_path / "ckpts", "dft", seed=0)
    assert starts == [str(first)]
    assert curve["step"].to_list() == [1, 2] and curve["tokens"].to_list() == [10, 20]
    fresh = evaluate_model(str(second), cfg.benchmarks, cfg, toy_template(), tmp_path / "fresh", "b", seed=0)
    reused = pl.read_parquet(tmp_path / "ckpts" / "step-2" / "toy-id.parquet")["response"].to_list()
    assert reused == pl.read_parquet(tmp_path / "fresh" / "toy-id.parquet")["response"].to_list()
    first_run = pl.read_parquet(tmp_path / "ckpts" / "step-1" / "toy-id.parquet")["response"].to_list()
    assert first_run != reused
    assert curve["avg_at_k"][1] == fresh["avg_at_k"][0]


def test_budget_points_table_and_crossings():
    """Offline methods jump to their generation's samples at the base score, online ones grow with steps; the
    table averages seeds; catch_up names where an online curve reaches an offline method's final score."""
    from evaluators.curves import budget_points, budget_table, catch_up

    off = {"samples": 6000, "generated_tokens": 100, "parameters": 10, "flops": 10 * (2 * 100 + 6 * 1000)}
    on = {"samples": 6000, "generated_tokens": 100, "parameters": 10, "flops": 1e6}
    rows = budget_points("dft", 10, off, True, 0.25, [(5, 0.35), (10, 0.40)])
    assert [(r["step"], r["samples"]) for r in rows] == [(0, 0), (0, 6000), (5, 6000), (10, 6000)]
    assert rows[1]["flops"] == 2000 and rows[2]["flops"] == pytest.approx(2000 + 60000 / 2)
    rows += budget_points("ppo", 10, on, False, 0.25, [(5, 0.30), (10, 0.45)])
    rows += budget_points("ppo", 10, on, False, 0.25, [(5, 0.36), (10, 0.45)])  # a second seed
    table = budget_table(rows, "toy-id")
    ppo = table.filter(pl.col("method") == "ppo")
    assert ppo["samples"].to_list() == [0, 3000, 6000] and ppo["toy-id"].to_list() == [25.0, 33.0, 45.0]
    assert ppo["flops"].to_list() == pytest.approx([0, 5e5, 1e6])
    assert table.filter(pl.col("method") == "dft")["samples"].to_list() == [0, 6000, 6000, 6000]
    lines = catch_up(table, "toy-id", ["ppo"], ["dft"])
    assert lines == ["ppo reaches dft's final toy-id (40.00) at 6,000 samples (1e+06 FLOPs, step 10)"]
    low = budget_table(budget_points("grpo", 4, on, False, 0.25, [(4, 0.3)]) + rows, "toy-id")
    assert "grpo never reaches dft's final toy-id (40.00) within its budget" in catch_up(low, "toy-id", ["grpo"],
                                                                                        ["dft"])[0]
