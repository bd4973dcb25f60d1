"""The budget ledger (workbench/budget.py): FLOPs formula, ledger rows per kind of method, budget matching at
recipe load, and what --dry-run prints."""

import json
import struct

import pytest

from workbench.budget import (
    budget_lines,
    count_parameters,
    flops,
    ledger_row,
    matched_steps,
    mean_rows,
    planned,
)
from workbench.recipe import RecipeError, parse_recipe

GEN = {"counts": {"samples": 6000, "tokens": 200_000}, "wall_time_s": 50.0}


def recipe(match="samples", **ppo):
    return parse_recipe({
        "run": {"name": "t"}, "model": "toy:arith", "prompts": {"source": "toy", "max_prompts": 1500},
        "generate": {"n": 4}, "budget": {"match": match},
        "train": [{"name": "dft", "algorithm": "dft"},
                  {"name": "ppo", "algorithm": "ppo", "rollout_batch_size": 16, "samples_per_prompt": 4, "kl_coef": 0.01, **ppo},
                  {"name": "grpo", "algorithm": "grpo", "num_generations": 4, "batch_size": 64, "beta": 0.001},
                  {"name": "demos", "algorithm": "sft", "data": "demonstrations"}]}, "t.yaml")


def test_flops_formula():
    assert flops(10, generated=1, trained=1, forwarded=1) == 10 * (2 + 6 + 2)
    assert flops(1000, 5, 0, 0) == 10_000


def test_ledger_rows_charge_offline_methods_the_generation_and_online_their_rollouts():
    dft = ledger_row({"data": "positives", "algorithm": "dft", "train_tokens": 1000, "train_time_s": 3.0}, None, GEN, 7)
    assert dft == {"samples": 6000, "generated_tokens": 200_000, "trained_tokens": 1000, "forwarded_tokens": 0,
                   "parameters": 7, "flops": 7 * (2 * 200_000 + 6 * 1000), "wall_s": 3.0, "gen_wall_s": 50.0}
    dpo = ledger_row({"data": "pairs", "algorithm": "dpo", "train_tokens": 1000}, None, GEN, 7)
    assert dpo["forwarded_tokens"] == 1000 and dpo["samples"] == 6000  # the reference scores every pair token
    r = recipe()
    ppo = ledger_row({"data": "prompts", "algorithm": "ppo", "train_tokens": 800, "rollout_tokens": 400,
                      "samples_generated": 64, "generated_tokens": 300}, r.train[1].config, GEN, 7)
    # actor + critic trained; old policy, values and reference (kl_coef > 0) forwarded
    assert (ppo["samples"], ppo["generated_tokens"], ppo["trained_tokens"], ppo["forwarded_tokens"]) == (64, 300, 1600,
                                                                                                       1200)
    assert ppo["gen_wall_s"] == 0.0 and ppo["flops"] == 7 * (2 * 300 + 6 * 1600 + 2 * 1200)
    grpo = ledger_row({"data": "prompts", "algorithm": "grpo", "train_tokens": 900, "samples_generated": 128,
                       "generated_tokens": 500}, r.train[2].config, GEN, 7)
    assert grpo["forwarded_tokens"] == 9 * 100  # beta > 0: the reference forwards every token
    demos = ledger_row({"data": "demonstrations", "algorithm": "sft", "train_tokens": 10}, None, GEN, 7)
    assert demos["samples"] == 0 and demos["generated_tokens"] == 0  # nobody sampled the gold demonstrations
    assert mean_rows([dft, {**dft, "samples": 0, "wall_s": 5.0}])["samples"] == 3000
    assert mean_rows([dft, {**dft, "wall_s": 5.0}])["wall_s"] == 4.0


def test_matching_samples_sets_online_max_steps_from_the_offline_generation():
    r = recipe()
    ppo, grpo = r.train[1].config, r.train[2].config
    assert ppo.max_steps == 94 and 94 * 16 * 4 >= 6000 > 93 * 16 * 4  # at least the 6,000 offline completions
    assert grpo.max_steps == 94  # 64 completions per optimizer step
    assert 94 * 16 >= 1500  # PPO sees every training prompt once; so does GRPO (64 / 4 = 16 prompts per step)
    assert r.train[0].config.max_steps == -1  # offline entries are left alone
    assert r.model_dump(mode="json")["train"][1]["max_steps"] == 94  # hashed like any field
    assert recipe("none").train[1].config.max_steps == -1
    # GRPO with a rollout_batch_size: whole rollouts (here 2 optimizer steps each)
    g = parse_recipe({"run": {"name": "t"}, "model": "toy:arith", "prompts": {"source": "toy", "max_prompts": 100},
                      "budget": {"match": "samples"}, "train": [{"name": "g", "algorithm": "grpo", "num_generations": 4,
                                                                  "batch_size": 32, "rollout_batch_size": 16}]})
    assert g.train[0].config.max_steps % 2 == 0 and g.train[0].config.max_steps * 32 >= 400
    assert matched_steps(r.train[1].config, 64) == 1


def test_matching_refuses_a_recipe_max_steps_and_an_unknown_sample_count():
    with pytest.raises(RecipeError, match=r"t.yaml: train\[1\].max_steps: set by budget.match: samples"):
        recipe(max_steps=40)
    with pytest.raises(RecipeError, match="budget.match: samples needs prompts.max_prompts"):
        parse_recipe({"run": {"name": "t"}, "model": "toy:arith", "budget": {"match": "samples"},
                      "prompts": {"source": "toy", "max_prompts": None}}, "t.yaml")
    with pytest.raises(RecipeError, match="budget.match"):
        parse_recipe({"run": {"name": "t"}, "model": "toy:arith", "budget": {"match": "flops"}}, "t.yaml")


def test_planned_budget_lines():
    rows = {row["entry"]: row for row in planned(recipe())}
    assert rows["dft"]["samples"] == 6000 and rows["ppo"]["samples"] == 94 * 64 and rows["demos"]["samples"] == 0
    lines = budget_lines(recipe())
    assert lines[0].startswith("budget: budget.match = samples")
    assert "  ppo: 6,016 completions sampled (prompts: 64 completions/step x 94 steps" in lines[2]


def test_count_parameters_reads_safetensors_headers(tmp_path):
    header = json.dumps({"a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
                         "__metadata__": {"format": "pt"}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 48)
    assert count_parameters(tmp_path) == 12
    # other weight files: weight bytes / dtype size (resources.model_shape); nothing to count: 0, not a failure
    other = tmp_path / "bin"
    other.mkdir()
    (other / "config.json").write_text('{"torch_dtype": "float32"}')
    (other / "pytorch_model.bin").write_bytes(b"\0" * 400)
    assert count_parameters(other) == 100
    assert count_parameters(tmp_path / "missing") == 0


def test_read_ledger_and_run_ledger(tmp_path):
    from workbench.budget import read_ledger, run_ledger

    def stage(path, counts):
        path.mkdir(parents=True)
        (path / "manifest.json").write_text(json.dumps({"counts": counts}))

    stage(tmp_path / "generate", {"samples": 6000, "tokens": 200_000})
    row = {"samples": 64, "generated_tokens": 3, "trained_tokens": 4, "forwarded_tokens": 0, "parameters": 7,
           "flops": 1.0, "wall_s": 2.0, "gen_wall_s": 0.0}
    stage(tmp_path / "train" / "ppo", {"algorithm": "ppo", "data": "prompts", "steps": 1, "ledger": row})
    stage(tmp_path / "trial" / "dft" / "0", {"algorithm": "dft", "data": "positives", "steps": 5,
                                             "train_tokens": 10})  # an older manifest: computed
    assert read_ledger(tmp_path / "train" / "ppo") == row
    rows = run_ledger(tmp_path)
    assert [r["stage"] for r in rows] == ["train/ppo", "trial/dft/0"]
    assert rows[1]["samples"] == 6000 and rows[1]["trained_tokens"] == 10 and rows[1]["steps"] == 5
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        read_ledger(tmp_path / "train" / "nothing")
