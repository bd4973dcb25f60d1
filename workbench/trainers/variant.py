"""What the DFT-family plugins share (pk, profit, iwsft, psft, anneal): a config that picks the data set
and can add the ASFT anchor, and a trainer that runs the SFT-family loop with its loss kind.

Each variant is one small file that names its kind (a key of `losses.LOSS_KINDS`) and its options; the loop,
the data handling and the logging (cross-entropy and the DFT loss beside the variant's own) are shared with
SFT, RFT and DFT in `common.train_token_loss`, so the variants differ from them only in the per-token loss.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from workbench.trainers.base import TrainConfig, Trainer, TrainJob, TrainResult
from workbench.trainers.common import batch_problem, train_token_loss
from workbench.trainers.sft import SFTFamilyConfig


class VariantConfig(SFTFamilyConfig):
    data: Literal["positives", "demonstrations"] = Field(
        "positives", description="Data set to train on: `positives` (verified-correct samples, Table 2) or "
        "`demonstrations` (gold solutions, Table 1)."
    )
    kl_weight: float = Field(0.0, ge=0, description="ASFT anchor (arXiv 2509.23753): add kl_weight x KL per "
                             "response token (0: off; a second forward pass of the base model, full logits).")
    kl_direction: Literal["forward", "reverse"] = Field(
        "forward", description="Direction of the ASFT KL: forward = KL(base || model), the ASFT authors'; "
        "reverse = KL(model || base).")


class VariantTrainer(Trainer):
    """The SFT-family loop with the per-token loss `kind`."""

    consumes: ClassVar[str] = "positives"
    kind: ClassVar[str]
    check_launch = staticmethod(batch_problem)  # batch_size vs micro-batch x workers, at load
    distributed: ClassVar[bool] = True  # N workers: FSDP2 (launch.py), as for DFT
    checkpoints: ClassVar[bool] = True  # save_steps, resume (checkpoint.py); keep_checkpoints feeds the curves

    def train(self, job: TrainJob, cfg: TrainConfig) -> TrainResult:
        what = f"{self.name} ({getattr(cfg, 'data', self.consumes)})"
        return train_token_loss(job, cfg, kind=self.kind, what=what)
