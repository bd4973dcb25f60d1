"""DFT, Dynamic Fine-Tuning (the paper's method): each response token's cross-entropy weighted by the
model's own, detached probability of it, `-sg(p_t) * log p_t` (Eq. 9, which sums over each sequence's
tokens); averaged here over the response tokens of the optimizer batch (the authors: over each micro-batch's
tokens, then over micro-batches; see `workbench.trainers.losses`).

Trains on `positives` by default (Table 2); `data: demonstrations` gives the Table 1 setting.
Options beyond the paper (all off by default): `alpha`, `p_floor`, `kl_weight` (ASFT); see
`workbench.trainers.losses`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from workbench.trainers.base import TrainConfig, Trainer, TrainJob, TrainResult
from workbench.trainers.common import batch_problem, train_token_loss
from workbench.trainers.sft import SFTFamilyConfig


class DFTConfig(SFTFamilyConfig):
    data: Literal["positives", "demonstrations"] = Field(
        "positives", description="Data set to train on: `positives` (verified-correct samples, Table 2) or "
        "`demonstrations` (gold solutions, Table 1)."
    )
    alpha: float = Field(1.0, ge=0, le=1, description="Token weight alpha * p + (1 - alpha): 1 is the paper's "
                         "DFT, 0 is plain cross-entropy, in between interpolates.")
    p_floor: float = Field(0.0, ge=0, le=1, description="Clip the weight p from below at this value so that "
                           "unlikely tokens keep some gradient (0: off, the paper's DFT).")
    kl_weight: float = Field(0.0, ge=0, description="ASFT (arXiv 2509.23753): add kl_weight x KL per response "
                             "token, anchoring to the frozen base model (0: off; the authors' ASFT: 0.1; costs a "
                             "second forward pass of the base model).")
    kl_direction: Literal["forward", "reverse"] = Field(
        "forward", description="Direction of the ASFT KL: forward = KL(base || model), the ASFT authors' "
        "F.kl_div(log_softmax(model), softmax(base)) (zhuchichi56/ASFT train_v2.py); reverse = KL(model || base).")


class DFTTrainerPlugin(Trainer):
    """Dynamic Fine-Tuning: the SFT loop with the per-token weight sg(p_t)."""

    name: ClassVar[str] = "dft"
    consumes: ClassVar[str] = "positives"
    Config: ClassVar[type[TrainConfig]] = DFTConfig
    check_launch = staticmethod(batch_problem)  # batch_size vs micro-batch x workers, at load
    distributed: ClassVar[bool] = True  # N workers: FSDP2 (launch.py)
    checkpoints: ClassVar[bool] = True  # save_steps, resume (checkpoint.py)

    def train(self, job: TrainJob, cfg: TrainConfig) -> TrainResult:
        return train_token_loss(job, cfg, kind="dft", what=f"{self.name} ({getattr(cfg, 'data', self.consumes)})")
