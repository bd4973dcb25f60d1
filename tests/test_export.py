"""`workbench export`: a run directory's data sets load with `datasets` and train TRL's SFTTrainer and
DPOTrainer for a step unchanged; the dataset card says where the data came from."""

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from data_gen.builders import build_pairs, build_positives, build_rl_prompts, build_stats
from data_gen.config import BuildConfig, GenerateConfig, VerifyConfig
from data_gen.export import ExportError, export_run, provenance
from workbench.rundir import RunDir
from workbench.template import TemplateConfig
from workbench.toy_model import save_random_toy_model

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _commit(rundir: RunDir, stage: str, config: dict, counts: dict, files: dict) -> None:
    tmp = rundir.begin(stage)
    for name, frame in files.items():
        if isinstance(frame, pl.DataFrame):
            frame.write_parquet(tmp / name)
        else:
            (tmp / name).write_text(json.dumps(frame))
    rundir.commit(stage, tmp, input_hash="h-" + stage, config=config, seed=0, counts=counts, wall_time_s=0.0,
                  inputs={})


def make_run(root: Path, model: Path) -> Path:
    """A finished run directory (prompts, generate, verify, build) written the way the stages write it."""
    problems = [f"{a}+{b}" for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]
    prompts = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(4)], "source": ["toy"] * 4, "problem": problems,
                            "answer": ["3", "7", "11", "15"], "solution": [None] * 4},
                           schema_overrides={"solution": pl.String})
    rows = []
    for pid, answer in zip(prompts["prompt_id"], prompts["answer"]):
        for idx, correct in enumerate([True, False]):
            value = answer if correct else str(int(answer) + 1)
            rows.append({"prompt_id": pid, "sample_idx": idx, "response": f"so \\boxed{{{value}}}", "num_tokens": 5,
                         "finish_reason": "stop", "correct": correct, "pred": value, "status": "ok"})
    verified = pl.DataFrame(rows)
    positives, pairs = build_positives(verified, prompts, BuildConfig()), build_pairs(verified, prompts, BuildConfig(), 0)
    rundir = RunDir(root)
    template = TemplateConfig(system="Be brief.").model_dump(mode="json")
    _commit(rundir, "prompts", {}, {"prompts": 4}, {"prompts.parquet": prompts})
    _commit(rundir, "generate", {"model": "toy:test", "template": template, "seed": 0,
                                 "generate": GenerateConfig(n=2).model_dump(mode="json")},
            {"samples": 8, "engine": "hf", **provenance(str(model))}, {})
    _commit(rundir, "verify", {"verify": VerifyConfig().model_dump(mode="json")},
            {"verifier": "math", "verifier_version": "math-verify 0.0-test"}, {"verified.parquet": verified})
    _commit(rundir, "build", {}, {}, {"positives.parquet": positives, "pairs.parquet": pairs,
                                      "rl_prompts.parquet": build_rl_prompts(prompts),
                                      "stats.json": build_stats(verified, positives, pairs)})
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from transformers import AutoTokenizer

    tmp = tmp_path_factory.mktemp("export")
    model = save_random_toy_model(tmp / "model")
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(model)
    run = make_run(tmp / "run", model)
    from workbench.cli import app

    result = CliRunner().invoke(app, ["export", str(run), "--to", str(tmp / "out")])
    assert result.exit_code == 0, result.output
    return tmp / "out", model


def test_every_config_loads_with_datasets(exported):
    from datasets import load_dataset

    out, _ = exported
    expected = {"sft": ["prompt_id", "prompt", "completion"], "sft_conversational": ["prompt_id", "messages"],
                "preference": ["prompt_id", "prompt", "chosen", "rejected"],
                "preference_conversational": ["prompt_id", "prompt", "chosen", "rejected"],
                "rl": ["prompt_id", "prompt", "answer"], "rl_conversational": ["prompt_id", "prompt", "answer"]}
    for config, columns in expected.items():
        ds = load_dataset(str(out), config, split="train")
        assert ds.column_names == columns and len(ds) == 4, config
    sft = load_dataset(str(out), "sft", split="train")[0]
    assert sft["prompt"] == "<|system|>Be brief.\n<|user|>1+2\n" + TemplateConfig().instruction + "\n<|assistant|>"
    assert sft["completion"] == "so \\boxed{3}"
    msgs = load_dataset(str(out), "sft_conversational", split="train")[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]


def test_dataset_card(exported):
    out, model = exported
    card = (out / "README.md").read_text()
    assert card.startswith("---\nconfigs:\n- config_name: sft\n")
    for needle in [str(model), provenance(str(model))["base_model_fingerprint"], "n=2, temperature=1.0",
                   "verifier: `math` (math-verify 0.0-test)", "| preference | 4 |", "pass@1: 50.00%",
                   "pass@2: 100.00%", "exported with: `workbench export"]:
        assert needle in card, needle


def test_trl_trains_one_step_on_each_export(exported, tmp_path):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    out, model_dir = exported
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    common = {"max_steps": 1, "per_device_train_batch_size": 2, "report_to": [], "save_strategy": "no",
              "use_cpu": True, "logging_steps": 1, "learning_rate": 1e-3}
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), processing_class=tokenizer,
                         train_dataset=load_dataset(str(out), "sft", split="train"),
                         args=SFTConfig(output_dir=str(tmp_path / "sft"), max_length=128, **common))
    assert trainer.train().global_step == 1
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), processing_class=tokenizer,
                         train_dataset=load_dataset(str(out), "preference", split="train"),
                         args=DPOConfig(output_dir=str(tmp_path / "dpo"), max_length=128, **common))
    assert trainer.train().global_step == 1


def test_export_refuses_unfinished_run(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ExportError, match="build/manifest.json: not found"):
        export_run(tmp_path / "run", tmp_path / "out")
