"""GRPO: config checks and a short TRL GRPO run on the toy task with the verifier's reward rising."""

import json
import math

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
