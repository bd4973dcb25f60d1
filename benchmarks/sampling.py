"""Benchmark: the generate stage's sampler against a bare `vllm.LLM.generate` and HF `generate`.

Same model, prompts and settings for all three. Throughput = generated tokens / wall seconds of the
generation call (engine start and a warm-up call excluded; the stage's start-inclusive number is reported as well).

    .venv/bin/python benchmarks/sampling.py --prompts 64 --n 4 --max-tokens 128 [--model PATH]

Last line: {"stage_over_bare_vllm": ..., "vllm_over_hf": ..., ...}. Target: stage >= 0.9x bare vLLM.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time


def default_model() -> str:
    try:
        from workbench.models import resolve_model

        return str(resolve_model("toy:arith"))
    except Exception:  # noqa: BLE001 - the pretrained toy model is not available yet: any loadable toy model will do
        from workbench.toy_model import save_random_toy_model

        return str(save_random_toy_model(tempfile.mkdtemp(prefix="bench-toy-")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="HF folder (default: toy:arith, else a random toy model)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--kv-cache-gb", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import ray
    import torch

    from data_gen.config import GenerateConfig, PromptsConfig
    from data_gen.engines import sample, start_engines
    from data_gen.prompts import load_prompts
    from data_gen.samplers import build_vllm, hf_generate, render_prompts, vllm_params
    from workbench.template import TemplateConfig

    model = args.model or default_model()
    problems = load_prompts(PromptsConfig(source="toy", max_prompts=args.prompts), args.seed)[0]["problem"].to_list()
    prompts = render_prompts(model, problems, TemplateConfig())
    cfg = GenerateConfig(n=args.n, max_tokens=args.max_tokens, kv_cache_gb=args.kv_cache_gb, temperature=1.0,
                         num_actors=1, num_cpus_per_actor=1, hf_batch_size=args.prompts)
    result = {"model": model, "prompts": args.prompts, "n": args.n, "max_tokens": args.max_tokens}

    # 1. bare vLLM in this process
    llm = build_vllm(model, cfg, args.seed)
    llm.generate(prompts[:4], vllm_params(cfg, args.n), use_tqdm=False)  # warm-up, as the stage's 2nd call
    start = time.perf_counter()
    outs = llm.generate(prompts, vllm_params(cfg, args.n), use_tqdm=False)
    wall = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    result["bare_vllm_tok_s"] = tokens / wall
    del llm, outs
    gc.collect()

    # 2. the stage's sampler: vLLM engine in a Ray actor
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    engines = start_engines(model, cfg.model_copy(update={"engine": "vllm"}), args.seed)
    res = sample(model, prompts, cfg.model_copy(update={"engine": "vllm"}), args.n, args.seed, engines=engines)
    total = time.perf_counter() - start
    start = time.perf_counter()
    res = sample(model, prompts, cfg.model_copy(update={"engine": "vllm"}), args.n, args.seed, engines=engines)
    wall = time.perf_counter() - start
    tokens = sum(c.num_tokens for r in res for c in r)
    result["stage_vllm_tok_s"] = tokens / wall
    result["stage_vllm_tok_s_incl_start"] = tokens / total
    for a in engines:
        ray.kill(a)
    ray.shutdown()

    # 3. HF generate in this process (one batch of all prompts)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(model)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    res = hf_generate(hf, tok, prompts, args.n, 1.0, 1.0, args.max_tokens)
    wall = time.perf_counter() - start
    result["hf_tok_s"] = sum(c.num_tokens for r in res for c in r) / wall

    result["stage_over_bare_vllm"] = result["stage_vllm_tok_s"] / result["bare_vllm_tok_s"]
    result["vllm_over_hf"] = result["bare_vllm_tok_s"] / result["hf_tok_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
