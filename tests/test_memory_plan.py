"""The memory plan (workbench/memory_plan.py): Table 2 fits 80 GB GPUs, its GRPO entry without gradient
checkpointing is refused in one line, FSDP2 shares states, and a real run checks the plan before any stage."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.memory_plan import (
    GIB,
    MemoryPlanError,
    check_plans,
    check_recipe,
    model_shape,
    plan_lines,
    recipe_plans,
    train_plan,
)
from workbench.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]
TABLE2 = ROOT / "recipes" / "table2-qwen2.5-math-1.5b.yaml"


def test_table2_fits_80gb_gpus_and_grpo_without_checkpointing_is_refused():
    plans = recipe_plans(load_recipe(TABLE2), None, 80)
    assert {p.where for p in plans} >= {"train[3] ppo", "train[4] grpo", "generate", "evaluate"}
    check_plans(plans, 80, 24)  # every entry fits
    grpo = next(p for p in plans if p.where == "train[4] grpo")
    assert grpo.on_gpu and grpo.parts["vLLM"] == pytest.approx(0.3 * 80 * GIB)
    no_ckpt = recipe_plans(load_recipe(TABLE2, ["train[4].gradient_checkpointing=false"]), None, 80)
    with pytest.raises(MemoryPlanError, match=r"^train\[4\] grpo: ~\d+ GiB per GPU > 80 GiB \(activations \d+ GiB "
                       r"without gradient checkpointing; [\d.]+ with it: set gradient_checkpointing: true\) "
                       r"\(--force runs anyway\)$"):
        check_plans(no_ckpt, 80, 24)


def test_parts_follow_the_entry():
    shape = model_shape("Qwen/Qwen2.5-Math-1.5B")
    recipe = parse_recipe({"run": {"name": "r"}, "model": "toy:arith", "train": [
        {"name": "a", "algorithm": "dft", "num_workers": 8, "gpus_per_worker": 1, "batch_size": 256,
         "per_device_batch_size": 4},
        {"name": "b", "algorithm": "dft", "num_gpus": 1, "batch_size": 256, "per_device_batch_size": 4},
        {"name": "c", "algorithm": "dpo", "num_workers": 8, "gpus_per_worker": 1, "batch_size": 128,
         "per_device_batch_size": 2},
        {"name": "d", "algorithm": "dft", "kl_weight": 0.1, "batch_size": 8, "per_device_batch_size": 8},
        {"name": "e", "algorithm": "ppo", "rollout_engine": "hf", "kl_coef": 0.05}]}, "x.yaml")
    fsdp8, one, dpo8, asft, ppo = (train_plan(e, i, shape, e.num_gpus > 0 or bool(e.gpus_per_worker), 80)
                                   for i, e in enumerate(recipe.train))
    # FSDP2 over 8 GPUs holds an eighth of the optimizer states; DPO (DDP) holds all of them on each GPU
    assert fsdp8.parts["grads+optimizer"] == pytest.approx(one.parts["grads+optimizer"] / 8)
    assert dpo8.parts["grads+optimizer"] == pytest.approx(one.parts["grads+optimizer"]) and "reference" in dpo8.parts
    # on CPU the ASFT entry keeps full logits, a reference and the KL's extra vocabulary-sized tensors
    assert not asft.on_gpu and "reference" in asft.parts and "logits" in asft.parts
    assert set(ppo.parts) >= {"weights", "reference", "activations", "logits"}
    assert ppo.parts["weights"] == pytest.approx(2 * one.parts["weights"])  # actor and critic


def test_a_run_is_refused_before_any_stage_unless_forced(monkeypatch, tmp_path):
    from workbench import pipeline

    monkeypatch.setattr(pipeline, "init_ray", lambda recipe: None)
    big = {"run": {"name": "big", "out_dir": str(tmp_path)}, "model": "toy:arith",
           "train": [{"name": "huge", "algorithm": "dft", "batch_size": 512, "per_device_batch_size": 512,
                      "max_length": 65536}]}
    recipe = parse_recipe(big, "big.yaml")
    pipe = pipeline.Pipeline(recipe)
    with pytest.raises(MemoryPlanError, match=r"^train\[0\] huge: ~\d+ GiB per process > \d+ GiB \(activations"):
        pipe.run("train")
    assert not (tmp_path / "big" / "prompts").exists()  # nothing ran
    lines = check_recipe(recipe, None, [s for s in pipe.stages if s.name == "train/huge"], force=True)
    assert len(lines) == 1 and lines[0].startswith("memory plan, forced past: train[0] huge: ~")
    small = parse_recipe({**big, "train": [{"name": "s", "algorithm": "dft", "batch_size": 8}]}, "small.yaml")
    (line,) = check_recipe(small, None, pipeline.Pipeline(small).stages)
    assert line.startswith("memory plan: 3 to run fit; the fullest, ") and "GiB per process of" in line


def test_dry_run_prints_the_plan_per_entry():
    from workbench.cli import app

    out = CliRunner().invoke(app, ["run", str(TABLE2), "--dry-run", "--set", "ray.gpu_memory_gb=80",
                                   "--set", "train[4].gradient_checkpointing=false"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "memory plan (GPU 80 GiB" in text and "train[0] dft: ~" in text and "per GPU" in text
    assert "refused: train[4] grpo:" in text and "set gradient_checkpointing: true" in text
    lines = plan_lines(load_recipe(ROOT / "recipes" / "smoke.yaml"))
    assert any("train[0] dft: ~" in line and "per process" in line for line in lines)
