"""PPO: the pure math against hand-computed numbers, and a short run on the toy task with reward rising."""

import json
import math

import pytest
import torch

from workbench.trainers import ppo
from workbench.trainers.ppo import PPOConfig, PPOTrainerPlugin
from workbench.trainers.ppo_core import (
    compute_gae,
    kl_estimate,
    policy_loss,
    response_logprobs,
    value_loss,
    whiten,
)


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
    assert (cfg.learning_rate, cfg.critic_learning_rate, cfg.weight_decay) == (1e-6, 1e-5, 0.01)
    assert cfg.kl_coef == 0.0  # verl's PPO: use_kl_loss false, use_kl_in_reward False (issue 21)
    assert (cfg.gamma, cfg.lam, cfg.clip_ratio, cfg.value_clip, cfg.dual_clip_ratio) == (1.0, 1.0, 0.2, 0.5, 3.0)
    assert (cfg.max_length, cfg.max_completion_length) == (2048, 1024)
    assert not cfg.kl_in_reward and cfg.gradient_checkpointing
    with pytest.raises(ValueError, match="max_completion_length=64 leaves no room"):
        PPOConfig(max_length=64, max_completion_length=64)


def test_dual_clip_caps_negative_advantage_tokens_as_verl():
    """verl compute_policy_loss: where A < 0 the loss is min(max(-A r, -A clip(r)), -A * 3)."""
    ratio = torch.tensor([[5.0, 5.0, 2.0, 0.5]])
    adv = torch.tensor([[-1.0, 1.0, -2.0, -1.0]])
    mask = torch.ones(1, 4)
    loss, _ = policy_loss(ratio.log(), torch.zeros_like(ratio), adv, mask, clip=0.2)
    # per token: min(5, 3) = 3 (dual-clipped); max(-5, -1.2) = -1.2; min(max(4, 2.4), 6) = 4; max(0.5, 0.8) = 0.8
    assert loss.item() == pytest.approx((3.0 - 1.2 + 4.0 + 0.8) / 4, abs=1e-6)
    logp = ratio.log().requires_grad_(True)
    policy_loss(logp, torch.zeros_like(ratio), adv, mask, clip=0.2)[0].backward()
    # only token 2 (unclipped, -A r = 4) carries gradient: d/dlogp (-A r) = -A r = 4
    assert torch.allclose(logp.grad, torch.tensor([[0.0, 0.0, 4.0, 0.0]]) / 4, atol=1e-6)
    loss_c, _ = policy_loss(ratio.log(), torch.zeros_like(ratio), adv, mask, clip=0.2, clip_c=10.0)
    assert loss_c.item() == pytest.approx((5.0 - 1.2 + 4.0 + 0.8) / 4, abs=1e-6)


def test_log_ratio_is_clamped_so_a_runaway_token_keeps_gradients_finite():
    """A log-ratio of 100 would make exp() overflow to inf and the backward inf * 0 = NaN; verl clamps to +-20."""
    logp = torch.tensor([[100.0, -100.0, 0.1]], requires_grad=True)
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    loss, _ = policy_loss(logp, torch.zeros(1, 3), adv, torch.ones(1, 3), clip=0.2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()


def test_kl_estimates_hand_computed():
    logp, ref = torch.tensor([math.log(0.5), math.log(0.2)]), torch.tensor([math.log(0.25), math.log(0.2)])
    assert torch.allclose(kl_estimate(logp, ref, "k1"), torch.tensor([math.log(2.0), 0.0]))
    # k3 = exp(ref - logp) - (ref - logp) - 1: 0.5 + ln 2 - 1
    assert torch.allclose(kl_estimate(logp, ref, "k3"), torch.tensor([math.log(2.0) - 0.5, 0.0]))


def test_chunked_response_logprobs_equal_full_log_softmax():
    """Values and gradients equal the full-vocabulary log_softmax path, chunked down to 3 positions."""
    from transformers import AutoModelForCausalLM

    from workbench.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("toy:arith"), dtype=torch.float32)
    torch.manual_seed(0)
    ids = torch.randint(0, 250, (2, 12))
    attn, pos = torch.ones_like(ids), torch.arange(12).expand(2, 12)
    resp = ids[:, -7:]
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, -8:-1] / 0.7
    full = torch.log_softmax(logits, -1)
    want_logp = full.gather(-1, resp.unsqueeze(-1)).squeeze(-1)
    want_ent = -(full.exp() * full).sum(-1)
    want_grad = torch.autograd.grad((want_logp + want_ent).sum(), model.model.layers[0].mlp.up_proj.weight)[0]
    logp, ent = response_logprobs(model, ids, attn, pos, resp, 0.7, chunk_tokens=6, with_entropy=True)
    assert torch.allclose(logp, want_logp, atol=1e-5) and torch.allclose(ent, want_ent, atol=1e-5)
    grad = torch.autograd.grad((logp + ent).sum(), model.model.layers[0].mlp.up_proj.weight)[0]
    assert torch.allclose(grad, want_grad, atol=1e-5)
    assert response_logprobs(model, ids, attn, pos, resp)[1] is None  # no entropy graph unless asked


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


PPO_LR = 3e-4
PPO_STEPS = 30
N_PROMPTS = 16  # a small fixed prompt set, revisited every step: the tiny toy model learns it within the test


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
                    max_steps=PPO_STEPS, max_completion_length=40, rollout_engine="hf")  # vLLM: test_rollout.py
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


def _toy_job(tmp_path, n_prompts=8):
    from data_gen.config import ToyTaskConfig
    from data_gen.toy import toy_prompts
    from workbench.models import resolve_model, toy_template
    from workbench.trainers.base import TrainJob

    data = toy_prompts(ToyTaskConfig(min_ops=2, max_ops=2, max_digits=1), n_prompts, seed=0)
    return TrainJob(base_model=resolve_model("toy:arith"), data=data, template=toy_template(), out_dir=tmp_path)


def test_ppo_trains_on_the_sampled_token_ids(tmp_path, monkeypatch):
    """The engine's token ids go into the batch as they are, even when its text says something else (a
    re-tokenised text would differ), and the update runs with gradient checkpointing active."""
    from workbench.trainers.rollout import HFRollout

    sampled, batched, checkpointed = [], [], []

    class Engine(HFRollout):
        def generate(self, *args):
            rows = super().generate(*args)
            for row in rows:
                for r in row:
                    sampled.append(list(r.token_ids))
                    r.text = "not what was sampled"
            return rows

    class Spy(PPOTrainerPlugin):
        def rollout_engine(self, kind, job, cfg, actor, tokenizer, stops):
            layer = actor.model.layers[0]
            layer.register_forward_pre_hook(lambda m, a: checkpointed.append(
                m.gradient_checkpointing and m.training and torch.is_grad_enabled()))
            return Engine(actor, tokenizer, stops)

    real = ppo.batch_tensors
    monkeypatch.setattr(ppo, "batch_tensors", lambda p, r, *a: batched.extend(r) or real(p, r, *a))
    job = _toy_job(tmp_path)
    cfg = PPOConfig(learning_rate=1e-4, rollout_batch_size=8, samples_per_prompt=2, batch_size=16,
                    per_device_batch_size=8, max_steps=2, max_completion_length=40)
    Spy().train(job, cfg)
    assert batched == sampled and len(sampled) == 2 * 16
    assert any(ids[-1] == job_eos for ids in sampled for job_eos in [256])  # toy EOS kept where it stopped
    assert any(checkpointed)


def test_bf16_updates_at_lr_1e_6_change_the_weights(tmp_path):
    """float32 master weights under bf16 autocast: one update at lr 1e-6 moves nearly every weight (pure
    bf16 weights would round almost every such update away)."""
    from safetensors.torch import load_file

    job = _toy_job(tmp_path)
    cfg = PPOConfig(bf16=True, learning_rate=1e-6, rollout_batch_size=8, samples_per_prompt=2, batch_size=16,
                    per_device_batch_size=16, max_steps=1, max_completion_length=40, rollout_engine="hf")
    PPOTrainerPlugin().train(job, cfg)
    name = "model.layers.0.mlp.down_proj.weight"
    before = load_file(f"{job.base_model}/model.safetensors")[name].float()
    after = load_file(job.model_dir / "model.safetensors")[name]
    assert after.dtype == torch.float32
    assert (after != before).float().mean() > 0.5


def test_reference_runs_in_the_actors_dtype_so_the_kl_starts_at_zero(tmp_path):
    """The reference is the actor's float32 copy: before any update their log-probabilities are equal, so the
    first iteration's KL is exactly 0 (a bf16 reference made it start above 0, issue 21). A prompt longer than
    max_length - max_completion_length is left out and counted, as GRPO does."""
    import polars as pl

    from workbench.trainers.ppo_models import build_models

    job = _toy_job(tmp_path, n_prompts=8)
    long = job.data.head(1).with_columns(pl.lit("long").alias("prompt_id"), pl.lit("+".join(["1"] * 200)).alias("problem"))
    job.data = pl.concat([job.data, long])
    cfg = PPOConfig(learning_rate=1e-4, kl_coef=0.05, rollout_batch_size=8, samples_per_prompt=2, batch_size=16,
                    per_device_batch_size=8, max_steps=1, max_completion_length=24, max_length=160,
                    rollout_engine="hf")
    result = PPOTrainerPlugin().train(job, cfg)
    row = json.loads(job.metrics_path.read_text().splitlines()[0])
    assert row["kl"] == 0.0 and row["kl_loss"] == 0.0
    assert result.extra["prompts_too_long"] == 1
    actor, _critic, ref = build_models(job.base_model, with_ref=True, gradient_checkpointing=False, device="cpu",
                                       world=1)
    assert ref.dtype == actor.dtype == torch.float32
    with pytest.raises(ValueError, match="ppo: every prompt is longer than max_length - max_completion_length = 8"):
        PPOTrainerPlugin().train(job, cfg.model_copy(update={"max_length": 32}))
