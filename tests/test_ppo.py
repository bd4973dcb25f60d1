"""PPO: the pure math against hand-computed numbers, and a short run on the toy task with reward rising."""

import json
import math

import pytest
import torch

from workbench.trainers.ppo import PPOConfig, PPOTrainerPlugin, compute_gae, policy_loss, value_loss, whiten


def test_gae_hand_computed():
    # row 0: three tokens, reward 1 at the end; row 1: two tokens then padding (garbage must be ignored)
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 9.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, 0.4, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: A2 = 1 - 0.7 = 0.3; A1 = (0.7 - 0.6) + 0.5 * 0.3 = 0.25; A0 = (0.6 - 0.5) + 0.5 * 0.25 = 0.225
    # row 1: A1 = 1 - 0.4 = 0.6; A0 = (0.4 - 0.2) + 0.5 * 0.6 = 0.5; padding: 0
    assert torch.allclose(adv, torch.tensor([[0.225, 0.25, 0.3], [0.5, 0.6, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[0.725, 0.85, 1.0], [0.7, 1.0, 0.0]]))
    # discounting: gamma 0.9, lam 0.5 on row 0
    adv, _ = compute_gae(rewards[:1], values[:1], mask[:1], gamma=0.9, lam=0.5)
    # A2 = 0.3; A1 = 0.9*0.7 - 0.6 + 0.45*0.3 = 0.165; A0 = 0.9*0.6 - 0.5 + 0.45*0.165 = 0.11425
    assert torch.allclose(adv, torch.tensor([[0.11425, 0.165, 0.3]]))


def test_whiten_over_valid_tokens():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert torch.allclose(whiten(x, mask), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6)  # unbiased std = 1


def test_clipped_policy_loss_hand_computed():
    ratio = torch.tensor([[1.5, 0.5, 1.0, 1.5, 3.0]])
    adv = torch.tensor([[1.0, 1.0, -2.0, -1.0, 50.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    old = torch.zeros_like(ratio)
    loss, clipfrac = policy_loss(ratio.log(), old, adv, mask, clip=0.2)
    # per token max(-A r, -A clip(r)): -1.2 (clipped), -0.5, 2.0, 1.5 -> mean 0.45; one of four clipped
    assert loss.item() == pytest.approx(0.45, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.25)
    # the gradient flows only through unclipped tokens: d/dlogp of -A r = -A r
    logp = ratio.log().requires_grad_(True)
    policy_loss(logp, old, adv, mask, clip=0.2)[0].backward()
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -0.5, 2.0, 1.5, 0.0]]) / 4, atol=1e-6)


def test_clipped_value_loss_hand_computed():
    values, old = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])
    returns, mask = torch.tensor([[2.0, 0.0]]), torch.ones(1, 2)
    # token 1: max((1-2)^2, (0.7-2)^2) = 1.69; token 2: max(0, (0.3-0)^2) = 0.09; 0.5 * mean = 0.445
    assert value_loss(values, old, returns, mask, clip=0.2).item() == pytest.approx(0.445)


def test_config_defaults_follow_verl():
    cfg = PPOConfig()
    assert (cfg.learning_rate, cfg.critic_learning_rate, cfg.kl_coef) == (1e-6, 1e-5, 0.001)
    assert (cfg.gamma, cfg.lam, cfg.clip_ratio) == (1.0, 0.95, 0.2)


def test_bad_data_is_named(tmp_path):
    import polars as pl

    from workbench.template import TemplateConfig
    from workbench.trainers.base import TrainJob

    job = TrainJob(tmp_path, pl.DataFrame({"problem": ["1+1"]}), TemplateConfig(), tmp_path / "out")
    with pytest.raises(ValueError, match="answer"):
        PPOTrainerPlugin().train(job, PPOConfig())


def _greedy_accuracy(model_dir, problems, answers, template):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from data_gen.samplers import hf_generate
    from data_gen.verifier import reward
    from workbench.template import render_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompts = [render_prompt(tok, p, template) for p in problems]
    texts = [row[0].text for row in hf_generate(model, tok, prompts, 1, 0.0, 1.0, 48)]
    return sum(reward(texts, answers)) / len(answers)


def test_ppo_reward_rises_on_toy_task(tmp_path):
    """The pretrained toy model on 1-operation, 1-2-digit problems; reward of the last updates beats the first."""
    from data_gen.config import ToyTaskConfig
    from data_gen.toy import toy_prompts
    from workbench.models import resolve_model, toy_template
    from workbench.trainers.base import TrainJob

    torch.set_num_threads(1)
    base = resolve_model("toy:arith")
    data = toy_prompts(ToyTaskConfig(min_ops=2, max_ops=2, max_digits=1), N_PROMPTS, seed=0)
    job = TrainJob(base_model=base, data=data, template=toy_template(), out_dir=tmp_path / "ppo", seed=0)
    cfg = PPOConfig(learning_rate=PPO_LR, critic_learning_rate=1e-3, kl_coef=0.01, rollout_batch_size=16,
                    samples_per_prompt=4, batch_size=32, per_device_batch_size=32, ppo_epochs=2,
                    max_steps=PPO_STEPS, max_completion_length=40)
    result = PPOTrainerPlugin().train(job, cfg)
    rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()]
    assert result.steps == PPO_STEPS and len(rows) == PPO_STEPS and result.train_tokens > 0
    for key in ("reward", "kl", "entropy", "policy_loss", "value_loss", "clipfrac", "learning_rate"):
        assert all(math.isfinite(r[key]) for r in rows), key
    rewards = [r["reward"] for r in rows]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    print("ppo rewards", [round(r, 2) for r in rewards])
    assert last > min(first + 0.1, 0.9), rewards  # a clear rise (capped: a better toy model starts higher)
    assert (job.model_dir / "config.json").exists()


PPO_LR = 3e-4
PPO_STEPS = 30
N_PROMPTS = 16  # a small fixed prompt set, revisited every step: the tiny toy model learns it within the test
