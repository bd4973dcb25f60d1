"""TrainConfig, the fields every trainer shares: AdamW betas and weight decay reach both the SFT-family loop
and TRL's trainers; warmup_ratio reaches transformers as a ratio."""

import torch

from workbench.trainers.base import TrainConfig, TrainJob
from workbench.trainers.common import hf_args, make_schedule


def test_betas_and_weight_decay_reach_both_optimizers(tmp_path):
    cfg = TrainConfig(adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.01)
    optimizer, _ = make_schedule(torch.nn.Linear(2, 2), cfg, total_steps=10)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.95) and group["weight_decay"] == 0.01
    job = TrainJob(base_model=tmp_path, data=None, template=None, out_dir=tmp_path)
    args = hf_args(job, cfg)
    assert (args["adam_beta1"], args["adam_beta2"], args["weight_decay"]) == (0.9, 0.95, 0.01)
    assert (TrainConfig().adam_beta1, TrainConfig().adam_beta2) == (0.9, 0.999)  # torch's defaults


def test_warmup_ratio_one_is_every_step():
    from transformers import TrainingArguments

    for ratio, steps in ((1.0, 1000), (0.1, 100), (0.0, 0)):
        value = TrainConfig(warmup_ratio=ratio).hf_warmup_steps()
        assert TrainingArguments(output_dir="x", warmup_steps=value).get_warmup_steps(1000) == steps, ratio
