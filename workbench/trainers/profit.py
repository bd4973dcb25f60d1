"""ProFit-style probability cutoff (Liu et al. 2026, "ProFit: Leveraging High-Value Signals in SFT via
Probability-Guided Token Selection", arXiv 2601.09195).

Per response token, cross-entropy on the tokens the model already finds likely, nothing on the others:

    L = -1[sg(p_t) >= tau] * log p_t,       summed and divided by ALL response tokens of the batch

The gate is detached, so a kept token has exactly SFT's gradient and a dropped one none. As in the authors'
code (Utaotao/ProFit, `_profit_cross_entropy`, threshold direction "higher", their run script's tau = 0.1), the
sum is divided by the batch's response-token count, dropped tokens included, so dropping tokens also shrinks
the step. The paper's other directions (keep only low-p tokens, a band, random masking) are not offered.
`kept` in metrics.jsonl is the share of response tokens above tau.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from workbench.trainers.base import TrainConfig
from workbench.trainers.variant import VariantConfig, VariantTrainer


class ProFitConfig(VariantConfig):
    tau: float = Field(0.1, ge=0, le=1, description="Probability cutoff: tokens with p_t < tau get no loss "
                       "(the authors' script: 0.1).")


class ProFitTrainerPlugin(VariantTrainer):
    """ProFit (arXiv 2601.09195): cross-entropy only on tokens with p_t >= tau."""

    name: ClassVar[str] = "profit"
    kind: ClassVar[str] = "profit"
    Config: ClassVar[type[TrainConfig]] = ProFitConfig
