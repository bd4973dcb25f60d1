"""GRPO: config checks and a short TRL GRPO run on the toy task with the verifier's reward rising."""

import json
import math
from pathlib import Path

import pytest
import torch

from workbench.trainers.grpo import GRPOConfig, GRPOTrainerPlugin, verifier_reward_func


def test_config_defaults_and_batch_check():
    cfg = GRPOConfig()
    assert (cfg.learning_rate, cfg.beta, cfg.use_vllm) == (1e-6, 0.001, False)
    with pytest.raises(ValueError, match="num_generations"):
        GRPOConfig(batch_size=12, num_generations=8)


def test_reward_is_the_verifier():
    fn = verifier_reward_func(5.0)
    assert fn(completions=["so \\boxed{7}", "\\boxed{8}"], answer=["7", "7"], prompts=["a", "b"]) == [1.0, 0.0]


def test_grpo_reward_rises_on_toy_task(tmp_path):
    """The pretrained toy model on 2-operation 1-digit problems: mean reward of the last steps beats the first."""
    from data_gen.config import ToyTaskConfig
    from data_gen.toy import toy_prompts
    from workbench.models import resolve_model, toy_template
    from workbench.trainers.base import TrainJob

    torch.set_num_threads(1)
    base = resolve_model("toy:arith")
    data = toy_prompts(ToyTaskConfig(min_ops=2, max_ops=2, max_digits=1), N_PROMPTS, seed=0)
    job = TrainJob(base_model=base, data=data, template=toy_template(), out_dir=tmp_path / "grpo", seed=0)
    cfg = GRPOConfig(learning_rate=GRPO_LR, beta=0.0, num_generations=8, batch_size=64, per_device_batch_size=64,
                     max_steps=GRPO_STEPS, max_completion_length=40)
    result = GRPOTrainerPlugin().train(job, cfg)
    rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()]
    assert result.steps == GRPO_STEPS and len(rows) == GRPO_STEPS and result.train_tokens > 0
    for key in ("loss", "learning_rate", "reward", "entropy"):
        assert all(math.isfinite(r[key]) for r in rows), key
    rewards = [r["reward"] for r in rows]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    print("grpo rewards", [round(r, 2) for r in rewards])
    assert last > min(first + 0.1, 0.9), rewards  # a clear rise (capped: a better toy model starts higher)
    assert (job.model_dir / "config.json").exists()


GRPO_LR = 1e-3
GRPO_STEPS = 25
N_PROMPTS = 16  # a small fixed prompt set, revisited every few steps: the tiny toy model learns it within the test


# ---------------------------------------------------------------- paper fidelity (issue 10)


def _toy_job(tmp_path, n_prompts=4):
    from data_gen.config import ToyTaskConfig
    from data_gen.toy import toy_prompts
    from workbench.models import resolve_model, toy_template
    from workbench.trainers.base import TrainJob

    data = toy_prompts(ToyTaskConfig(min_ops=2, max_ops=2, max_digits=1), n_prompts, seed=0)
    return TrainJob(base_model=resolve_model("toy:arith"), data=data, template=toy_template(),
                    out_dir=tmp_path / "grpo", seed=0)


def test_bf16_step_at_lr_1e6_changes_weights(tmp_path):
    """bf16: true is autocast over float32 master weights: one step at lr 1e-6 moves most decoder weights of
    a bfloat16 checkpoint (as Qwen2.5-Math's is); with bf16 weights the ~1e-6 AdamW update rounds away."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    job = _toy_job(tmp_path)
    bf16_base = tmp_path / "bf16-base"
    AutoModelForCausalLM.from_pretrained(job.base_model, dtype=torch.bfloat16).save_pretrained(bf16_base)
    AutoTokenizer.from_pretrained(job.base_model).save_pretrained(bf16_base)
    job.base_model = bf16_base
    cfg = GRPOConfig(learning_rate=1e-6, beta=0.0, num_generations=8, batch_size=32, per_device_batch_size=32,
                     max_steps=1, max_completion_length=40, bf16=True, warmup_ratio=0.0)
    result = GRPOTrainerPlugin().train(job, cfg)
    assert result.extra["mixed_precision"] == "bf16" and result.extra["master_dtype"] == "torch.float32"
    row = json.loads(job.metrics_path.read_text().splitlines()[0])
    assert row["grad_norm"] > 0, row  # the rewards differed within a group: there was a gradient
    before = load_file(str(bf16_base / "model.safetensors"))
    after = load_file(str(job.model_dir / "model.safetensors"))
    name = "model.layers.0.mlp.down_proj.weight"
    assert after[name].dtype == torch.float32
    assert before[name].dtype == torch.bfloat16
    changed = (after[name] != before[name].float()).float().mean().item()
    assert changed > 0.5, changed


def test_warmup_ratio_is_a_ratio(tmp_path):
    """warmup_ratio 1.0 warms up over every step (transformers reads warmup_steps >= 1 as a step count)."""
    from workbench.trainers.grpo import trl_args

    job = _toy_job(tmp_path)
    for ratio, steps in ((1.0, 100), (0.1, 10), (0.0, 0)):
        args = trl_args(job, GRPOConfig(warmup_ratio=ratio, batch_size=16, num_generations=8), [0])
        assert args.get_warmup_steps(100) == steps, ratio


def test_rollouts_stop_at_end_of_turn(tmp_path):
    """TRL's rollouts stop on the chat template's <|im_end|> though the generation config names only
    <|endoftext|>: the always-<|im_end|> model's completions are one token long, not max_completion_length."""
    import polars as pl
    from stop_token_model import save_always_token_model

    from workbench.template import TemplateConfig
    from workbench.trainers.base import TrainJob

    torch.set_num_threads(1)
    base = save_always_token_model(tmp_path / "base")
    data = pl.DataFrame({"prompt_id": ["a", "b"], "problem": ["1+1", "2+2"], "answer": ["2", "4"]})
    job = TrainJob(base_model=base, data=data, template=TemplateConfig(), out_dir=tmp_path / "grpo", seed=0)
    cfg = GRPOConfig(beta=0.0, num_generations=2, batch_size=4, per_device_batch_size=4, max_steps=1,
                     max_completion_length=8)
    result = GRPOTrainerPlugin().train(job, cfg)
    row = json.loads(job.metrics_path.read_text().splitlines()[0])
    assert row["response_length"] == 1.0 and row["truncated"] == 0.0, row
    assert result.extra["stop_token_ids"] == [0, 2]  # <|endoftext|>, <|im_end|>
    saved = json.loads((job.model_dir / "generation_config.json").read_text())
    assert saved["eos_token_id"] == 0  # the checkpoint keeps the base model's generation config


def test_batch_sizes_count_completions_as_verl_example(tmp_path):
    """verl's GRPO math example: ppo_mini_batch_size 256 prompts x n 5 per optimizer step, 1024 prompts per
    rollout: 1280 completions per step here, one rollout feeding 4 steps."""
    from workbench.trainers.grpo import trl_args

    job = _toy_job(tmp_path)
    cfg = GRPOConfig(batch_size=1280, num_generations=5, rollout_batch_size=1024, per_device_batch_size=16)
    args = trl_args(job, cfg, [0])
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 1280
    assert args.steps_per_generation == 4 * args.gradient_accumulation_steps
    assert args.generation_batch_size == 1024 * 5
    on_policy = trl_args(job, GRPOConfig(batch_size=1280, per_device_batch_size=16), [0])
    assert on_policy.generation_batch_size == 1280
    with pytest.raises(ValueError, match="rollout_batch_size"):
        GRPOConfig(batch_size=1280, num_generations=5, rollout_batch_size=100)


def test_loss_and_corrections_follow_verl(tmp_path):
    """verl's loss_agg_mode token-mean is TRL's dapo; verl has neither of TRL 1.16's vLLM importance-sampling
    correction nor its importance-weighted KL, both on by default in TRL (issue 21)."""
    from workbench.trainers.grpo import trl_args

    cfg = GRPOConfig(batch_size=8, num_generations=4, per_device_batch_size=8)
    assert cfg.loss_type == "dapo"
    args = trl_args(_toy_job(tmp_path), cfg, [0])
    assert args.loss_type == "dapo"
    assert args.vllm_importance_sampling_correction is False and args.use_bias_correction_kl is False
    on = trl_args(_toy_job(tmp_path), cfg.model_copy(update={"use_bias_correction_kl": True}), [0])
    assert on.use_bias_correction_kl is True


def test_max_length_leaves_out_long_prompts():
    """max_length caps prompt + response: prompts over max_length - max_completion_length tokens are left out
    and counted (verl's filter_overlong_prompts); no room for a prompt is a config error."""
    from workbench.toy_model import build_byte_tokenizer
    from workbench.trainers.grpo import fit_prompts

    tok = build_byte_tokenizer()  # one token per byte
    kept, answers, dropped = fit_prompts(tok, ["abc", "abcdefgh", "ab"], ["1", "2", "3"], 4)
    assert (kept, answers, dropped) == (["abc", "ab"], ["1", "3"], 1)
    with pytest.raises(ValueError, match="grpo: every prompt is longer than max_length - max_completion_length = 1"):
        fit_prompts(tok, ["abc"], ["1"], 1, "grpo")
    with pytest.raises(ValueError, match="max_length"):
        GRPOConfig(max_length=1024, max_completion_length=1024)


# ---------------------------------------------------------------- N workers, save_steps (issue 11)


def test_worker_split_keeps_the_global_batch():
    """2 workers: each takes half of the completions per step, and TRL's generation batch (micro x workers x
    steps_per_generation) stays the 1-worker one; a batch that cannot be split is refused naming the field."""
    from workbench.trainers.grpo import worker_split

    cfg = GRPOConfig(batch_size=1280, num_generations=5, rollout_batch_size=1024, per_device_batch_size=16)
    for world in (1, 2, 8):
        micro, accum, per_generation = worker_split(cfg, world)
        assert micro * accum * world == 1280
        assert micro * world * per_generation == 1024 * 5
    assert worker_split(GRPOConfig(batch_size=8, num_generations=4, per_device_batch_size=8), 2) == (4, 1, 1)
    with pytest.raises(ValueError, match=r"^grpo: batch_size=10 is not divisible by num_workers=4$"):
        worker_split(GRPOConfig(batch_size=10, num_generations=5, per_device_batch_size=2), 4)
    with pytest.raises(ValueError, match=r"^grpo: batch_size / num_workers = 12 is not a multiple of per_device_batch"):
        worker_split(GRPOConfig(batch_size=24, num_generations=4, per_device_batch_size=8), 2)


def test_unsplittable_entries_are_refused_when_the_recipe_loads(tmp_path):
    """A batch that N workers cannot split, or save_steps inside a rollout (TRL keeps a rollout's completions in
    memory only), is one line naming the field, when the recipe loads and again if a job is trained directly."""
    from workbench.recipe import RecipeError, parse_recipe

    def load(**entry):
        grpo = {"name": "g", "algorithm": "grpo", "batch_size": 8, "num_generations": 4, "per_device_batch_size": 8}
        return parse_recipe({"run": {"name": "r"}, "model": "toy:arith", "train": [{**grpo, **entry}]}, "x.yaml")

    with pytest.raises(RecipeError, match=r"^x.yaml: train\[0\].num_workers: grpo: batch_size=8 is not divisible by "
                       r"num_workers=3$"):
        load(num_workers=3)
    with pytest.raises(RecipeError, match=r"^x.yaml: train\[0\].save_steps: grpo: save_steps=3 must be a multiple "
                       r"of the 2 optimizer steps of one rollout"):
        load(rollout_batch_size=4, save_steps=3)  # 16 completions per rollout: 2 steps of 8
    assert load(num_workers=2, rollout_batch_size=4, save_steps=4).train[0].num_workers == 2
    job = _toy_job(tmp_path)
    job.save_steps = 3
    cfg = GRPOConfig(batch_size=8, num_generations=4, rollout_batch_size=4, max_steps=4)
    with pytest.raises(ValueError, match=r"^grpo: save_steps=3 must be a multiple of the 2 optimizer steps"):
        GRPOTrainerPlugin().train(job, cfg)


# 8 prompts, 2 per optimizer step, 4 per rollout: 2 steps per rollout, 4 per epoch. Killed after step 7, the
# run resumes from step 6, a rollout boundary inside the second epoch.
RESUME = {"learning_rate": 1e-3, "beta": 0.04, "num_generations": 4, "batch_size": 8, "per_device_batch_size": 8,
          "rollout_batch_size": 4, "max_steps": 8, "max_completion_length": 12, "lr_scheduler": "cosine",
          "warmup_ratio": 0.2}


def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
    """save_steps + rerun: resumes from the latest checkpoint, logs every step once, and ends on the same weights
    as an uninterrupted run (same rollouts: the Trainer restores the RNG, EpochSeeded the prompt order)."""
    from test_checkpoint import Killed, die_after_logging  # tests/ is on sys.path under pytest

    from workbench.trainers import checkpoint

    torch.set_num_threads(1)

    def run(out):
        job = _toy_job(tmp_path, n_prompts=8)
        job.out_dir, job.save_steps = tmp_path / out, 2 if out == "cut" else 0
        return GRPOTrainerPlugin().train(job, GRPOConfig(**RESUME)), job

    whole, _ = run("whole")
    with monkeypatch.context() as m:
        die_after_logging(m, 7)
        with pytest.raises(Killed):
            run("cut")
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path / "cut")] == [6]
    resumed, job = run("cut")
    assert (resumed.extra["resumed_from_step"], whole.extra["resumed_from_step"]) == (6, 0)
    rows = {out: [json.loads(line) for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]
            for out in ("whole", "cut")}
    assert [r["step"] for r in rows["cut"]] == list(range(1, 9))
    for a, b in zip(rows["whole"], rows["cut"]):
        assert {k: v for k, v in a.items() if k != "time_s"} == {k: v for k, v in b.items() if k != "time_s"}
    assert (tmp_path / "cut" / "model" / "model.safetensors").read_bytes() == \
        (tmp_path / "whole" / "model" / "model.safetensors").read_bytes()
    assert resumed.train_tokens == whole.train_tokens
    assert sorted(p.name for p in job.out_dir.iterdir()) == ["metrics.jsonl", "model"]  # no checkpoints, no scratch
    saved = json.loads((job.model_dir / "generation_config.json").read_text())
    assert saved["eos_token_id"] == json.loads((Path(job.base_model) / "generation_config.json").read_text())["eos_token_id"]
