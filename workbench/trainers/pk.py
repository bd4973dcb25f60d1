"""The "-p^k" objectives of "Beyond Log Likelihood" (Li et al. 2025, arXiv 2510.00526).

Per response token, the loss is the Box-Cox family the authors train with (their `GeneralFamily-k`):

    L_k = (1 - p_t^k) / k,        gradient  -p_t^k * grad log p_t

k -> 0 is cross-entropy (-log p); k = 1 is `1 - p`, whose gradient -grad p_t is DFT's (Appendix A.4 of
arXiv 2508.05629; the loss values differ, -p log p vs 1 - p); k > 1 (the paper's -p^10) leans further towards
tokens the model already finds likely, which the paper finds best for strong base models ("model-strong end")
and worst for weak ones.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from workbench.trainers.base import TrainConfig
from workbench.trainers.variant import VariantConfig, VariantTrainer


class PkConfig(VariantConfig):
    k: float = Field(1.0, ge=0, description="Exponent k of (1 - p^k) / k: 0 is cross-entropy, 1 has DFT's "
                     "gradient, 10 is the paper's -p^10.")


class PkTrainerPlugin(VariantTrainer):
    """-p^k objectives (arXiv 2510.00526): (1 - p^k)/k per token; k=1 has DFT's gradient, k->0 is SFT."""

    name: ClassVar[str] = "pk"
    kind: ClassVar[str] = "pk"
    Config: ClassVar[type[TrainConfig]] = PkConfig
