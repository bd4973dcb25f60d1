"""An example third-party trainer, as a researcher would ship it in their own package.

One file plus one entry-point line (`const-lr-sft = "wb_example_plugin:ConstLRSFT"` under
`[project.entry-points."workbench.trainers"]`): RFT-style cross-entropy on positives with a constant
learning rate and no warmup, reusing the workbench's SFT-family loop.
"""

from typing import ClassVar

from pydantic import Field

from workbench.trainers.base import TrainConfig, Trainer, TrainJob, TrainResult
from workbench.trainers.common import train_token_loss
from workbench.trainers.sft import SFTFamilyConfig


class ConstLRConfig(SFTFamilyConfig):
    lr_scheduler: str = Field("constant", description="Always constant for this trainer.")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="No warmup by default.")


class ConstLRSFT(Trainer):
    """Cross-entropy on positives at a constant learning rate."""

    name: ClassVar[str] = "const-lr-sft"
    consumes: ClassVar[str] = "positives"
    Config: ClassVar[type[TrainConfig]] = ConstLRConfig

    def train(self, job: TrainJob, cfg: TrainConfig) -> TrainResult:
        return train_token_loss(job, cfg, kind="ce", what=self.name)
