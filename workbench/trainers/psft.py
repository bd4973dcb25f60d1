"""Proximal SFT (Zhu et al. 2025, "Proximal Supervised Fine-Tuning", arXiv 2508.17784).

SFT is a policy gradient with advantage 1 on every demonstrated token; PSFT adds PPO's trust region. With
r_t = p_theta(y_t) / p_old(y_t), the ratio to the policy before the current round of updates,

    L = - mean_t min( r_t, clip(r_t, 1 - clip_low, 1 + clip_high) )

so a token whose probability has already risen by more than clip_high since p_old gets no more gradient;
below that the gradient is -r_t grad log p_t (SFT's, rescaled by the ratio).

The ratio is 1 when p_old is the current policy, so the clip only acts over several updates per p_old. The
authors' verl recipe (zwhong714/PSFT, verl/recipe/psft/run_psft.sh) computes p_old once per batch and then takes
8 optimizer steps on its mini-batches, clip 0.2 / 0.28, token-mean: 64-prompt batches of 8-prompt mini-batches in
the LIMO version of the script (commit bd20b49), 256 of 32 in the OpenR1 version (commit 52f4c7e); both 8
updates per p_old. (Their `clip_ratio_c=10.0` never acts: every advantage is +1.) Here p_old is a frozen copy of
the model refreshed every `old_policy_every` optimizer steps (default 8, the same 8 updates per p_old); the
batches in between are fresh data rather than mini-batches of one big batch, which is the one assumption
beyond the authors' code; batch sizes are the recipe's. Costs a second forward pass per micro-batch and a
second copy of the weights.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from workbench.trainers.base import TrainConfig
from workbench.trainers.variant import VariantConfig, VariantTrainer


class PSFTConfig(VariantConfig):
    clip_low: float = Field(0.2, ge=0, lt=1, description="Lower clip of the ratio, 1 - clip_low (authors: 0.2).")
    clip_high: float = Field(0.28, ge=0, description="Upper clip of the ratio, 1 + clip_high (authors: 0.28).")
    old_policy_every: int = Field(8, ge=1, description="Optimizer steps between refreshes of the old policy "
                                  "p_old (authors: 8 mini-batch updates per batch).")


class PSFTTrainerPlugin(VariantTrainer):
    """Proximal SFT (arXiv 2508.17784): SFT with PPO's clipped ratio to the previous policy."""

    name: ClassVar[str] = "psft"
    kind: ClassVar[str] = "psft"
    Config: ClassVar[type[TrainConfig]] = PSFTConfig
