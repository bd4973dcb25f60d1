"""GRPO: TRL's `GRPOTrainer` on the RL prompts, with the data-generation verifier as the reward.

Each prompt is rendered with the run's template (a plain string, so TRL applies no chat template of its
own); TRL samples `num_generations` completions per prompt, scores them with `data_gen.verifier.reward`
(1.0 correct, else 0.0; the same code the verify stage runs), normalises rewards within each group and
takes a clipped policy-gradient step with a KL penalty `beta` to the base model.

Rollouts use transformers `generate` by default; `use_vllm` turns on TRL's vLLM colocate mode, which is
for GPUs only (its weight sync fails on CPU, see DESIGN.md).

One step is one TRL optimizer step: `batch_size` completions, i.e. `batch_size / num_generations` prompts.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from workbench.template import render_prompt
from workbench.trainers.base import MetricsLog, TrainConfig, Trainer, TrainJob, TrainResult
from workbench.trainers.common import require_columns

# TRL log key -> metrics.jsonl key
LOGGED = {"loss": "loss", "learning_rate": "learning_rate", "reward": "reward", "reward_std": "reward_std",
          "kl": "kl", "entropy": "entropy", "grad_norm": "grad_norm", "num_tokens": "num_tokens",
          "completions/mean_length": "response_length", "frac_reward_zero_std": "frac_reward_zero_std",
          "clip_ratio/region_mean": "clipfrac"}


class GRPOConfig(TrainConfig):
    """GRPO settings. Defaults follow verl's GRPO math example (examples/grpo_trainer/run_qwen2-7b_math.sh:
    actor lr 1e-6, kl_loss_coef 0.001, max_response_length 1024, ppo_mini_batch_size 256, constant lr)
    unless a field says otherwise; toy recipes override the learning rate and batch sizes."""

    learning_rate: float = Field(1e-6, gt=0, description="Peak AdamW learning rate (verl and DeepSeekMath: 1e-6).")
    lr_scheduler: str = Field("constant", description="transformers scheduler name (verl: constant).")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Warm-up share of steps (verl: 0).")
    batch_size: int = Field(256, ge=1, description="Completions per optimizer step; a multiple of num_generations "
                            "(verl ppo_mini_batch_size=256).")
    num_generations: int = Field(8, ge=2, description="Completions per prompt, the GRPO group (TRL default 8; "
                                 "verl's example uses 5, DeepSeekMath 64).")
    beta: float = Field(0.001, ge=0, description="KL coefficient to the base model (verl kl_loss_coef=0.001; "
                        "0 skips loading the reference model).")
    max_completion_length: int = Field(1024, ge=1, description="Most response tokens (verl max_response_length).")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature (verl rollout: 1.0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Rollout nucleus threshold.")
    epsilon: float = Field(0.2, gt=0, description="Ratio clip (verl clip_ratio=0.2).")
    num_iterations: int = Field(1, ge=1, description="Updates per generation batch (GRPO's mu; verl ppo_epochs=1).")
    loss_type: str = Field("grpo", description="TRL loss aggregation: grpo (the paper's per-sequence mean), "
                           "dapo, dr_grpo, bnpo.")
    scale_rewards: str = Field("group", description="Divide advantages by the group's std (group), the batch's, "
                               "or none (Dr. GRPO).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping (verl grad_clip=1.0).")
    use_vllm: bool = Field(False, description="Roll out with TRL's vLLM colocate mode (GPUs only).")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="vLLM's GPU share in colocate mode.")
    reward_timeout_s: float = Field(5.0, gt=0, description="Verifier timeout per response.")

    @model_validator(mode="after")
    def _check_batch(self):
        if self.batch_size % self.num_generations:
            raise ValueError(f"grpo: batch_size={self.batch_size} must be a multiple of "
                             f"num_generations={self.num_generations}")
        if self.batch_size % min(self.per_device_batch_size, self.batch_size):
            raise ValueError(f"grpo: batch_size={self.batch_size} must be a multiple of "
                             f"per_device_batch_size={self.per_device_batch_size}")
        return self


def verifier_reward_func(timeout_s: float):
    """A TRL reward function: TRL passes the completions and every dataset column (here `answer`)."""
    from data_gen.verifier import reward

    def verifier(completions: list[str], answer: list[str], **_) -> list[float]:
        return reward(list(completions), list(answer), timeout_s=timeout_s)

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


class GRPOTrainerPlugin(Trainer):
    name = "grpo"
    consumes = "prompts"
    Config = GRPOConfig

    def train(self, job: TrainJob, cfg: GRPOConfig) -> TrainResult:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
        from trl import GRPOConfig as TRLGRPOConfig
        from trl import GRPOTrainer

        require_columns(job.data, ["problem", "answer"], "grpo (rl prompts)")
        if len(job.data) == 0:
            raise ValueError("grpo: the rl prompts are empty")
        torch.set_num_threads(job.num_threads)
        set_seed(job.seed)
        on_gpu = torch.cuda.is_available()
        if cfg.use_vllm and not on_gpu:
            raise ValueError("grpo: use_vllm needs a GPU (TRL's colocate weight sync fails on CPU)")

        tokenizer = AutoTokenizer.from_pretrained(job.base_model)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(job.base_model, dtype=torch.bfloat16 if cfg.bf16 else None)
        prompts = [render_prompt(tokenizer, p, job.template) for p in job.data["problem"].to_list()]
        dataset = Dataset.from_dict({"prompt": prompts, "answer": job.data["answer"].to_list()})

        per_device = min(cfg.per_device_batch_size, cfg.batch_size)
        args = TRLGRPOConfig(
            output_dir=str(job.out_dir / "trl"), report_to="none", push_to_hub=False, save_strategy="no",
            use_cpu=not on_gpu, seed=job.seed, data_seed=job.seed, bf16=cfg.bf16,
            learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio
            weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
            num_train_epochs=cfg.num_epochs, max_steps=cfg.max_steps,
            per_device_train_batch_size=per_device, gradient_accumulation_steps=cfg.batch_size // per_device,
            gradient_checkpointing=cfg.gradient_checkpointing, logging_steps=cfg.logging_steps,
            num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature, top_p=cfg.top_p, beta=cfg.beta, epsilon=cfg.epsilon,
            num_iterations=cfg.num_iterations, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
            use_vllm=cfg.use_vllm, vllm_mode="colocate", vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
            disable_dropout=True,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=[verifier_reward_func(cfg.reward_timeout_s)], args=args,
                              train_dataset=dataset, processing_class=tokenizer,
                              callbacks=[_metrics_callback(MetricsLog(job.metrics_path))])
        trainer.train()
        job.model_dir.mkdir(parents=True, exist_ok=True)
        trainer.model.save_pretrained(job.model_dir)
        tokenizer.save_pretrained(job.model_dir)
        return TrainResult(job.model_dir, train_tokens=int(trainer.state.num_input_tokens_seen),
                           steps=int(trainer.state.global_step))
