"""PPO with a learned critic, the verifier's 0/1 reward and a KL penalty to the base model.

TRL removed its PPO trainer, so this is ours: one file in the spirit of CleanRL's `ppo.py`, with the
LLM-specific parts as verl does them (verl/trainer/ppo/core_algos.py):

- actor: the policy, initialised from the base model; it is what gets saved;
- critic: the base model's transformer with a scalar value head (one value per token);
- reference: a frozen copy of the base model; the per-token k1 KL `log pi(a|s) - log pi_ref(a|s)`, scaled
  by `kl_coef`, is subtracted from the reward at every response token;
- reward: the data-generation verifier (`data_gen.verifier.reward`, 1.0 correct else 0.0), given at the
  response's final token;
- GAE over response tokens (gamma, lam), advantages whitened over the batch's valid tokens;
- the clipped surrogate for the actor and the clipped value loss for the critic, `ppo_epochs` passes of
  minibatches (`batch_size` sequences each) over every rollout batch.

One *step* (what `max_steps` counts, what metrics.jsonl logs) is one PPO iteration: a rollout batch of
`rollout_batch_size` prompts and the updates made on it (verl's "training step").
Rollouts go through the data-generation sampler (`data_gen.samplers.hf_generate`); prompts are rendered
with the run's template. Responses are re-tokenised here; a response that stopped gets the EOS token
appended, so the model is trained to stop.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from workbench.template import render_prompt
from workbench.trainers.base import MetricsLog, TrainConfig, Trainer, TrainJob, TrainResult
from workbench.trainers.common import require_columns

# ---------------------------------------------------------------------------------------------
# The pure math. Every tensor is [batch, response_len]; `mask` is 1 on real response tokens.
# ---------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def compute_gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation. Returns (advantages, returns = advantages + values).

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}; after the last valid
    token the episode has ended (V = 0, A = 0). Padding (mask 0) must come after the valid tokens.
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = delta + gamma * lam * next_adv
        next_value, next_adv = values[:, t], advantages[:, t]
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the valid tokens (unbiased variance, as verl's masked_whiten)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = (((x - mean) ** 2) * mask).sum() / (n - 1).clamp(min=1)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, clip: float):
    """PPO clipped surrogate, averaged over valid tokens. Returns (loss, clipfrac)."""
    ratio = torch.exp(logprobs - old_logprobs)
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), mask)
    return loss, clipfrac


def value_loss(values, old_values, returns, mask, clip: float):
    """Clipped value loss 0.5 * max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clamp(V - V_old, +-clip)."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    loss = 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)
    return loss


def token_logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor):
    """log p(token) and the entropy of the distribution at each position (logits already aligned)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    chosen = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return chosen, entropy


# ---------------------------------------------------------------------------------------------
# Config and models
# ---------------------------------------------------------------------------------------------


class PPOConfig(TrainConfig):
    """PPO settings. Defaults follow verl's PPO math examples
    (examples/ppo_trainer/run_qwen2-7b_math_gsm8k_megatron.sh and verl/trainer/config/ppo_trainer.yaml)
    unless a field says otherwise; toy recipes override the learning rates and batch sizes."""

    learning_rate: float = Field(1e-6, gt=0, description="Actor learning rate (verl actor.optim.lr=1e-6).")
    critic_learning_rate: float = Field(1e-5, gt=0, description="Critic learning rate (verl critic.optim.lr=1e-5).")
    lr_scheduler: str = Field("constant", description="Scheduler for both optimizers (verl: constant).")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Warm-up share of optimizer steps (verl: 0).")
    rollout_batch_size: int = Field(1024, ge=1, description="Prompts per rollout batch (verl data.train_batch_size).")
    samples_per_prompt: int = Field(1, ge=1, description="Responses per prompt (verl rollout.n=1 for PPO).")
    batch_size: int = Field(256, ge=1, description="Sequences per optimizer step, the PPO minibatch "
                            "(verl ppo_mini_batch_size=256).")
    per_device_batch_size: int = Field(8, ge=1, description="Sequences per forward pass (micro-batch).")
    ppo_epochs: int = Field(1, ge=1, description="Passes over each rollout batch (verl ppo_epochs=1; CleanRL: 4).")
    clip_ratio: float = Field(0.2, gt=0, description="Policy ratio clip epsilon (verl actor.clip_ratio=0.2).")
    value_clip: float = Field(0.2, gt=0, description="Value clip range (CleanRL clip_coef=0.2; verl uses 0.5).")
    kl_coef: float = Field(0.001, ge=0, description="k1 KL penalty in the reward (verl algorithm.kl_ctrl.kl_coef).")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount (verl algorithm.gamma=1.0).")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda (0.95, verl's math examples).")
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus in the actor loss (verl entropy_coeff=0).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping (verl actor/critic grad_clip=1.0).")
    whiten_advantages: bool = Field(True, description="Normalise advantages over the batch's valid tokens.")
    max_completion_length: int = Field(1024, ge=1, description="Most response tokens "
                                       "(verl data.max_response_length in the GRPO math example).")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature (verl rollout: 1.0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Rollout nucleus threshold (verl rollout: 1.0).")
    reward_timeout_s: float = Field(5.0, gt=0, description="Verifier timeout per response.")


class Critic(torch.nn.Module):
    """The base model's transformer body with a scalar value head (zero-initialised: V starts at 0)."""

    def __init__(self, base_model_dir: str, dtype=None):
        super().__init__()
        from transformers import AutoModel

        self.body = AutoModel.from_pretrained(base_model_dir, dtype=dtype)
        self.head = torch.nn.Linear(self.body.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask, position_ids):
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return self.head(hidden.last_hidden_state.float()).squeeze(-1)


def _batch_tensors(tokenizer, prompts: list[str], responses: list[list[int]], device):
    """Left-padded prompts + right-padded responses -> input_ids, attention_mask, position_ids, resp, mask."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    plen, rlen = max(map(len, prompt_ids)), max(1, max(map(len, responses)))
    rows, attn, resp, mask = [], [], [], []
    for p, r in zip(prompt_ids, responses):
        rows.append([pad] * (plen - len(p)) + p + r + [pad] * (rlen - len(r)))
        attn.append([0] * (plen - len(p)) + [1] * (len(p) + len(r)) + [0] * (rlen - len(r)))
        resp.append(r + [pad] * (rlen - len(r)))
        mask.append([1] * len(r) + [0] * (rlen - len(r)))
    t = lambda x: torch.tensor(x, device=device)
    attn_t = t(attn)
    pos = (attn_t.cumsum(-1) - 1).clamp(min=0)
    return t(rows), attn_t, pos, t(resp), t(mask).float()


def _actor_forward(model, ids, attn, pos, resp):
    """Log-probs and entropies of the response tokens under `model` ([B, R])."""
    r = resp.shape[1]
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, -r - 1 : -1]
    return token_logprobs_and_entropy(logits, resp)


def _critic_forward(critic, ids, attn, pos, r):
    """Value of the state before each response token ([B, R])."""
    return critic(ids, attn, pos)[:, -r - 1 : -1]


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class PPOTrainerPlugin(Trainer):
    name = "ppo"
    consumes = "prompts"
    Config = PPOConfig

    def train(self, job: TrainJob, cfg: PPOConfig) -> TrainResult:
        from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

        from data_gen.samplers import hf_generate
        from data_gen.verifier import reward

        require_columns(job.data, ["problem", "answer"], "ppo (rl prompts)")
        if len(job.data) == 0:
            raise ValueError("ppo: the rl prompts are empty")
        torch.set_num_threads(job.num_threads)
        random.seed(job.seed)
        np.random.seed(job.seed)
        torch.manual_seed(job.seed)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if cfg.bf16 else None

        tokenizer = AutoTokenizer.from_pretrained(job.base_model)
        actor = AutoModelForCausalLM.from_pretrained(job.base_model, dtype=dtype).to(device)
        ref = AutoModelForCausalLM.from_pretrained(job.base_model, dtype=dtype).to(device).requires_grad_(False)
        critic = Critic(str(job.base_model), dtype=dtype).to(device)
        if cfg.gradient_checkpointing:
            actor.gradient_checkpointing_enable()
            critic.body.gradient_checkpointing_enable()
        for m in (actor, ref, critic):
            m.eval()  # no dropout anywhere: the ratio is exactly 1 before the first update

        problems, answers = job.data["problem"].to_list(), job.data["answer"].to_list()
        prompts = [render_prompt(tokenizer, p, job.template) for p in problems]
        n_prompts = min(cfg.rollout_batch_size, len(prompts))
        iterations = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_epochs * len(prompts) / n_prompts)
        seqs = n_prompts * cfg.samples_per_prompt
        minibatch = min(cfg.batch_size, seqs)
        opt_steps = iterations * cfg.ppo_epochs * math.ceil(seqs / minibatch)
        warmup = int(cfg.warmup_ratio * opt_steps)
        actor_opt = torch.optim.AdamW(actor.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        critic_opt = torch.optim.AdamW(critic.parameters(), lr=cfg.critic_learning_rate, weight_decay=cfg.weight_decay)
        actor_sched = get_scheduler(cfg.lr_scheduler, actor_opt, warmup, opt_steps)
        critic_sched = get_scheduler(cfg.lr_scheduler, critic_opt, warmup, opt_steps)
        log = MetricsLog(job.metrics_path)
        rng = np.random.default_rng(job.seed)
        order: list[int] = []
        train_tokens = rollout_tokens = 0
        mb = cfg.per_device_batch_size

        for step in range(1, iterations + 1):
            # ---- rollout: sample, score, and compute old log-probs, reference log-probs and values
            while len(order) < n_prompts:
                order += rng.permutation(len(prompts)).tolist()
            idx, order = order[:n_prompts], order[n_prompts:]
            batch_prompts = [prompts[i] for i in idx]
            completions = hf_generate(actor, tokenizer, batch_prompts, cfg.samples_per_prompt,
                                      cfg.temperature, cfg.top_p, cfg.max_completion_length)
            texts, golds, seq_prompts, responses = [], [], [], []
            for i, row in zip(idx, completions):
                for c in row:
                    ids = tokenizer(c.text, add_special_tokens=False)["input_ids"][: cfg.max_completion_length]
                    if c.finish_reason == "stop":
                        ids = ids + [tokenizer.eos_token_id]
                    texts.append(c.text)
                    golds.append(answers[i])
                    seq_prompts.append(prompts[i])
                    responses.append(ids)
            scores = torch.tensor(reward(texts, golds, timeout_s=cfg.reward_timeout_s), device=device)
            ids, attn, pos, resp, mask = _batch_tensors(tokenizer, seq_prompts, responses, device)
            rollout_tokens += int(attn.sum())
            R = resp.shape[1]
            with torch.no_grad():
                old_logp, ref_logp, old_values = [], [], []
                for s in range(0, len(ids), mb):
                    sl = slice(s, s + mb)
                    old_logp.append(_actor_forward(actor, ids[sl], attn[sl], pos[sl], resp[sl])[0])
                    ref_logp.append(_actor_forward(ref, ids[sl], attn[sl], pos[sl], resp[sl])[0])
                    old_values.append(_critic_forward(critic, ids[sl], attn[sl], pos[sl], R))
                old_logp, ref_logp, old_values = torch.cat(old_logp), torch.cat(ref_logp), torch.cat(old_values)
                kl = (old_logp - ref_logp) * mask  # k1 estimator per token
                rewards = -cfg.kl_coef * kl
                last = (mask.sum(1).long() - 1).clamp(min=0)
                rewards[torch.arange(len(ids)), last] += scores  # verifier reward at the final token
                advantages, returns = compute_gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
                if cfg.whiten_advantages:
                    advantages = whiten(advantages, mask)

            # ---- update: ppo_epochs passes of minibatches, micro-batches accumulate gradients
            sums = {"policy_loss": 0.0, "value_loss": 0.0, "clipfrac": 0.0, "entropy": 0.0}
            n_mb = 0
            for _ in range(cfg.ppo_epochs):
                perm = torch.randperm(len(ids), device=device)
                for s in range(0, len(ids), minibatch):
                    mb_idx = perm[s : s + minibatch]
                    mb_tokens = mask[mb_idx].sum().clamp(min=1)
                    actor_opt.zero_grad()
                    critic_opt.zero_grad()
                    for u in range(0, len(mb_idx), mb):
                        j = mb_idx[u : u + mb]
                        w = mask[j].sum() / mb_tokens  # token-mean over the whole minibatch
                        logp, ent = _actor_forward(actor, ids[j], attn[j], pos[j], resp[j])
                        pl_, cf = policy_loss(logp, old_logp[j], advantages[j], mask[j], cfg.clip_ratio)
                        ent_m = masked_mean(ent, mask[j])
                        ((pl_ - cfg.entropy_coef * ent_m) * w).backward()
                        values = _critic_forward(critic, ids[j], attn[j], pos[j], R)
                        vl = value_loss(values, old_values[j], returns[j], mask[j], cfg.value_clip)
                        (vl * w).backward()
                        for k, v in (("policy_loss", pl_), ("value_loss", vl), ("clipfrac", cf), ("entropy", ent_m)):
                            sums[k] += float(v.detach()) * float(w)
                    torch.nn.utils.clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)
                    torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
                    actor_opt.step()
                    critic_opt.step()
                    lr = actor_sched.get_last_lr()[0]
                    actor_sched.step()
                    critic_sched.step()
                    n_mb += 1
                    train_tokens += int(attn[mb_idx].sum())
            if step % cfg.logging_steps == 0 or step == iterations:
                log.log(step, reward=float(scores.mean()), kl=float(masked_mean(kl, mask)),
                        loss=sums["policy_loss"] / n_mb, **{k: v / n_mb for k, v in sums.items() if k != "policy_loss"},
                        policy_loss=sums["policy_loss"] / n_mb, learning_rate=lr,
                        critic_learning_rate=critic_sched.get_last_lr()[0],
                        response_length=float(mask.sum(1).mean()), num_tokens=train_tokens)

        job.model_dir.mkdir(parents=True, exist_ok=True)
        actor.save_pretrained(job.model_dir)
        tokenizer.save_pretrained(job.model_dir)
        return TrainResult(job.model_dir, train_tokens=train_tokens, steps=iterations,
                           extra={"rollout_tokens": rollout_tokens, "optimizer_steps": opt_steps})
