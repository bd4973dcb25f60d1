"""DPO (TRL DPOTrainer) on toy pairs: a few steps from the toy base model, loss falls, margins rise."""

import json

import polars as pl
import pytest

from workbench.registry import get_trainer
from workbench.template import TemplateConfig
from workbench.toy_model import save_random_toy_model
from workbench.trainers.base import TrainJob

PROBLEMS = [(12, 7), (3, 5), (20, 14), (9, 9), (41, 2), (6, 30), (15, 15), (8, 1)]
PAIRS = pl.DataFrame({
    "prompt_id": [f"p{i}" for i in range(len(PROBLEMS))],
    "problem": [f"{a}+{b}" for a, b in PROBLEMS],
    "chosen": [f"{a}+{b}={a + b} \\boxed{{{a + b}}}" for a, b in PROBLEMS],
    "rejected": [f"{a}+{b}={a + b + 1} \\boxed{{{a + b + 1}}}" for a, b in PROBLEMS],
})


def test_dpo_trains_loss_falls_margin_rises(tmp_path):
    from transformers import AutoModelForCausalLM

    base = save_random_toy_model(tmp_path / "base")
    plugin = get_trainer("dpo")
    cfg = plugin.Config(learning_rate=2e-3, batch_size=8, per_device_batch_size=4, max_steps=8,
                        lr_scheduler="constant", warmup_ratio=0.0, max_length=256)
    job = TrainJob(base_model=base, data=PAIRS, template=TemplateConfig(), out_dir=tmp_path / "dpo", seed=0)
    result = plugin().train(job, cfg)
    rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert {"loss", "learning_rate", "rewards/chosen", "rewards/rejected", "rewards/margins"} <= rows[0].keys()
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1: -log sigmoid(0)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.05
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"] + 0.1
    assert result.steps == 8 and result.train_tokens > 0
    assert not (job.out_dir / "trainer").exists() or not any((job.out_dir / "trainer").glob("checkpoint-*"))
    AutoModelForCausalLM.from_pretrained(job.model_dir)


def test_dpo_config_defaults():
    cfg = get_trainer("dpo").Config()
    assert (cfg.beta, cfg.loss_type, cfg.learning_rate) == (0.1, "sigmoid", 1e-6)
    with pytest.raises(Exception, match="loss_type"):
        get_trainer("dpo").Config(loss_type="nope")
