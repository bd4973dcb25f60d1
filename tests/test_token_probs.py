"""Figure 2: target-token probabilities of a fixed slice of the training data, per model, as a histogram."""

import numpy as np
import polars as pl
import pytest
import torch

from evaluators.token_probs import histogram, target_token_probs, write_token_probs
from workbench.template import TemplateConfig

DATA = pl.DataFrame({"problem": ["1+2", "30+4", "5+6"],
                     "response": ["1+2=3 \\boxed{3}", "30+4=34 \\boxed{34}", "5+6=11 \\boxed{11}"]})


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    from workbench.toy_model import save_random_toy_model

    return save_random_toy_model(tmp_path_factory.mktemp("base"))


def test_histogram_counts_and_fractions():
    h = histogram("m", np.array([0.0, 0.04, 0.5, 0.96, 1.0]), bins=10)
    assert h["count"].to_list() == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert h["fraction"].sum() == pytest.approx(1.0)
    assert h["bin_low"][0] == 0.0 and h["bin_high"][-1] == 1.0


def test_probabilities_are_those_of_the_response_tokens(base_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.template import render_prompt

    p = target_token_probs(base_model, DATA.head(1), TemplateConfig())
    tok = AutoTokenizer.from_pretrained(base_model)
    prompt = tok(render_prompt(tok, DATA["problem"][0], TemplateConfig()), add_special_tokens=False)["input_ids"]
    response = tok(DATA["response"][0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    model = AutoModelForCausalLM.from_pretrained(base_model)
    with torch.no_grad():
        probs = model(torch.tensor([prompt + response])).logits[0].softmax(-1)
    expected = [probs[len(prompt) - 1 + i, t].item() for i, t in enumerate(response)]
    assert p.tolist() == pytest.approx(expected, rel=1e-5)


def test_training_shifts_the_distribution_up(base_model, tmp_path):
    from workbench.registry import get_trainer
    from workbench.trainers.base import TrainJob

    plugin = get_trainer("rft")
    cfg = plugin.Config(learning_rate=1e-2, batch_size=3, per_device_batch_size=3, max_steps=8,
                        lr_scheduler="constant", warmup_ratio=0.0, max_length=256)
    result = plugin().train(TrainJob(base_model=base_model, data=DATA, template=TemplateConfig(),
                                     out_dir=tmp_path / "rft", seed=0), cfg)
    hist, summary = write_token_probs(tmp_path / "report", {"base": base_model, "rft": result.model_dir}, DATA,
                                      TemplateConfig(), rows=2, bins=10)
    assert hist["model"].unique(maintain_order=True).to_list() == ["base", "rft"]
    counts = {m: hist.filter(pl.col("model") == m)["count"].to_list() for m in ("base", "rft")}
    assert sum(counts["base"]) == sum(counts["rft"]) == summary["tokens"][0]  # the same tokens (2 rows)
    base, rft = summary.rows(named=True)
    assert rft["mean_p"] > 3 * base["mean_p"]  # training on these rows raised their tokens' probability
    assert pl.read_csv(tmp_path / "report" / "token_probs.csv").height == 20
    table = (tmp_path / "report" / "token_probs.md").read_text()
    assert "first 2 rows of `positives`" in table and "| rft |" in table
    assert (tmp_path / "report" / "token_probs.png").stat().st_size > 0
    with pytest.raises(ValueError, match="empty"):
        write_token_probs(tmp_path / "r2", {"base": base_model}, DATA.head(0), TemplateConfig(), rows=2)
