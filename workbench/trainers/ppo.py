"""PPO with a learned critic, the verifier's 0/1 reward and a KL term to the base model.

TRL removed its PPO trainer, so this is ours: one file in the spirit of CleanRL's `ppo.py`, with the
LLM-specific parts as verl does them (verl/trainer/ppo/core_algos.py, verl/trainer/config/ppo_trainer.yaml):

- actor: the policy, initialised from the base model; it is what gets saved;
- critic: the base model's transformer with a scalar value head (one value per token);
- reference: a frozen copy of the base model, loaded only when `kl_coef` > 0. By default there is no KL at all,
  as in verl's PPO (ppo_trainer.yaml `use_kl_loss: false`, `use_kl_in_reward: False`; its PPO examples keep both
  off); with `kl_coef` > 0 the KL is a loss term of the actor, `kl_coef` x the low-variance k3 estimate (verl
  `use_kl_loss`, `kl_loss_type: low_var_kl`, 0.001 in verl's GRPO example), or with `kl_in_reward` the
  per-token k1 KL, scaled by `kl_coef`, is subtracted from the reward;
- reward: the recipe's verifier (`data_gen.verifiers.reward`, 1.0 correct else 0.0, `_score`), given at the
  response's final token;
- GAE over response tokens (gamma, lam), advantages whitened over the batch's valid tokens;
- prompts longer than `max_length - max_completion_length` tokens are left out and counted, as GRPO does
  (verl's `data.filter_overlong_prompts`), so the two online methods train on the same prompts;
- the clipped surrogate with verl's dual clip (`dual_clip_ratio`, 3.0) and log-ratio clamp (+-20) for the
  actor and the clipped value loss for the critic, `ppo_epochs` passes of
  minibatches (`batch_size` sequences each) over every rollout batch; the actor steps, frees its gradients,
  then the critic does, so only one model's gradients are alive at a time.

One *step* (what `max_steps` counts, what metrics.jsonl logs) is one PPO iteration: a rollout batch of
`rollout_batch_size` prompts, the updates made on it, and the weight sync into the rollout engine (verl's
"training step"). Rollouts come from `workbench/trainers/rollout.py`: a vLLM engine in this process whose
weights follow the actor's (default where vLLM imports), or transformers `generate` on the actor. PPO trains
on the token ids the engine sampled (a response a stop token ended keeps that token), never on re-tokenised
text. Prompts are rendered with the run's template. metrics.jsonl times each phase: rollout_s, score_s (the
verifier), prep_s (old / reference log-probs and values), update_s, sync_s, step_s (the whole iteration).

With `num_workers: N` (Ray Train, launch.py) actor, critic and reference are sharded with FSDP2
(ppo_models.py); every worker rolls out its equal share of each rollout batch with its own engine (vLLM, or HF
generate on an unsharded copy), whose weights are gathered from the shards after every update; advantages are
whitened with the whole batch's mean and variance, and each minibatch's token-mean losses are summed over the
workers, so the update is the one a single process would make on the same samples. `save_steps` checkpoints
actor, critic, both optimizers and schedulers, RNG and the prompt order (checkpoint.py); a killed run resumes
from the latest. HF-generate rollouts resume exactly; vLLM's sampler is seeded once at engine start, so a
resumed vLLM run samples other responses from the resume on.

Precision and memory: actor and critic keep float32 master weights and run under bf16 autocast when `bf16` is
set; the reference, frozen, is held in the actor's dtype (float32) and runs under the same autocast, so before
the first update its log-probabilities equal the actor's and the KL starts at exactly 0 (TRL builds its
reference in the policy's dtype; verl holds both in bf16); log-probabilities
are taken from the response positions' hidden states through the LM head in checkpointed chunks
(`ppo_core.response_logprobs`), so no `[batch, seq, vocab]` float32 tensor is ever materialised, and the
entropy enters the graph only when `entropy_coef` > 0.
"""

from __future__ import annotations

import math
import random
import time
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from workbench.template import render_prompt
from workbench.trainers import checkpoint
from workbench.trainers import rollout as rollouts
from workbench.trainers.base import TrainConfig, Trainer, TrainJob, TrainResult
from workbench.trainers.common import fit_prompts, require_columns
from workbench.trainers.launch import all_sum, worker_device
from workbench.trainers.ppo_core import (
    compute_gae,
    kl_estimate,
    masked_mean,
    policy_loss,
    response_logprobs,
    value_loss,
    whiten,
)
from workbench.trainers.ppo_models import (
    adamw,
    batch_tensors,
    build_models,
    launch_problem,
    mmap_threshold,
    plan,
)

# ---------------------------------------------------------------------------------------------
# Config and models
# ---------------------------------------------------------------------------------------------


class PPOConfig(TrainConfig):
    """PPO settings. Defaults follow verl/trainer/config/ppo_trainer.yaml and its PPO math example
    (examples/ppo_trainer/run_qwen2-7b_math_gsm8k_megatron.sh) unless a field says otherwise; toy recipes
    override the learning rates and batch sizes."""

    learning_rate: float = Field(1e-6, gt=0, description="Actor learning rate (verl actor.optim.lr=1e-6).")
    critic_learning_rate: float = Field(1e-5, gt=0, description="Critic learning rate "
                                        "(verl critic.optim.lr=1e-5).")
    lr_scheduler: str = Field("constant", description="Scheduler for both optimizers (verl: constant).")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Warm-up share of optimizer steps (verl: 0).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay of actor and critic "
                                "(verl actor/critic optim.weight_decay=0.01).")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward, actor and critic "
                                         "(verl model.enable_gradient_checkpointing=True).")
    rollout_batch_size: int = Field(1024, ge=1, description="Prompts per rollout batch "
                                    "(verl data.train_batch_size).")
    samples_per_prompt: int = Field(1, ge=1, description="Responses per prompt (verl rollout.n=1 for PPO).")
    batch_size: int = Field(256, ge=1, description="Sequences per optimizer step, the PPO minibatch "
                            "(verl ppo_mini_batch_size=256).")
    per_device_batch_size: int = Field(8, ge=1, description="Sequences per forward pass (micro-batch).")
    ppo_epochs: int = Field(1, ge=1, description="Passes over each rollout batch (verl ppo_epochs=1; CleanRL: 4).")
    clip_ratio: float = Field(0.2, gt=0, description="Policy ratio clip epsilon (verl actor.clip_ratio=0.2).")
    dual_clip_ratio: float = Field(3.0, gt=1, description="Dual clip: where the advantage is negative the policy "
                                   "loss is capped at -A x this (verl actor.clip_ratio_c=3.0).")
    value_clip: float = Field(0.5, gt=0, description="Value clip range (verl critic.cliprange_value=0.5).")
    kl_coef: float = Field(0.0, ge=0, description="KL coefficient to the base model; 0 (default) drops the KL "
                           "and the reference model, as verl's PPO (ppo_trainer.yaml use_kl_loss: false, "
                           "use_kl_in_reward: False). verl's value when either is turned on: 0.001 "
                           "(actor.kl_loss_coef, algorithm.kl_ctrl.kl_coef).")
    kl_in_reward: bool = Field(False, description="Subtract kl_coef x k1 KL from the per-token reward instead of "
                               "adding kl_coef x k3 KL to the actor loss (verl algorithm.use_kl_in_reward=False).")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount (verl algorithm.gamma=1.0).")
    lam: float = Field(1.0, ge=0, le=1, description="GAE lambda (verl algorithm.lam=1.0).")
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus in the actor loss (verl entropy_coeff=0); "
                                "at 0 the entropy is only measured, outside the graph.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping (verl actor/critic grad_clip=1.0).")
    whiten_advantages: bool = Field(True, description="Normalise advantages over the batch's valid tokens.")
    max_completion_length: int = Field(1024, ge=1, description="Most response tokens "
                                       "(verl data.max_response_length in the GRPO math example).")
    max_length: int = Field(2048, ge=8, description="Most prompt + response tokens; prompts longer than "
                            "max_length - max_completion_length are left out and counted, as GRPO does (verl "
                            "max_prompt_length 1024 + max_response_length 1024, filter_overlong_prompts).")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature (verl rollout: 1.0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Rollout nucleus threshold (verl rollout: 1.0).")
    reward_timeout_s: float = Field(5.0, gt=0, description="Verifier timeout per response.")
    rollout_engine: Literal["auto", "vllm", "hf"] = Field(
        "auto", description="Rollouts from a vLLM engine in the trainer's process, its weights synced from the "
        "actor after every update (vllm), or transformers generate on the actor (hf); auto: vllm when it imports.")
    rollout_dtype: str = Field("bfloat16", description="vLLM rollout engine dtype (verl rollout.dtype=bfloat16).")
    rollout_kv_cache_gb: float = Field(0.5, gt=0, description="vLLM KV cache on CPU (GiB).")
    rollout_gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="Share of the GPU the colocated vLLM engine takes (TRL colocate default 0.3; "
        "verl 0.5 frees its KV cache while training, we do not).")
    rollout_hf_batch_size: int = Field(64, ge=1, description="Prompts per generate call (rollout_engine=hf).")
    logits_chunk_tokens: int = Field(256, ge=1, description="Response tokens whose logits exist at once when "
                                     "log-probabilities are computed ([tokens, vocab] float32 per chunk).")


    @model_validator(mode="after")
    def _check_lengths(self):
        if self.max_completion_length >= self.max_length:
            raise ValueError(f"ppo: max_completion_length={self.max_completion_length} leaves no room for the "
                             f"prompt within max_length={self.max_length}")
        return self


def _score(job: TrainJob, cfg: PPOConfig, texts: list[str], answers: list[str]) -> list[float]:
    """The reward: the recipe's verifier (verify.verifier, math-verify by default), 1.0 correct else 0.0."""
    from data_gen.verifiers import reward

    return reward(texts, answers, cfg.reward_timeout_s, job.verifier, job.verifier_options)


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class PPOTrainerPlugin(Trainer):
    name = "ppo"
    consumes = "prompts"
    Config = PPOConfig
    distributed = True  # N workers: FSDP2 over actor, critic and reference, one rollout engine per worker
    checkpoints = True  # save_steps: models, both optimizers and schedulers, RNG and the prompt order
    check_launch = staticmethod(launch_problem)

    def train(self, job: TrainJob, cfg: PPOConfig) -> TrainResult:
        from transformers import AutoTokenizer, get_scheduler

        from data_gen.samplers import stop_token_ids

        require_columns(job.data, ["problem", "answer"], "ppo (rl prompts)")
        if len(job.data) == 0:
            raise ValueError("ppo: the rl prompts are empty")
        rank, world = checkpoint.rank_world()
        torch.set_num_threads(max(1, job.num_threads))
        device = worker_device()
        heap = mmap_threshold if device.type == "cpu" else (lambda mib: None)  # per phase, see ppo_models
        random.seed(job.seed + rank)  # each worker samples its own responses
        np.random.seed(job.seed + rank)
        torch.manual_seed(job.seed + rank)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)

        tokenizer = AutoTokenizer.from_pretrained(job.base_model)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        prompts = [render_prompt(tokenizer, p, job.template) for p in job.data["problem"].to_list()]
        prompts, answers, too_long = fit_prompts(tokenizer, prompts, job.data["answer"].to_list(),
                                                 cfg.max_length - cfg.max_completion_length, "ppo")
        n_prompts, minibatch = plan(cfg, len(prompts), world)
        share, local_minibatch = n_prompts // world, minibatch // world
        actor, critic, ref = build_models(job.base_model, with_ref=cfg.kl_coef > 0, device=device, world=world,
                                          gradient_checkpointing=cfg.gradient_checkpointing)
        stops = stop_token_ids(tokenizer, actor.generation_config)
        engine_kind = rollouts.resolve(cfg.rollout_engine)
        engine = self.rollout_engine(engine_kind, job, cfg, actor, tokenizer, stops)

        prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        iterations = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_epochs * len(prompts) / n_prompts)
        seqs = share * cfg.samples_per_prompt  # this worker's sequences per rollout batch
        opt_steps = iterations * cfg.ppo_epochs * math.ceil(seqs / local_minibatch)
        warmup = int(cfg.warmup_ratio * opt_steps)
        actor_opt = adamw(actor.parameters(), cfg.learning_rate, cfg)
        critic_opt = adamw(critic.parameters(), cfg.critic_learning_rate, cfg)
        actor_sched = get_scheduler(cfg.lr_scheduler, actor_opt, warmup, opt_steps)
        critic_sched = get_scheduler(cfg.lr_scheduler, critic_opt, warmup, opt_steps)
        log = job.metrics_log() if rank == 0 else None  # rank 0 logs the batch's numbers summed over workers
        rng = np.random.default_rng(job.seed)  # the prompt order: the same on every worker
        state = checkpoint.resume(job, model=actor, optimizer=actor_opt, scheduler=actor_sched,
                                  trainables={"critic": (critic, critic_opt, critic_sched)})
        order: list[int] = state.get("order", [])
        if "prompt_rng" in state:
            rng.bit_generator.state = state["prompt_rng"]
        train_tokens, rollout_tokens = state.get("train_tokens", 0), state.get("rollout_tokens", 0)
        generated_tokens = state.get("generated_tokens", 0)  # response tokens sampled (the budget ledger)
        mb, chunk = cfg.per_device_batch_size, cfg.logits_chunk_tokens
        sync_s = engine.sync(actor)  # a reused engine, or a resumed run, may hold other weights

        def window(j):
            """Micro-batch j's own columns and response length: the batch is padded to its longest prompt and
            response, a micro-batch is cut to its own (verl removes padding for the same reason)."""
            lo = int(attn[j].any(0).int().argmax())  # prompts are left-padded
            r = max(1, int(mask[j].sum(1).max()))
            return (slice(None), slice(lo, ids.shape[1] - R + r)), r

        def logprobs(model, j, with_entropy=False):
            cols, r = window(j)
            with autocast:
                lp, ent = response_logprobs(model, ids[j][cols], attn[j][cols], pos[j][cols], resp[j][:, :r],
                                            cfg.temperature, chunk, with_entropy)
            return F.pad(lp, (0, R - r)), (F.pad(ent, (0, R - r)) if ent is not None else None)

        def values_of(j):
            cols, r = window(j)
            with autocast:
                return F.pad(critic(ids[j][cols], attn[j][cols], pos[j][cols], r), (0, R - r))

        for step in range(state["step"] + 1, iterations + 1):
            # ---- rollout: this worker's share of the batch's prompts; sample token ids, score the texts
            t0 = time.perf_counter()
            heap(64)
            while len(order) < n_prompts:
                order += rng.permutation(len(prompts)).tolist()
            idx, order = order[:n_prompts][rank * share:(rank + 1) * share], order[n_prompts:]
            actor.eval()
            samples = engine.generate([prompts[i] for i in idx], cfg.samples_per_prompt, cfg.temperature,
                                      cfg.top_p, cfg.max_completion_length)
            rows = [(i, s) for i, row in zip(idx, samples) for s in row]
            rollout_s = time.perf_counter() - t0
            scores = torch.tensor(_score(job, cfg, [s.text for _, s in rows], [answers[i] for i, _ in rows]),
                                  device=device)
            ids, attn, pos, resp, mask = batch_tensors([prompt_ids[i] for i, _ in rows],
                                                       [s.token_ids for _, s in rows], pad, device)
            R = resp.shape[1]

            # ---- old log-probs, reference log-probs, values; rewards and GAE advantages
            t1 = time.perf_counter()
            critic.eval()
            with torch.no_grad():
                old_logp, ref_logp, old_values, entropy = [], [], [], []
                for s in range(0, len(ids), mb):
                    j = slice(s, s + mb)
                    lp, ent = logprobs(actor, j, with_entropy=True)
                    old_logp.append(lp)
                    entropy.append(ent)
                    ref_logp.append(logprobs(ref, j)[0] if ref is not None else lp)
                    old_values.append(values_of(j))
                old_logp, ref_logp, old_values = torch.cat(old_logp), torch.cat(ref_logp), torch.cat(old_values)
                kl = kl_estimate(old_logp, ref_logp, "k1") * mask
                rewards = -cfg.kl_coef * kl if cfg.kl_in_reward else torch.zeros_like(kl)
                last = (mask.sum(1).long() - 1).clamp(min=0)
                rewards[torch.arange(len(ids)), last] += scores  # verifier reward at the final token
                advantages, returns = compute_gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
                if cfg.whiten_advantages:
                    advantages = whiten(advantages, mask, total=all_sum if world > 1 else None)
            kl_loss = cfg.kl_coef > 0 and not cfg.kl_in_reward

            # ---- update: ppo_epochs passes of minibatches (each worker takes its share of every minibatch);
            # micro-batches accumulate gradients; the actor steps and frees its gradients before the critic's
            # backward passes. Losses are token means over the whole minibatch, summed over the workers
            # (x world: FSDP averages the workers' gradients).
            t2 = time.perf_counter()
            heap(1)
            actor.train()
            critic.train()
            sums = {"policy_loss": 0.0, "value_loss": 0.0, "clipfrac": 0.0, "kl_loss": 0.0}
            n_mb = 0
            for _ in range(cfg.ppo_epochs):
                perm = torch.randperm(len(ids), device=device)
                for s in range(0, len(ids), local_minibatch):
                    mb_idx = perm[s : s + local_minibatch]
                    (mb_tokens,) = all_sum((float(mask[mb_idx].sum()),))
                    mb_tokens = max(mb_tokens, 1.0)
                    for u in range(0, len(mb_idx), mb):
                        j = mb_idx[u : u + mb]
                        w = float(mask[j].sum()) / mb_tokens
                        logp, ent = logprobs(actor, j, with_entropy=cfg.entropy_coef > 0)
                        pl_, cf = policy_loss(logp, old_logp[j], advantages[j], mask[j], cfg.clip_ratio,
                                              cfg.dual_clip_ratio)
                        loss = pl_
                        if kl_loss:
                            kll = masked_mean(kl_estimate(logp, ref_logp[j], "k3"), mask[j])
                            loss = loss + cfg.kl_coef * kll
                            sums["kl_loss"] += float(kll.detach()) * w
                        if ent is not None:
                            loss = loss - cfg.entropy_coef * masked_mean(ent, mask[j])
                        (loss * w * world).backward()
                        sums["policy_loss"] += float(pl_.detach()) * w
                        sums["clipfrac"] += float(cf.detach()) * w
                    torch.nn.utils.clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)
                    actor_opt.step()
                    actor_opt.zero_grad(set_to_none=True)
                    for u in range(0, len(mb_idx), mb):
                        j = mb_idx[u : u + mb]
                        w = float(mask[j].sum()) / mb_tokens
                        vl = value_loss(values_of(j), old_values[j], returns[j], mask[j], cfg.value_clip)
                        (vl * w * world).backward()
                        sums["value_loss"] += float(vl.detach()) * w
                    torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
                    critic_opt.step()
                    critic_opt.zero_grad(set_to_none=True)
                    lr = actor_sched.get_last_lr()[0]
                    actor_sched.step()
                    critic_sched.step()
                    n_mb += 1
            t3 = time.perf_counter()
            sync_s = engine.sync(actor)

            # ---- the step's numbers, summed over the workers
            n_seq, n_tok = len(ids), float(mask.sum())
            sums, n_seq, n_tok, score_sum, kl_sum, ent_sum, tokens = all_sum((
                sums, n_seq, n_tok, float(scores.sum()), float((kl * mask).sum()),
                float((torch.cat(entropy) * mask).sum()), int(attn.sum())))
            train_tokens += tokens * cfg.ppo_epochs
            rollout_tokens += tokens
            generated_tokens += int(n_tok)
            if log is not None and (step % cfg.logging_steps == 0 or step == iterations):
                log.log(step, reward=score_sum / n_seq, kl=kl_sum / max(n_tok, 1), loss=sums["policy_loss"] / n_mb,
                        **{k: v / n_mb for k, v in sums.items()}, entropy=ent_sum / max(n_tok, 1),
                        learning_rate=lr, critic_learning_rate=critic_sched.get_last_lr()[0],
                        response_length=n_tok / n_seq, num_tokens=train_tokens, rollout_s=round(rollout_s, 3),
                        score_s=round(t1 - t0 - rollout_s, 3), prep_s=round(t2 - t1, 3),
                        update_s=round(t3 - t2, 3), sync_s=round(sync_s, 3),
                        step_s=round(time.perf_counter() - t0, 3))
            if job.save_steps and step % job.save_steps == 0 and (step < iterations or job.keep_checkpoints):
                checkpoint.save_checkpoint(
                    job.out_dir, step, model=actor, optimizer=actor_opt, scheduler=actor_sched,
                    tokenizer=tokenizer, keep_models=job.keep_checkpoints,
                    trainables={"critic": (critic, critic_opt, critic_sched)},
                    counters={"order": order, "prompt_rng": rng.bit_generator.state, "train_tokens": train_tokens,
                              "rollout_tokens": rollout_tokens, "generated_tokens": generated_tokens})

        engine.close()
        checkpoint.export_model(actor, tokenizer, job.model_dir)
        checkpoint.finish(job)
        if log is not None:
            log.close()
        return TrainResult(job.model_dir, train_tokens=train_tokens, steps=iterations,
                           extra={"rollout_tokens": rollout_tokens, "optimizer_steps": opt_steps,
                                  "samples_generated": iterations * n_prompts * cfg.samples_per_prompt,
                                  "generated_tokens": generated_tokens,
                                  "rollout_engine": engine_kind, "num_workers": world,
                                  "prompts_too_long": too_long,
                                  "resumed_from_step": state["step"]})

    def rollout_engine(self, kind: str, job: TrainJob, cfg: PPOConfig, actor, tokenizer, stops: list[int]):
        """This worker's rollout engine (workbench/trainers/rollout.py); tests override this to reuse one.
        With N workers the HF engine generates on its own unsharded copy, synced like vLLM's."""
        rank, world = checkpoint.rank_world()
        if kind == "vllm":
            return rollouts.VLLMRollout(str(job.base_model), tokenizer, stops, job.seed + rank, cfg.rollout_dtype,
                                        cfg.rollout_kv_cache_gb, cfg.rollout_gpu_memory_utilization)
        own = None
        if world > 1:
            from transformers import AutoModelForCausalLM

            own = AutoModelForCausalLM.from_pretrained(job.base_model, dtype=torch.float32).to(worker_device())
        return rollouts.HFRollout(actor, tokenizer, stops, cfg.rollout_hf_batch_size, own_copy=own)
