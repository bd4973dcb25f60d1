"""iw-SFT, importance-weighted supervised fine-tuning (Qin and Springenberg 2025, "Supervised Fine Tuning on
Curated Data is Reinforcement Learning (and can be improved)", arXiv 2507.12856): the concurrent method the
DFT paper compares with in its appendix (A.4 in v2: DFT ahead on 4 of 5 base models).

SFT on curated data maximises a lower bound of the RL objective with the sparse reward "was kept by the
curation". Importance-weighting each curated sequence y by how much more likely the current policy makes
it than the policy that produced the data tightens the bound:

    L = - sum_t sg(w(y)) * log p_theta(y_t),
    w(y) = clip( exp( T * mean_t [log p_theta(y_t) - log p_ref(y_t)] ), 0, w_max )

The reference policy p_ref is the frozen base model (a second forward pass per micro-batch), as in the
authors' LLM code (emmyqin/iw_sft, `IwSFTLoss` with `sum_over_time=True`, T = 1, w_max = 16): the log-ratio is
averaged over the sequence's response tokens (a length-normalised, i.e. geometric-mean, sequence ratio), not
summed, and the weight is detached. `iw_level: token` is their per-token variant ("iw-SFT-step" in some
tables): w_t = clip(p_theta(y_t) / p_ref(y_t), 1 - iw_clip, 1 + iw_clip) with iw_clip = 0.8.
Assumptions: the paper's derivation names the data-generating policy as the reference; with the workbench's
positives that policy IS the base model, so the assumption is exact for Table 2 data and an approximation
for gold demonstrations. At step 1 the policy equals the base model, so w = 1 and iw-SFT starts as SFT.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from workbench.trainers.base import TrainConfig
from workbench.trainers.variant import VariantConfig, VariantTrainer


class IwSFTConfig(VariantConfig):
    iw_level: Literal["sequence", "token"] = Field(
        "sequence", description="Importance weight per sequence (the authors' LLM setting) or per token.")
    iw_temperature: float = Field(1.0, gt=0, description="T in exp(T x mean log-ratio) (sequence level).")
    iw_max: float = Field(16.0, gt=0, description="Upper clip of the sequence weight (authors: 16).")
    iw_clip: float = Field(0.8, gt=0, lt=1, description="Token level: clip the ratio to [1 - c, 1 + c].")


class IwSFTTrainerPlugin(VariantTrainer):
    """iw-SFT (arXiv 2507.12856): cross-entropy weighted by the sequence's policy/base likelihood ratio."""

    name: ClassVar[str] = "iwsft"
    kind: ClassVar[str] = "iwsft"
    Config: ClassVar[type[TrainConfig]] = IwSFTConfig
