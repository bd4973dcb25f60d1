"""The DFT-family plugins (pk, profit, iwsft, psft, anneal) on the toy model: each trains through the shared
SFT-family loop, logs cross-entropy and the DFT loss beside its own, and reduces to its parent where the
formula says it must (checked against RFT trained on the same data from the same base)."""

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from pydantic import ValidationError

from workbench.registry import get_trainer
from workbench.template import TemplateConfig
from workbench.toy_model import save_random_toy_model
from workbench.trainers.base import TrainJob

PROBLEMS = [(12, 7), (3, 5), (20, 14), (9, 9), (41, 2), (6, 30)]
DATA = pl.DataFrame({
    "problem": [f"{a}+{b}" for a, b in PROBLEMS],
    "response": [f"{a}+{b}={a + b} \\boxed{{{a + b}}}" for a, b in PROBLEMS],
})
FAST = {"learning_rate": 3e-3, "batch_size": 6, "per_device_batch_size": 3, "max_steps": 6,
        "lr_scheduler": "constant", "warmup_ratio": 0.0, "max_length": 256}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    return save_random_toy_model(tmp_path_factory.mktemp("base"))


def run(name, base_model, out, report_to=(), **overrides):
    plugin = get_trainer(name)
    cfg = plugin.Config(**{**FAST, **overrides})
    job = TrainJob(base_model=base_model, data=DATA, template=TemplateConfig(), out_dir=out, seed=0,
                   report_to=report_to)
    result = plugin().train(job, cfg)
    rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()]
    return result, rows


def tb_tags(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return acc.Tags()["scalars"]


def weights(result):
    from safetensors.torch import load_file

    return load_file(str(result.model_dir / "model.safetensors"))


def same_weights(a, b, atol=1e-6):
    return all(torch.allclose(a[k], b[k], atol=atol) for k in a)


@pytest.fixture(scope="module")
def rft(base_model, tmp_path_factory):
    return run("rft", base_model, tmp_path_factory.mktemp("rft"))


@pytest.mark.parametrize("name,opts", [("pk", {"k": 0.5}), ("anneal", {"anneal_shape": "cosine"}),
                                       ("iwsft", {}), ("psft", {"old_policy_every": 3})])
def test_variant_trains_and_logs_ce_and_dft_loss(name, opts, base_model, tmp_path):
    result, rows = run(name, base_model, tmp_path / name, report_to=("tensorboard",), **opts)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert {"train/ce", "train/dft_loss", "train/loss"} <= set(tb_tags(tmp_path / name / "tensorboard"))
    assert {"loss", "ce", "dft_loss", "mean_p", "kept"} <= rows[0].keys()
    assert rows[-1]["ce"] < 0.9 * rows[0]["ce"], (rows[0], rows[-1])
    assert rows[0]["dft_loss"] < rows[0]["ce"]  # -p log p < -log p for p < 1: DFT's loss is the smaller one
    assert result.extra["examples"] == len(PROBLEMS)


def test_iwsft_starts_as_sft_and_psft_with_a_fresh_old_policy_is_sft(base_model, tmp_path, rft):
    rft_result, rft_rows = rft
    _, iw_rows = run("iwsft", base_model, tmp_path / "iw")
    assert iw_rows[0]["loss"] == pytest.approx(rft_rows[0]["loss"], rel=1e-6)  # w = 1 at the base model
    assert iw_rows[-1]["loss"] != pytest.approx(rft_rows[-1]["loss"], rel=1e-4)  # then the weights move
    psft, _ = run("psft", base_model, tmp_path / "ps1", old_policy_every=1)  # ratio 1 at every step
    assert same_weights(weights(psft), weights(rft_result))
    psft3, _ = run("psft", base_model, tmp_path / "ps3", old_policy_every=3, clip_high=0.0, clip_low=0.0)
    assert not same_weights(weights(psft3), weights(rft_result))


def test_profit_cutoff_zero_is_rft_and_cutoff_one_freezes_the_model(base_model, tmp_path, rft):
    all_kept, rows = run("profit", base_model, tmp_path / "p0", tau=0.0)
    assert same_weights(weights(all_kept), weights(rft[0]))
    assert all(r["kept"] == 1.0 for r in rows)
    none_kept, rows = run("profit", base_model, tmp_path / "p1", tau=1.0)
    from safetensors.torch import load_file

    base = load_file(str(base_model / "model.safetensors"))
    assert same_weights(weights(none_kept), base, atol=0.0)
    assert all(r["kept"] == 0.0 and r["loss"] == 0.0 for r in rows)


def test_variant_configs_validate():
    assert get_trainer("psft").Config().old_policy_every == 8
    assert get_trainer("profit").Config().tau == 0.1
    with pytest.raises(ValidationError, match="anneal_start"):
        get_trainer("anneal").Config(anneal_start=0.8, anneal_end=0.5)
    with pytest.raises(ValidationError):
        get_trainer("iwsft").Config(iw_level="batch")
    assert get_trainer("pk").Config().data == "positives"
