"""benchmarks/gpu_check.py and its paths (benchmarks/gpu_paths.py) on CPU: the no-GPU path, the random
SmolLM2-architecture model, the checks that also run on CPU (tiled LM head against full logits through TRL's
torch fallback; FSDP2 over gloo), and the driver's parsing of its children's output."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)  # puts the repository root on sys.path
from benchmarks import gpu_paths


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return gpu_paths.build_random_model(tmp_path_factory.mktemp("smollm2-random") / "model", layers=1)


def test_without_gpu_it_imports_everything_says_so_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, str(SCRIPT)], check=False, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("no GPU")
    assert out.stdout.strip().endswith("imports ok")


def test_random_model_has_smollm2_architecture_and_tokenizer(model_dir):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    assert config.architectures == ["LlamaForCausalLM"]
    assert (config.vocab_size, config.hidden_size, config.intermediate_size) == (49152, 576, 1536)
    assert (config.num_attention_heads, config.num_key_value_heads, config.num_hidden_layers) == (9, 3, 1)
    assert config.tie_word_embeddings
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert len(tokenizer) == config.vocab_size
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer("What is 2 + 3?", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "What is 2 + 3?"


def test_assets_are_small_and_documented():
    assets = ROOT / "benchmarks" / "gpu_assets"
    assert sum(f.stat().st_size for f in assets.iterdir()) < 1_000_000
    assert "Apache-2.0" in (assets / "PROVENANCE.md").read_text()


@pytest.mark.parametrize("kind", ["ce", "dft"])
def test_tiled_head_matches_full_logits(model_dir, kind):
    r = gpu_paths.tiled_vs_full(model_dir, kind, torch.device("cpu"), batch=2, seq=32)
    assert max(r["tiled"]) <= gpu_paths.TOLERANCE  # TRL's torch fallback here, its Triton kernels on a GPU
    assert max(r["full"]) < 1e-2  # float32 full logits: close, but not always to 1e-4 (see tiled_vs_full)
    assert r["loss"] > 0


def test_fsdp2_step_over_gloo_equals_the_unsharded_step(model_dir):
    r = gpu_paths.fsdp_step(model_dir, torch.device("cpu"), batch=2, seq=32)
    assert r["backend"] == "gloo"
    (p0, p1), (s0, s1) = r["plain"], r["sharded"]
    assert s0 == pytest.approx(p0, rel=1e-5) and s1 == pytest.approx(p1, rel=1e-5)
    assert s1 != s0  # the step moved the weights
    assert not torch.distributed.is_initialized()


def test_tiny_data_has_the_columns_the_trainers_check():
    from workbench.trainers.common import require_columns

    require_columns(gpu_paths.tiny_data("positives"), ["problem", "response"], "positives")
    require_columns(gpu_paths.tiny_data("pairs"), ["problem", "chosen", "rejected"], "pairs")
    require_columns(gpu_paths.tiny_data("prompts"), ["problem", "answer"], "prompts")


def test_parse_results_gives_each_path_a_line():
    out = "noise\nRESULT dpo ok, 1 step\nRESULT grpo skipped: vllm not importable here\n"
    err = "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA error: out of memory\nmore\n"
    lines = gpu_check.parse_results(out, err, 1, ["dpo", "grpo", "ppo"])
    assert lines == {"dpo": "ok, 1 step", "grpo": "skipped: vllm not importable here",
                     "ppo": "RuntimeError: CUDA error: out of memory"}
    assert gpu_check.parse_results("", "", -9, ["ppo"], timed_out_s=150)["ppo"].startswith("TimeoutError")
    assert gpu_check.parse_results("", "", -11, ["ppo"]) == {"ppo": "exited with code -11 and no result"}


def test_figures_divide_the_right_variants_and_leave_failed_ones_out():
    results = {"sft-fused": {"step_s": 0.2, "peak_mib": 1000.0}, "dft-fused": {"step_s": 0.21, "peak_mib": 1010.0},
               "trl-dft": {"step_s": 0.25, "peak_mib": 2020.0}}
    args = gpu_check.argparse.Namespace(seq=2048, batch=4, layers=30)
    fig = gpu_check.figures(results, args, "H100")
    assert fig["dft_sft_step_time_ratio"] == 1.05 and fig["dft_sft_peak_memory_ratio"] == 1.01
    assert fig["ours_over_trl_dft_peak_memory"] == 0.5 and fig["goal_met"] is True
    assert fig["full_logits_dft_over_trl_dft_peak_memory"] is None  # dft-logits did not run
    json.dumps(fig)


def test_an_unknown_path_is_refused_before_any_work():
    with pytest.raises(SystemExit, match="unknown path.*fsdp3.*known: tiled-head-sft"):
        gpu_check.main(["--only", "dpo,fsdp3"])
