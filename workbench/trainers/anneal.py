"""DFT annealed into cross-entropy over training: the follow-up the DFT paper (arXiv 2508.05629) itself
suggests for data where DFT's down-weighting of unlikely tokens stops learning too early.

The token weight is DFT's mixed weight w_t = alpha * sg(p_t) + (1 - alpha) (the `alpha` option of `dft`) with
alpha moving from 1 (DFT) to 0 (cross-entropy) as training progresses:

    alpha(s) = 1                         for s <= anneal_start
             = 1 - x  (linear)  or  (1 + cos(pi x)) / 2  (cosine),   x = (s - start) / (end - start)
             = 0                         for s >= anneal_end

with s = (step - 1) / (total_steps - 1). Nothing in the paper fixes the schedule: linear over the whole
run is this workbench's default.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from workbench.trainers.base import TrainConfig
from workbench.trainers.variant import VariantConfig, VariantTrainer


class AnnealConfig(VariantConfig):
    anneal_start: float = Field(0.0, ge=0, lt=1, description="Share of training before the move to "
                                "cross-entropy starts (pure DFT until then).")
    anneal_end: float = Field(1.0, gt=0, le=1, description="Share of training at which the loss is pure "
                              "cross-entropy.")
    anneal_shape: Literal["linear", "cosine"] = Field("linear", description="Shape of alpha between start "
                                                      "and end.")

    @model_validator(mode="after")
    def _ordered(self):
        if self.anneal_start >= self.anneal_end:
            raise ValueError(f"anneal_start ({self.anneal_start}) must be below anneal_end ({self.anneal_end})")
        return self


class AnnealTrainerPlugin(VariantTrainer):
    """DFT annealed to cross-entropy over training (alpha from 1 to 0)."""

    name: ClassVar[str] = "anneal"
    kind: ClassVar[str] = "anneal"
    Config: ClassVar[type[TrainConfig]] = AnnealConfig
