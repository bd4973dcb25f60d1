"""What a stage will need before it starts: memory of a train entry (for Ray's `memory` resource) and disk.

Memory (`train_memory_gb`, used when a train entry leaves `memory_gb` unset), in GiB: for a CPU entry the
memory plan's per-process estimate (`workbench/memory_plan.py`: weights, gradients and AdamW states sharded
over FSDP2 workers, frozen reference / old models, activations with or without gradient checkpointing at the
entry's micro-batch x max_length, logits or TRL's tiled head, PPO's rollout engine; calibrated on SmolLM2-135M,
see that module); for a GPU entry the host memory its process needs (the runtime and the float32 weights it
loads before moving them to the GPU), the GPU side being the plan's. With N workers, the FSDP2 trainers (all
but DPO and GRPO, which run DDP) hold 1/N of the model states per worker.

Memory of an engine actor (`engine_memory_gb`, used when the generate / evaluate section leaves `memory_gb`
unset), in GiB: the process (python, torch, transformers or vLLM) + the weights in the engine's dtype +

    vLLM on CPU: kv_cache_gb (the fixed KV cache) + a second process, the engine core (unless in-process)
    HF generate: the KV cache of one batch, hf_batch_size * n sequences of max_tokens + 256 prompt tokens
                 (2 * layers * kv_heads * head_dim values a token) + its logits (4 B * vocab, twice)
    on a GPU:    only the process and the weights (loaded through host memory); the cache lives on the GPU.

Disk (`disk_needed`): generate's samples (every prompt x n x max_tokens at ~4 bytes a token, twice: the
shards and samples.parquet exist together for a moment) and each train entry's model folder (the base
model's weight files, in fp32 when it trains in fp32) plus, with `save_steps`, one resumable checkpoint
(weights and AdamW moments: three times the fp32 weights).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

GIB = 2**30
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def model_shape(base_model: str) -> dict:
    """params, vocab, hidden, layers, ffn, weight_bytes, kv_dim (kv heads x head dim) of a local model
    folder (zeros where unknown)."""
    folder = Path(base_model)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    cfg = {**cfg.get("text_config", {}), **cfg}
    weight_bytes = sum(p.stat().st_size for p in folder.glob("*") if p.suffix in _WEIGHT_SUFFIXES) \
        if folder.is_dir() else 0
    dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    heads = int(cfg.get("num_attention_heads", 0) or 0)
    head_dim = int(cfg.get("head_dim") or (int(cfg.get("hidden_size", 0)) // heads if heads else 0))
    return {"params": weight_bytes // _DTYPE_BYTES.get(dtype, 4), "vocab": int(cfg.get("vocab_size", 0)),
            "hidden": int(cfg.get("hidden_size", 0)), "layers": int(cfg.get("num_hidden_layers", 0)),
            "ffn": int(cfg.get("intermediate_size", 0)), "weight_bytes": weight_bytes,
            "kv_dim": int(cfg.get("num_key_value_heads") or heads) * head_dim}


# Resident size of an engine actor's process before weights and cache, and of vLLM's engine-core process.
# Peak RSS of the actor's process tree (benchmarks/engine_memory.py, 2026-11-28, 2-core CPU), estimate in
# brackets: HF toy:arith, 64 prompts x n 4 x 96 tokens: 0.58 GiB (0.79); HF SmolLM2-135M, hf_batch_size 16
# x n 4 x 128 tokens: 1.19 (1.55); vLLM SmolLM2, kv_cache_gb 1: in-process 2.37 (2.75), multiprocess 3.62
# (4.25).
HF_PROCESS_GB, VLLM_PROCESS_GB, VLLM_CORE_GB = 0.75, 1.5, 1.5
PROMPT_TOKENS = 256  # a rendered prompt's length, for the HF engine's KV cache (the toy's and GSM8K's: < 200)


def engine_memory_gb(cfg, model: str, engine: str, n: int = 1) -> float:
    """Estimated peak host memory (GiB) of one engine actor with sampler settings `cfg` (data_gen.config.
    SamplerConfig) drawing `n` responses a prompt; see the module docstring."""
    shape = model_shape(model)
    weights = shape["params"] * _DTYPE_BYTES.get(cfg.dtype, 0) or shape["weight_bytes"]
    on_gpu = cfg.num_gpus_per_actor > 0
    if engine == "vllm":
        total = VLLM_PROCESS_GB * GIB + weights
        if not on_gpu:
            total += cfg.kv_cache_gb * GIB + (0 if cfg.vllm_in_process else VLLM_CORE_GB * GIB)
        return round(total / GIB, 2)
    total = HF_PROCESS_GB * GIB + weights
    if not on_gpu:
        value_bytes = _DTYPE_BYTES.get(cfg.dtype, 4)
        sequences = cfg.hf_batch_size * n
        per_token = 2 * shape["layers"] * shape["kv_dim"] * value_bytes  # keys and values
        kv = per_token * sequences * (cfg.max_tokens + PROMPT_TOKENS)
        total += kv + 2 * 4 * shape["vocab"] * sequences
    return round(total / GIB, 2)


def train_memory_gb(entry, base_model: str) -> float:
    """Estimated peak host memory (GiB) of one worker of a train entry; see the module docstring."""
    from workbench.memory_plan import CPU_RUNTIME_GB, model_shape, train_plan
    from workbench.memory_plan import _trains_with as models_of
    from workbench.trainers.launch import worker_resources

    try:
        shape = model_shape(str(base_model), str(base_model))
    except ValueError:  # a hub model not downloaded yet: the runtime alone
        return CPU_RUNTIME_GB
    if worker_resources(entry)[1] > 0:
        trainable, frozen = models_of(entry)
        return round(CPU_RUNTIME_GB + 4 * shape["params"] * (trainable + len(frozen)) / GIB, 2)
    return round(train_plan(entry, 0, shape, on_gpu=False).total / GIB, 2)


def samples_bytes(n_prompts: int, n: int, max_tokens: int) -> int:
    return n_prompts * n * max_tokens * 4 * 2


def train_bytes(entry, base_model: str) -> int:
    shape = model_shape(base_model)
    fp32 = shape["params"] * 4
    return max(shape["weight_bytes"], fp32) + (3 * fp32 if getattr(entry, "save_steps", 0) else 0)


def disk_needed(stages, recipe, base_model: str, n_prompts: int | None) -> list[tuple[str, int]]:
    """(stage name, bytes it will write) for the generate and train stages among `stages`."""
    needs = []
    for stage in stages:
        if stage.kind == "generate":
            prompts = n_prompts or recipe.prompts.max_prompts or 0
            g = recipe.generate
            needs.append((stage.name, samples_bytes(prompts, g.n, g.max_tokens)))
        elif stage.kind == "train":
            needs.append((stage.name, train_bytes(recipe.train[stage.extra["entry_index"]], base_model)))
    return needs


def check_disk(root: Path, needs: list[tuple[str, int]]) -> None:
    """Raise one line with the numbers when the filesystem of `root` cannot hold what `needs` will write."""
    total = sum(b for _, b in needs)
    if not total:
        return
    where = Path(root).absolute()
    while not where.exists():  # the run directory may not exist yet: its filesystem is its parent's
        where = where.parent
    free = shutil.disk_usage(where).free
    if total > free:
        parts = ", ".join(f"{name} {b / GIB:.2f}" for name, b in needs)
        raise OSError(f"{root}: not enough disk: the stages to run need about {total / GIB:.2f} GiB "
                      f"({parts}), the filesystem has {free / GIB:.2f} GiB free")


def node_memory_gb() -> float:
    """The largest `memory` resource of a live Ray node (GiB): more than that can never be scheduled."""
    import ray

    return max((n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0) / GIB


def fit_memory(where: str, memory_gb: float | None, estimate, node_gb: float) -> tuple[float, str]:
    """(GiB to reserve, note): an explicit `memory_gb` as is (refused when no node has that much), else
    `estimate()` capped to 90% of the largest node, with a note saying so."""
    if memory_gb is not None:
        if node_gb and memory_gb > node_gb:
            raise ValueError(f"{where}: memory_gb {memory_gb:g} is more than any Ray node has "
                             f"({node_gb:.1f} GiB): it could never be scheduled")
        return memory_gb, ""
    gb, note = estimate(), ""
    if node_gb and gb > 0.9 * node_gb:
        note = f"estimated {gb:.1f} GiB, capped to 90% of the node's {node_gb:.1f} GiB"
        gb = round(0.9 * node_gb, 2)
    return gb, note


def with_memory(entry, base_model: str, node_gb: float):
    """The entry with `memory_gb` set (its own, else the estimate capped to fit on the largest node), and a
    note when the estimate was capped; refuses an explicit memory_gb no node has."""
    gb, note = fit_memory(f"train/{entry.name}", entry.memory_gb, lambda: train_memory_gb(entry, base_model),
                          node_gb)
    return (entry if entry.memory_gb is not None else entry.model_copy(update={"memory_gb": gb})), note


def memory_kill(exc: BaseException) -> str | None:
    """For an error of a task or actor killed by Ray's memory monitor, the numbers it gave (else None).
    A task's error is an OutOfMemoryError; an actor's is an ActorDiedError whose text carries the raylet's
    "Memory on the node (...) was X used / Y limit" (or "killed due to the node running low on memory")."""
    import re

    import ray

    cause = getattr(exc, "cause", None) or exc
    text = str(cause)
    if not (isinstance(cause, ray.exceptions.OutOfMemoryError) or (
            isinstance(exc, ray.exceptions.RayActorError)
            and re.search(r"running low on memory|Memory on the node|memory pressure", text))):
        return None
    used = re.search(r"memory used=([\d.]+\s*[GMK]i?B)", text)
    node = re.search(r"([\d.]+\s*[GMK]i?B)\s*(?:used\s*)?/\s*([\d.]+\s*[GMK]i?B)", text)
    parts = ([f"it used {used.group(1)}"] if used else []) + \
        ([f"the node had {node.group(1)} of {node.group(2)} in use"] if node else [])
    return "; ".join(parts) or text.strip().splitlines()[0]
