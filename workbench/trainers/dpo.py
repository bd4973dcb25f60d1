"""DPO, Direct Preference Optimization (Rafailov et al. 2023), on the build stage's `pairs`: for each prompt
a verified-correct response (chosen) and a wrong one (rejected) from the same base model's samples.

Runs TRL's `DPOTrainer` with the run's one prompt template (the prompt is rendered here, chosen and rejected
are the raw responses; TRL appends EOS to both). The frozen reference is a copy of the base model, made by
TRL. metrics.jsonl gets TRL's logs per step: loss, learning_rate, rewards/chosen, rewards/rejected,
rewards/margins, rewards/accuracies, logps/*, grad_norm.

Under `num_workers: N` the trainer runs in every Ray Train worker (launch.py) and the transformers Trainer
does DDP through accelerate (gloo on CPU, one GPU per process, never nn.DataParallel); the per-worker
micro-batch and accumulation keep the global batch at `batch_size`. `save_steps` uses the Trainer's own
checkpoints, moved into checkpoints/step-<N>/ (checkpoint.py), and a rerun resumes from the latest.
"""

from __future__ import annotations

import shutil
from typing import ClassVar, Literal

from pydantic import Field

from workbench.template import render_prompt
from workbench.trainers import checkpoint
from workbench.trainers.base import TrainConfig, Trainer, TrainJob, TrainResult
from workbench.trainers.common import (
    batch_problem,
    hf_args,
    load_base,
    metrics_callback,
    require_columns,
    setup_torch,
)

DPOLoss = Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "exo_pair", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"]


class DPOConfig(TrainConfig):
    learning_rate: float = Field(1e-6, gt=0, description="Peak learning rate. 1e-6 as in the DPO paper's "
                                 "experiments (Rafailov et al. 2023, arXiv 2305.18290, Appendix B) and TRL's "
                                 "DPOConfig default; DPO diverges at SFT-like rates such as 5e-5.")
    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL to the reference model "
                        "(0.1 as in the DPO paper and TRL).")
    loss_type: DPOLoss = Field("sigmoid", description="TRL DPO loss: sigmoid (the DPO paper's), hinge, ipo, robust, "
                           "bco_pair, sppo_hard, nca_pair, exo_pair, aot, aot_unpaired, apo_zero, apo_down, "
                           "discopop, sigmoid_norm.")
    max_grad_norm: float = Field(1.0, gt=0, description="Clip the global gradient norm to this "
                                 "(transformers Trainer's default).")


class DPOTrainerPlugin(Trainer):
    """Direct Preference Optimization with TRL on (prompt, chosen, rejected) pairs."""

    name: ClassVar[str] = "dpo"
    consumes: ClassVar[str] = "pairs"
    Config: ClassVar[type[TrainConfig]] = DPOConfig
    distributed: ClassVar[bool] = True  # N workers: DDP through accelerate (launch.py)
    checkpoints: ClassVar[bool] = True  # save_steps, resume (checkpoint.py)
    check_launch = staticmethod(batch_problem)  # batch_size vs micro-batch x workers, at load

    def train(self, job: TrainJob, cfg: TrainConfig) -> TrainResult:
        from datasets import Dataset
        from transformers import PrinterCallback
        from trl import DPOConfig as TRLDPOConfig
        from trl import DPOTrainer

        require_columns(job.data, ["problem", "chosen", "rejected"], "dpo (pairs)")
        device = setup_torch(job)
        model, tokenizer = load_base(job, device)
        rows = {
            "prompt": [render_prompt(tokenizer, p, job.template) for p in job.data["problem"]],
            "chosen": job.data["chosen"].to_list(),
            "rejected": job.data["rejected"].to_list(),
        }
        args = TRLDPOConfig(**hf_args(job, cfg), beta=cfg.beta, loss_type=[cfg.loss_type],
                            max_grad_norm=cfg.max_grad_norm)
        world = checkpoint.rank_world()[1]  # N workers: DDP inside Ray Train's process group (launch.py)
        log, callbacks, resume_from, resumed = checkpoint.hf_stage(job, args.output_dir, tokenizer,
                                                                   metrics_callback)
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                             processing_class=tokenizer, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)  # metrics.jsonl is the log; keep stdout quiet
        out = trainer.train(resume_from_checkpoint=resume_from)
        checkpoint.export_model(trainer.model, tokenizer, job.model_dir)
        checkpoint.finish(job)
        if log is not None:
            log.close()
            shutil.rmtree(args.output_dir, ignore_errors=True)  # the Trainer's scratch; checkpoints moved out
        tokens = int(getattr(trainer, "_total_train_tokens", 0))
        return TrainResult(job.model_dir, train_tokens=tokens, steps=int(out.global_step),
                           extra={"mean_loss": float(out.training_loss), "pairs": job.data.height,
                                  "num_workers": world, "resumed_from_step": resumed})
