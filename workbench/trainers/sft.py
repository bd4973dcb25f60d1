"""SFT and RFT: cross-entropy on prompt + response, prompt tokens masked.

- SFT trains on `demonstrations` (the gold worked solutions; the paper's Table 1 setting).
- RFT (rejection-sampling fine-tuning) trains on `positives`, the base model's own verified-correct samples
  (the paper's Table 2 baseline). Same loss, different data.

Both run `workbench.trainers.common.train_token_loss` with `kind="ce"`, the same loop and token loss that
DFT uses with `kind="dft"`, so SFT, RFT and DFT differ only in the per-token weight.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from workbench.trainers.base import TrainConfig, Trainer, TrainJob, TrainResult
from workbench.trainers.common import batch_problem, train_token_loss


class SFTFamilyConfig(TrainConfig):
    """TrainConfig (the paper's Section 4.1 defaults: lr 5e-5, batch 256, cosine, 10% warmup, 1 epoch,
    max length 2048) plus gradient clipping."""

    max_grad_norm: float = Field(1.0, gt=0, description="Clip the global gradient norm to this "
                                 "(transformers Trainer's default).")
    fused_lm_head: bool | None = Field(None, description="Score response tokens with TRL's tiled LM head "
                                       "(trl.trainer.add_fused_lm_head): log-probabilities without building the "
                                       "[batch, seq, vocab] logits; same values. None (auto): on with a GPU, off "
                                       "on CPU, where its torch fallback measured ~1.9x slower and ~1.9x the "
                                       "memory of full logits (benchmarks/dft_overhead.py). Never used with "
                                       "kl_weight > 0, whose KL needs the full logits.")


class SFTConfig(SFTFamilyConfig):
    data: Literal["positives", "demonstrations"] = Field(
        "demonstrations", description="Data set to train on: `demonstrations` (gold solutions, Table 1) or "
        "`positives` (verified-correct samples)."
    )


class RFTConfig(SFTFamilyConfig):
    """RFT always trains on positives (RFT on demonstrations is SFT)."""


class SFTTrainerPlugin(Trainer):
    """Supervised fine-tuning: mean cross-entropy over response tokens."""

    name: ClassVar[str] = "sft"
    consumes: ClassVar[str] = "demonstrations"
    Config: ClassVar[type[TrainConfig]] = SFTConfig
    check_launch = staticmethod(batch_problem)  # batch_size vs micro-batch x workers, at load
    distributed: ClassVar[bool] = True  # N workers: FSDP2 (launch.py)
    checkpoints: ClassVar[bool] = True  # save_steps, resume (checkpoint.py)

    def train(self, job: TrainJob, cfg: TrainConfig) -> TrainResult:
        return train_token_loss(job, cfg, kind="ce", what=f"{self.name} ({getattr(cfg, 'data', self.consumes)})")


class RFTTrainerPlugin(SFTTrainerPlugin):
    """Rejection-sampling fine-tuning: the SFT loss on the base model's verified-correct samples."""

    name: ClassVar[str] = "rft"
    consumes: ClassVar[str] = "positives"
    Config: ClassVar[type[TrainConfig]] = RFTConfig
