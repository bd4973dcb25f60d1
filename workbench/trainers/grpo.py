"""GRPO: TRL's `GRPOTrainer` on the RL prompts, with the data-generation verifier as the reward.

Each prompt is rendered with the run's template (a plain string, so TRL applies no chat template of its
own); TRL samples `num_generations` completions per prompt, scores them with `data_gen.verifiers.reward`
(the recipe's `verify.verifier`; 1.0 correct, else 0.0; the same code the verify stage runs), normalises
rewards within each group and takes a clipped policy-gradient step with a KL penalty `beta` to the base
model. The loss is the token mean over the batch (`loss_type: dapo`, verl's `loss_agg_mode: token-mean`), and
TRL's two corrections that verl lacks (`vllm_importance_sampling_correction`, `use_bias_correction_kl`, both on
by default in TRL 1.16) are off unless a recipe turns them on.

Rollouts use transformers `generate` by default; `use_vllm` turns on TRL's vLLM colocate mode, which is
for GPUs only (its weight sync fails on CPU, see DESIGN.md).

Batch sizes count completions, as TRL does: one optimizer step takes `batch_size` completions, i.e.
`batch_size / num_generations` prompts. verl counts prompts: its `ppo_mini_batch_size` is multiplied by the
rollout `n` (verl/workers/fsdp_workers.py), so verl's GRPO math example (ppo_mini_batch_size 256, n 5) is
`batch_size: 1280, num_generations: 5` here, and its `data.train_batch_size: 1024` prompts per rollout is
`rollout_batch_size: 1024` (4 optimizer steps on each rollout batch).

`max_length` caps prompt + response: prompts longer than `max_length - max_completion_length` tokens are
left out and counted (verl's `data.filter_overlong_prompts`).

Under `num_workers: N` the trainer runs in every Ray Train worker (launch.py) and TRL does DDP through
accelerate, as DPO does: each worker rolls out its slice of the generation batch, rewards are gathered so every
group is normalised whole, and the per-worker micro-batch and accumulation keep `batch_size` completions per
optimizer step. `save_steps` uses the Trainer's checkpoints, moved into checkpoints/step-<N>/ (checkpoint.py),
at rollout boundaries only (TRL keeps the completions of a rollout in memory); a rerun resumes from the latest.
"""

from __future__ import annotations

import shutil
from typing import Literal

import torch
from pydantic import Field, model_validator

from workbench.template import render_prompt
from workbench.trainers import checkpoint
from workbench.trainers.base import MetricsLog, TrainConfig, Trainer, TrainJob, TrainResult
from workbench.trainers.common import fit_prompts, hf_args, load_base, require_columns, setup_torch
from workbench.trainers.launch import worker_batch

# TRL log key -> metrics.jsonl key
LOGGED = {"loss": "loss", "learning_rate": "learning_rate", "reward": "reward", "reward_std": "reward_std",
          "kl": "kl", "entropy": "entropy", "grad_norm": "grad_norm", "num_tokens": "num_tokens",
          "completions/mean_length": "response_length", "frac_reward_zero_std": "frac_reward_zero_std",
          "clip_ratio/region_mean": "clipfrac", "completions/clipped_ratio": "truncated"}


class GRPOConfig(TrainConfig):
    """GRPO settings. Defaults follow verl's GRPO math example (examples/grpo_trainer/run_qwen2-7b_math.sh:
    actor lr 1e-6, kl_loss_coef 0.001, max_prompt_length = max_response_length = 1024, ppo_mini_batch_size
    256 prompts x rollout.n 5, constant lr) unless a field says otherwise; toy recipes override the learning
    rate and batch sizes."""

    learning_rate: float = Field(1e-6, gt=0, description="Peak AdamW learning rate (verl and DeepSeekMath: 1e-6).")
    lr_scheduler: str = Field("constant", description="transformers scheduler name (verl: constant).")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Warm-up share of steps (verl: 0).")
    batch_size: int = Field(1280, ge=1, description="Completions (not prompts) per optimizer step; a multiple "
                            "of num_generations (verl ppo_mini_batch_size=256 prompts x n=5 = 1280).")
    num_generations: int = Field(5, ge=2, description="Completions per prompt, the GRPO group (verl's example: "
                                 "rollout.n=5; TRL's default 8, DeepSeekMath 64).")
    rollout_batch_size: int | None = Field(
        None, ge=1, description="Prompts sampled per rollout batch (verl data.train_batch_size, 1024 in the "
        "example); the optimizer takes rollout_batch_size x num_generations / batch_size steps on each. "
        "Unset: batch_size / num_generations, one fresh rollout per step (TRL's default).")
    max_length: int = Field(2048, ge=8, description="Most prompt + response tokens; longer prompts are left out "
                            "(verl: max_prompt_length 1024 + max_response_length 1024, filter_overlong_prompts).")
    beta: float = Field(0.001, ge=0, description="KL coefficient to the base model (verl kl_loss_coef=0.001; "
                        "0 skips loading the reference model).")
    max_completion_length: int = Field(1024, ge=1, description="Most response tokens (verl max_response_length).")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature (verl rollout: 1.0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Rollout nucleus threshold.")
    epsilon: float = Field(0.2, gt=0, description="Ratio clip (verl clip_ratio=0.2).")
    num_iterations: int = Field(1, ge=1, description="Updates per generation batch (GRPO's mu; verl ppo_epochs=1).")
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = Field(
        "dapo", description="TRL loss aggregation: dapo (default; the token mean over the batch, verl "
        "ppo_trainer.yaml loss_agg_mode: token-mean, and what our PPO does), grpo (DeepSeekMath's per-sequence "
        "mean), dr_grpo, bnpo.")
    scale_rewards: str = Field("group", description="Divide advantages by the group's std (group), the batch's, "
                               "or none (Dr. GRPO).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping (verl grad_clip=1.0).")
    use_vllm: bool = Field(False, description="Roll out with TRL's vLLM colocate mode (GPUs only).")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="vLLM's GPU share in colocate mode.")
    vllm_importance_sampling_correction: bool = Field(
        False, description="TRL's correction of the vLLM/trainer probability mismatch (on by default in TRL 1.16: "
        "sequence mask, cap 3). Off: the authors' verl has no such correction.")
    use_bias_correction_kl: bool = Field(
        False, description="TRL's importance-weighted KL term (DeepSeek-V3.2; on by default in TRL 1.16). Off: "
        "verl's k3 KL loss (low_var_kl) is not weighted.")
    reward_timeout_s: float = Field(5.0, gt=0, description="Verifier timeout per response.")

    @model_validator(mode="after")
    def _check_batch(self):
        if self.batch_size % self.num_generations:
            raise ValueError(f"grpo: batch_size={self.batch_size} must be a multiple of "
                             f"num_generations={self.num_generations}")
        if self.batch_size % min(self.per_device_batch_size, self.batch_size):
            raise ValueError(f"grpo: batch_size={self.batch_size} must be a multiple of "
                             f"per_device_batch_size={self.per_device_batch_size}")
        if self.rollout_batch_size and (self.rollout_batch_size * self.num_generations) % self.batch_size:
            raise ValueError(f"grpo: rollout_batch_size x num_generations = {self.rollout_batch_size} x "
                             f"{self.num_generations} must be a multiple of batch_size={self.batch_size}")
        if self.max_completion_length >= self.max_length:
            raise ValueError(f"grpo: max_completion_length={self.max_completion_length} leaves no room for the "
                             f"prompt within max_length={self.max_length}")
        return self


def verifier_reward_func(timeout_s: float, verifier_name: str = "math", options: dict | None = None):
    """A TRL reward function: TRL passes the completions and every dataset column (here `answer`)."""
    from data_gen.verifiers import reward

    def verifier(completions: list[str], answer: list[str], **_) -> list[float]:
        return reward(list(completions), list(answer), timeout_s, verifier_name, options)

    return verifier


def _metrics_callback(log: MetricsLog):
    from transformers import TrainerCallback

    class WriteMetrics(TrainerCallback):
        """Copies TRL's training logs to metrics.jsonl (renamed as in LOGGED)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log.log(state.global_step, **{ours: logs[k] for k, ours in LOGGED.items()
                                               if logs.get(k) is not None})

    return WriteMetrics()


def batches_per_rollout(cfg: GRPOConfig) -> int:
    """Optimizer batches in one rollout batch: rollout_batch_size x num_generations / batch_size (1 if unset)."""
    return cfg.rollout_batch_size * cfg.num_generations // cfg.batch_size if cfg.rollout_batch_size else 1


def rollout_steps(cfg: GRPOConfig) -> int:
    """Optimizer steps taken on one rollout batch: each of its batches num_iterations times."""
    return batches_per_rollout(cfg) * cfg.num_iterations


def worker_split(cfg: GRPOConfig, world: int) -> tuple[int, int, int]:
    """(per-worker micro-batch, accumulation, TRL steps_per_generation) for `world` workers. TRL's generation
    batch, micro x world x steps_per_generation, is then batch_size completions (or rollout_batch_size x
    num_generations), whole groups by the config's checks, whatever the worker count."""
    micro, accum = worker_batch(cfg.batch_size, cfg.per_device_batch_size, world, "grpo")
    # steps_per_generation counts micro-batches: accum of them make one optimizer step
    return micro, accum, accum * batches_per_rollout(cfg)


def launch_problem(cfg: GRPOConfig, world: int, save_steps: int) -> tuple[str, str] | None:
    """(field, one-line reason) when `cfg` cannot train on `world` workers with checkpoints every `save_steps`."""
    try:
        worker_split(cfg, world)
    except ValueError as exc:
        return "num_workers", str(exc)
    if save_steps % rollout_steps(cfg):
        return "save_steps", (f"grpo: save_steps={save_steps} must be a multiple of the {rollout_steps(cfg)} "
                              "optimizer steps of one rollout (rollout_batch_size x num_generations / batch_size "
                              "x num_iterations): TRL cannot resume inside a rollout")
    return None


def trl_args(job: TrainJob, cfg: GRPOConfig, stop_ids: list[int]):
    """TRL's GRPOConfig from ours (hf_args' shared Trainer settings: gloo for CPU workers, save_steps, no hub).
    `bf16` is mixed precision (autocast over float32 master weights, as the SFT-family loop does);
    `warmup_ratio` goes in as a ratio; vLLM rollouts stop on `stop_ids` (the HF rollouts read them from the
    model's generation config, see `train`)."""
    from trl import GRPOConfig as TRLGRPOConfig

    micro, accum, per_generation = worker_split(cfg, checkpoint.rank_world()[1])
    shared = {k: v for k, v in hf_args(job, cfg).items() if k != "max_length"}  # GRPO caps lengths itself
    return TRLGRPOConfig(
        **{**shared, "per_device_train_batch_size": micro, "gradient_accumulation_steps": accum},
        steps_per_generation=per_generation, max_grad_norm=cfg.max_grad_norm,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, top_p=cfg.top_p, beta=cfg.beta, epsilon=cfg.epsilon,
        num_iterations=cfg.num_iterations, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
        vllm_importance_sampling_correction=cfg.vllm_importance_sampling_correction,
        use_bias_correction_kl=cfg.use_bias_correction_kl,
        use_vllm=cfg.use_vllm, vllm_mode="colocate", vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        generation_kwargs={"stop_token_ids": stop_ids} if cfg.use_vllm else None,
        disable_dropout=True,
    )


class EpochSeeded(torch.utils.data.Sampler):
    """TRL's RepeatSampler with each epoch's prompt order a pure function of (seed, epoch). TRL draws every
    epoch's permutation from one generator seeded once, so a run resumed in epoch e > 0 (a fresh sampler) would
    replay epoch 0's order; here the generator is reseeded with seed + epoch (the Trainer's state) per pass."""

    def __init__(self, sampler, epoch):
        self.sampler, self.epoch = sampler, epoch

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        if self.sampler.shuffle:
            self.sampler.generator.manual_seed(self.sampler.seed + self.epoch())
        return iter(self.sampler)


def grpo_trainer(**kwargs):
    """TRL's GRPOTrainer drawing its prompts through `EpochSeeded`, so that a resumed run sees the same batches."""
    from trl import GRPOTrainer

    class ResumableGRPOTrainer(GRPOTrainer):
        def _get_train_sampler(self, dataset=None):
            # state.epoch is e + (micro-batches done) / (per epoch) during epoch e, exactly e + 1 after its last
            return EpochSeeded(super()._get_train_sampler(dataset), lambda: int(self.state.epoch or 0))

    return ResumableGRPOTrainer(**kwargs)


class GRPOTrainerPlugin(Trainer):
    name = "grpo"
    consumes = "prompts"
    Config = GRPOConfig
    distributed = True  # N workers: DDP through accelerate (launch.py)
    checkpoints = True  # save_steps at rollout boundaries, resume (checkpoint.py)
    check_launch = staticmethod(launch_problem)  # launch.check_entry: refused when the recipe loads

    def train(self, job: TrainJob, cfg: GRPOConfig) -> TrainResult:
        from datasets import Dataset
        from transformers import PrinterCallback

        from data_gen.samplers import stop_token_ids

        require_columns(job.data, ["problem", "answer"], "grpo (rl prompts)")
        if len(job.data) == 0:
            raise ValueError("grpo: the rl prompts are empty")
        if problem := launch_problem(cfg, checkpoint.rank_world()[1], job.save_steps):
            raise ValueError(problem[1])
        device = setup_torch(job)
        if cfg.use_vllm and device.type != "cuda":
            raise ValueError("grpo: use_vllm needs a GPU (TRL's colocate weight sync fails on CPU)")
        # float32 master weights whatever the checkpoint's dtype: a bf16 weight near 0.02 moves in steps of
        # ~1.2e-4, so AdamW updates of ~lr=1e-6 would round to nothing. bf16 is TRL's autocast (cfg.bf16).
        model, tokenizer = load_base(job, device)
        # TRL stops HF rollouts on the model's generation-config EOS ids, read once when the trainer is built:
        # add the chat template's end of turn for that, then give the model back the base model's, so that every
        # checkpoint and the exported model keep it.
        saved_eos = model.generation_config.eos_token_id
        stop_ids = stop_token_ids(tokenizer, model.generation_config)
        model.generation_config.eos_token_id = stop_ids
        prompts = [render_prompt(tokenizer, p, job.template) for p in job.data["problem"].to_list()]
        prompts, answers, too_long = fit_prompts(tokenizer, prompts, job.data["answer"].to_list(),
                                                 cfg.max_length - cfg.max_completion_length, "grpo")
        dataset = Dataset.from_dict({"prompt": prompts, "answer": answers})

        args = trl_args(job, cfg, stop_ids)
        world = checkpoint.rank_world()[1]  # N workers: DDP inside Ray Train's process group (launch.py)
        log, callbacks, resume_from, resumed = checkpoint.hf_stage(job, args.output_dir, tokenizer, _metrics_callback)
        reward_fn = verifier_reward_func(cfg.reward_timeout_s, job.verifier, job.verifier_options)
        trainer = grpo_trainer(model=model, reward_funcs=[reward_fn], args=args, train_dataset=dataset,
                               processing_class=tokenizer, callbacks=callbacks)
        model.generation_config.eos_token_id = saved_eos  # TRL keeps stop_ids in its own generation config
        trainer.remove_callback(PrinterCallback)  # metrics.jsonl is the log; keep stdout quiet
        trainer.train(resume_from_checkpoint=resume_from)
        checkpoint.export_model(trainer.model, tokenizer, job.model_dir)
        checkpoint.finish(job)
        if log is not None:
            log.close()
            shutil.rmtree(args.output_dir, ignore_errors=True)  # the Trainer's scratch; checkpoints moved out
        return TrainResult(job.model_dir, train_tokens=int(trainer.state.num_input_tokens_seen),
                           steps=int(trainer.state.global_step),
                           extra={"mixed_precision": str(trainer.accelerator.mixed_precision),
                                  "master_dtype": str(next(trainer.model.parameters()).dtype),
                                  "stop_token_ids": stop_ids, "prompts_too_long": too_long,
                                  "num_workers": world, "resumed_from_step": resumed,
                                  **rollout_counts(trainer.state, cfg)})


def rollout_counts(state, cfg: GRPOConfig) -> dict:
    """Completions sampled and their response tokens (the budget ledger, workbench/budget.py): batch_size /
    num_iterations completions per optimizer step; tokens from the logged mean completion length of each step."""
    per_step = cfg.batch_size / cfg.num_iterations
    tokens, last = 0.0, 0
    for row in state.log_history:
        if "completions/mean_length" in row:
            tokens += row["completions/mean_length"] * per_step * (row.get("step", last) - last)
            last = row.get("step", last)
    return {"samples_generated": round(state.global_step * per_step), "generated_tokens": round(tokens)}
