"""The memory plan: the estimated peak memory of every train entry (per GPU, or per process on CPU) and of every
engine actor, in parts, and the check that refuses what cannot fit before any work starts.

    for plan in recipe_plans(recipe, model_dir, gpu_gb=80):   # `workbench run RECIPE --dry-run` prints these
        print(plan.line())
    check_plans(plans, gpu_gb=80, cpu_gb=...)                  # raises one line per entry that cannot fit

A train entry's parts (bytes; P parameters, V vocabulary, H hidden, F MLP width, L layers, kv the key/value
width; `n` = num_workers for the FSDP2 trainers, whose states are sharded, 1 for DPO and GRPO, which run DDP):

    weights          4 P x trainable models / n (float32 master weights; PPO trains actor and critic)
                     + with n > 1 the FSDP2 all-gather of two decoder layers and the embeddings / LM head
    grads+optimizer  (4 P + 8 P x trainable models) / n: float32 gradients of one model at a time (PPO steps
                     the actor and frees its gradients before the critic's backward) and AdamW's two moments
    reference, old   4 P (/ n under FSDP2) per frozen copy: DPO's and GRPO's reference (beta > 0), PPO's
                     (kl_coef > 0), ASFT's and iw-SFT's base model (kl_weight > 0, iwsft), PSFT's old policy
    activations      tokens x L x per-layer bytes, tokens = micro-batch x max_length (DPO: chosen and rejected,
                     2 x micro-batch); per layer and token 36 H + b (2 kv + 4 F) bytes with b = 4 (float32) or
                     2 (bf16 autocast; norms and the residual stream stay float32). With gradient checkpointing
                     only each layer's input (4 H) is kept, plus one layer's full set during its recomputation.
    logits           full logits (the SFT-family loop on CPU, or with a reference / old model): tokens x V x 16 B
                     (logits, their log-softmax, two gradients), + 16 B with the ASFT KL, + 8 B for a reference's
                     or old policy's log-probabilities; TRL's tiled LM head (DPO, GRPO, the SFT loop on GPUs):
                     tiles of min(tokens, 4096) x min(V, 32768), 3 on a GPU (Triton kernels; assumed), 9 on CPU
                     (TRL's torch fallback; fitted to the DPO cases below); PPO: its chunks,
                     4 x logits_chunk_tokens x V x 4 B
    rollout          PPO's HF rollouts on CPU: the KV cache and logits of rollout_hf_batch_size x
                     samples_per_prompt sequences (taken when no activations exist, so the larger of the two counts)
    vLLM             an engine sharing the GPU: gpu_memory_utilization x the GPU (GRPO use_vllm, PPO's vllm
                     rollouts); on CPU PPO's in-process engine: bf16 weights + rollout_kv_cache_gb + its runtime
    runtime          CPU: the process (python, torch, transformers, TRL); GPU: the CUDA context and allocator slack

An engine actor: vLLM on a GPU takes gpu_memory_utilization x the GPU, which must hold the weights (/ tensor
parallel); HF generate on a GPU holds the weights, the KV cache of a batch and its logits; on CPU the actor's
host memory is `resources.engine_memory_gb`. One estimator: `resources.train_memory_gb` (Ray's `memory`
reservation) is this plan's CPU total.

Calibration, CPU only (nothing here has run on a GPU): `benchmarks/memory_plan.py`, SmolLM2-135M in float32,
max_length 384, micro-batch 4 (DPO 2 pairs; GRPO 4 completions of 128 forced tokens), two optimizer steps, each
case in a process of its own, peak resident set; commit bf4d6b5 + uncommitted changes, 2026-12-04, 2-core CPU
shared with other jobs (load 6-40; ~2-18 min a case). Estimate / measured (GiB):

    dft 5.64 / 5.25 (1.07), dft-ckpt 3.80 / 3.52 (1.08), dpo 6.70 / 6.70 (1.00), dpo-ckpt 4.86 / 4.82 (1.01),
    grpo 6.70 / 6.85 (0.98), ppo-ckpt (HF rollouts) 4.36 / 4.16 (1.05); baseline process (imports, tokenizer)
    0.50. Not measured (out of time): grpo-ckpt, ppo without checkpointing, PPO with vLLM rollouts

One run each, so no interval; the DPO pair fitted TILES_CPU (9), GRPO then checked it out of sample. On a
2-layer model of SmolLM2's shape (`benchmarks/gpu_check.py --allow-cpu --layers 2`, one step, so without
AdamW's moments) the plan read 1.36 (dft), 1.41 (dft-ckpt), 1.12 (dpo-ckpt), 1.04 (ppo-ckpt) of the measured
peak: full logits at 16 B a vocabulary-token are about twice what they hold there, so the plan errs high where
logits dominate. CALIBRATION below names what has been measured.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

GIB = 2**30
FSDP = {"sft", "rft", "dft", "pk", "profit", "iwsft", "psft", "anneal", "ppo"}  # sharded states; dpo/grpo: DDP
TILE_TOKENS, TILE_VOCAB = 4096, 32768  # TRL 1.16 kernels/chunked_logprob.py: TOKEN_CHUNK_SIZE, the vocab chunk
TILES_GPU, TILES_CPU = 3, 9  # tile-sized buffers alive at once: GPU (Triton, assumed); CPU (torch ops, fitted to DPO)
CPU_RUNTIME_GB = 0.5  # resident before any model: python, torch, transformers, TRL, a tokenizer (measured 0.50)
GPU_RUNTIME_GB = 1.5  # CUDA context, NCCL buffers and allocator slack: an assumption until a GPU measures it
VLLM_CPU_RUNTIME_GB = 1.0  # an in-process vLLM engine beyond its weights and KV cache (resources.VLLM_PROCESS_GB
#                            counts a whole process; here python and torch are the trainer's already)
CALIBRATION = "CPU, SmolLM2-135M float32: dft, dft-ckpt, dpo, dpo-ckpt, grpo, ppo-ckpt: 0.98-1.08 (docstring)"

# Shapes of hub models the recipes name, for planning on a machine that has not downloaded them
# (each model's config.json on the Hugging Face hub).
KNOWN_SHAPES = {
    "Qwen/Qwen2.5-Math-1.5B": {"params": 1_543_714_304, "vocab": 151936, "hidden": 1536, "layers": 28,
                               "ffn": 8960, "kv_dim": 256, "tied": True},
}


@dataclass
class Plan:
    """One train entry's or engine actor's estimated peak, in parts (bytes), per GPU or per process."""

    where: str  # "train[4] grpo", "generate", "evaluate"
    on_gpu: bool
    parts: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)  # part -> what it depends on, e.g. checkpointing
    fixes: dict[str, str] = field(default_factory=dict)  # part -> what to change when it does not fit

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def unit(self) -> str:
        return "per GPU" if self.on_gpu else "per process"

    def largest(self) -> str:
        return max(self.parts, key=self.parts.get)

    def line(self) -> str:
        parts = ", ".join(f"{k} {v / GIB:.1f}" + (f" ({self.notes[k]})" if k in self.notes else "")
                          for k, v in self.parts.items() if v >= 0.05 * GIB or k in self.notes)
        unknown = "GPU size unknown" in " ".join(self.notes.values())
        return f"{self.where}: ~{self.total / GIB:.1f} GiB {self.unit}{' + the vLLM share' if unknown else ''}: {parts}"

    def refusal(self, capacity_gb: float) -> str:
        big = self.largest()
        note = f" {self.notes[big]}" if big in self.notes else ""
        fix = f": {self.fixes[big]}" if big in self.fixes else ""
        return (f"{self.where}: ~{self.total / GIB:.0f} GiB {self.unit} > {capacity_gb:.0f} GiB "
                f"({big} {self.parts[big] / GIB:.0f} GiB{note}{fix})")


def model_shape(spec: str, folder: str | None = None) -> dict:
    """params, vocab, hidden, layers, ffn, kv_dim, tied of a model: its local folder's config.json and weight
    files (resources.model_shape), else the known shape of a hub id (KNOWN_SHAPES)."""
    from workbench.resources import model_shape as folder_shape

    if folder and Path(folder).is_dir():
        shape = folder_shape(folder)
        try:
            cfg = json.loads((Path(folder) / "config.json").read_text())
        except (OSError, ValueError):
            cfg = {}
        return {**shape, "tied": bool(cfg.get("tie_word_embeddings", True))}
    if spec in KNOWN_SHAPES:
        return dict(KNOWN_SHAPES[spec])
    raise ValueError(f"model {spec!r}: no local folder and no known shape to plan memory with (download it, or "
                     "plan with --force)")


def plan_model(spec: str) -> str | None:
    """The local folder of a recipe's model if it exists without building or downloading anything, else None."""
    from workbench.models import TOY_MODELS, cache_dir, shipped_toy_model

    if spec.startswith("toy:") and spec[4:] in TOY_MODELS:
        shipped = shipped_toy_model(spec[4:])
        return str(shipped) if shipped else None
    if spec == "smollm2-135m":
        folder = cache_dir() / "models" / "smollm2-135m"
        return str(folder) if (folder / "config.json").is_file() else None
    if Path(spec).expanduser().is_dir():
        return str(Path(spec).expanduser())
    try:  # a hub id already in the local Hugging Face cache
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(spec, "config.json")
        return str(Path(found).parent) if isinstance(found, str) else None
    except Exception:  # noqa: BLE001 - not a hub id, or no cache: plan from KNOWN_SHAPES
        return None


def layer_bytes(shape: dict, bf16: bool) -> float:
    """Activation bytes one decoder layer keeps for backward, per token (see the module docstring)."""
    b = 2 if bf16 else 4
    return 36 * shape["hidden"] + b * (2 * shape["kv_dim"] + 4 * shape["ffn"])


def activations(shape: dict, tokens: float, bf16: bool, checkpointing: bool) -> float:
    per_layer = layer_bytes(shape, bf16) * tokens
    if checkpointing:
        return tokens * shape["layers"] * 4 * shape["hidden"] + per_layer
    return shape["layers"] * per_layer


def _trains_with(entry) -> tuple[int, list[str]]:
    """(trainable models, names of the frozen copies) of a train entry."""
    cfg, algo = entry.config, entry.algorithm
    if algo == "ppo":
        return 2, (["reference"] if cfg.kl_coef > 0 else [])
    if algo == "dpo":
        return 1, ["reference"]
    if algo == "grpo":
        return 1, (["reference"] if cfg.beta > 0 else [])
    frozen = ["reference"] if getattr(cfg, "kl_weight", 0) > 0 or algo == "iwsft" else []
    return 1, frozen + (["old policy"] if algo == "psft" else [])


def train_plan(entry, index: int, shape: dict, on_gpu: bool, gpu_gb: float | None = None) -> Plan:
    """The estimated peak of one worker of train entry `index` (see the module docstring)."""
    cfg, algo, world = entry.config, entry.algorithm, entry.num_workers
    P, V, H = shape["params"], shape["vocab"], shape["hidden"]
    n = world if algo in FSDP else 1
    trainable, frozen = _trains_with(entry)
    bf16 = bool(cfg.bf16) and on_gpu  # bf16 autocast on CPU is rare; its calibration is float32
    ckpt = bool(cfg.gradient_checkpointing)
    micro = min(cfg.per_device_batch_size, max(1, cfg.batch_size // world))
    seqs = 2 * micro if algo == "dpo" else micro
    tokens = seqs * cfg.max_length
    parts, notes, fixes = {}, {}, {}
    parts["weights"] = 4 * P * trainable / n
    if n > 1:  # FSDP2 gathers a layer (and prefetches the next) and keeps the root's embeddings / head gathered
        parts["weights"] += 4 * (2 * (P - V * H) / shape["layers"] + V * H * (1 if shape.get("tied") else 2))
    parts["grads+optimizer"] = (4 * P + 8 * P * trainable) / n
    fixes["weights"] = fixes["grads+optimizer"] = (
        "shard over more GPUs (num_workers)" if algo in FSDP else f"{algo} runs DDP: every GPU holds all states")
    for name in frozen:
        parts[name] = 4 * P / n
        fixes[name] = {"dpo": "DPO needs its reference", "grpo": "beta: 0 drops it", "ppo": "kl_coef: 0 drops it",
                       }.get(algo, "kl_weight: 0 drops it" if name == "reference" else "a smaller model")
    act = activations(shape, tokens, bf16, ckpt)
    other = activations(shape, tokens, bf16, not ckpt)
    parts["activations"] = act
    notes["activations"] = (f"{other / GIB:.1f} without gradient checkpointing" if ckpt
                            else f"without gradient checkpointing; {other / GIB:.1f} with it")
    fixes["activations"] = ("lower per_device_batch_size or max_length" if ckpt
                            else "set gradient_checkpointing: true")
    b = 2 if bf16 else 4
    if algo == "ppo":
        parts["logits"] = 4 * cfg.logits_chunk_tokens * V * 4
        fixes["logits"] = "lower logits_chunk_tokens"
    elif algo in ("dpo", "grpo") or (on_gpu and not frozen and getattr(cfg, "fused_lm_head", None) is not False):
        parts["tiled head"] = (TILES_GPU if on_gpu else TILES_CPU) * min(tokens, TILE_TOKENS) * min(V, TILE_VOCAB) * b
    else:
        per_token = 16 + (16 if getattr(cfg, "kl_weight", 0) > 0 else 0) + (8 if frozen else 0)
        parts["logits"] = tokens * V * per_token
        fixes["logits"] = "lower per_device_batch_size or max_length" + ("" if frozen else ", or fused_lm_head: true")
    if algo == "ppo" and not on_gpu and _ppo_engine(cfg) == "hf":  # rollouts: no activations alive then
        seqs_r = cfg.rollout_hf_batch_size * cfg.samples_per_prompt
        kv = 2 * shape["layers"] * shape["kv_dim"] * 4 * seqs_r * cfg.max_length + 2 * 4 * V * seqs_r
        if kv > parts["activations"] + parts["logits"]:
            parts["rollout"] = kv - parts["activations"] - parts["logits"]
            notes["rollout"] = "HF generate's KV cache beyond the update's activations"
    share = _vllm_share(entry)
    if share:
        if on_gpu:
            parts["vLLM"] = share * (gpu_gb or 0) * GIB
            notes["vLLM"] = f"{share:g} of the GPU" + ("" if gpu_gb else ", GPU size unknown")
            fixes["vLLM"] = "lower its gpu_memory_utilization"
        else:
            parts["vLLM"] = 2 * P + cfg.rollout_kv_cache_gb * GIB + VLLM_CPU_RUNTIME_GB * GIB
    parts["runtime"] = (GPU_RUNTIME_GB if on_gpu else CPU_RUNTIME_GB) * GIB
    return Plan(f"train[{index}] {entry.name}", on_gpu, parts, notes, fixes)


def _engine(choice: str) -> str:
    """`auto` as the trainers and samplers resolve it (vllm where it is installed), without importing vLLM."""
    from importlib.util import find_spec

    return choice if choice != "auto" else ("vllm" if find_spec("vllm") else "hf")


def _ppo_engine(cfg) -> str:
    return _engine(cfg.rollout_engine)


def _vllm_share(entry) -> float:
    """The GPU share of a vLLM engine living in the entry's training process (0 if none)."""
    cfg = entry.config
    if entry.algorithm == "grpo" and cfg.use_vllm:
        return cfg.vllm_gpu_memory_utilization
    if entry.algorithm == "ppo" and _ppo_engine(cfg) == "vllm":
        return cfg.rollout_gpu_memory_utilization
    return 0.0


def engine_plan(where: str, cfg, shape: dict, engine: str, n: int, folder: str | None,
                gpu_gb: float | None) -> Plan:
    """One engine actor's estimate: on a GPU its share (vLLM) or weights + KV cache + logits (HF); on CPU its
    host memory (resources.engine_memory_gb)."""
    from workbench.resources import _DTYPE_BYTES, engine_memory_gb

    weights = shape["params"] * _DTYPE_BYTES.get(cfg.dtype, 2)
    if cfg.num_gpus_per_actor <= 0:
        total = engine_memory_gb(cfg, folder, engine, n) * GIB if folder else weights + 2 * GIB
        return Plan(where, False, {"engine": total})
    if engine == "vllm":
        tp = cfg.tensor_parallel_size
        parts = {"vLLM": cfg.gpu_memory_utilization * (gpu_gb or 0) * GIB}
        notes = {"vLLM": f"{cfg.gpu_memory_utilization:g} of the GPU" + ("" if gpu_gb else ", GPU size unknown")
                 + f", weights {weights / tp / GIB:.1f} inside"}
        return Plan(where, True, parts, notes, {"vLLM": "lower gpu_memory_utilization"})
    seqs = cfg.hf_batch_size * n
    kv = 2 * shape["layers"] * shape["kv_dim"] * _DTYPE_BYTES.get(cfg.dtype, 2) * seqs * (cfg.max_tokens + 256)
    parts = {"weights": weights, "KV cache": kv, "logits": 2 * 4 * shape["vocab"] * seqs,
             "runtime": GPU_RUNTIME_GB * GIB}
    return Plan(where, True, parts, {}, {"KV cache": "lower hf_batch_size or max_tokens"})


def recipe_plans(recipe, folder: str | None, gpu_gb: float | None, stages=None) -> list[Plan]:
    """Plans of the recipe's engine actors and train entries (those of `stages` when given: names such as
    "generate", "eval/dft", "train/grpo"), on GPUs where they ask for them."""
    shape = model_shape(recipe.model, folder)
    names = None if stages is None else {s.name.split("@")[0] for s in stages}
    plans = []
    for where, cfg, n in (("generate", recipe.generate, recipe.generate.n),
                          ("evaluate", recipe.evaluate, recipe.evaluate.k)):
        wanted = names is None or (where in names if where == "generate" else any(
            x.startswith("eval/") for x in names))
        if wanted and (where == "evaluate" or _samples(recipe)):
            plans.append(engine_plan(where, cfg, shape, _engine(cfg.engine), n, folder, gpu_gb))
    for i, entry in enumerate(recipe.train):
        if names is None or f"train/{entry.name}" in names:
            from workbench.trainers.launch import worker_resources

            plans.append(train_plan(entry, i, shape, worker_resources(entry)[1] > 0, gpu_gb))
    return plans


def _samples(recipe) -> bool:
    from workbench.pipeline import needs_samples

    return needs_samples(recipe)


def machine_memory_gb() -> float:
    """This machine's physical memory (GiB)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


def gpu_memory_gb(recipe) -> float | None:
    """The GPU size to plan with: `ray.gpu_memory_gb`, else this machine's first GPU, else a GPU of the joined
    Ray cluster (a tiny task asks it), else None."""
    if getattr(recipe.ray, "gpu_memory_gb", None):
        return float(recipe.ray.gpu_memory_gb)
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / GIB
    import ray

    if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0:
        try:
            return ray.get(ray.remote(num_gpus=0.01, num_cpus=0)(_probe_gpu).remote(), timeout=120)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            print(f"memory plan: could not read a GPU's size from the cluster ({exc}); set ray.gpu_memory_gb")
    return None


def _probe_gpu() -> float:
    import torch

    return torch.cuda.get_device_properties(0).total_memory / GIB


def check_plans(plans: list[Plan], gpu_gb: float | None, cpu_gb: float) -> None:
    """Raise one line per plan that cannot fit (its GPU, or this machine's memory for a CPU process)."""
    refused = [p.refusal(gpu_gb if p.on_gpu else cpu_gb) for p in plans
               if (gpu_gb if p.on_gpu else cpu_gb) and p.total > (gpu_gb if p.on_gpu else cpu_gb) * GIB]
    if refused:
        raise MemoryPlanError("; ".join(refused) + " (--force runs anyway)")


class MemoryPlanError(ValueError):
    """An entry the memory plan refuses, one line."""


def plan_lines(recipe, folder: str | None = None, gpu_gb: float | None = None) -> list[str]:
    """What `--dry-run` prints: the GPU size planned with, one line per engine actor and train entry, and a
    refusal line for each that cannot fit."""
    folder = folder or plan_model(recipe.model)
    try:
        plans = recipe_plans(recipe, folder, gpu_gb)
    except ValueError as exc:
        return [f"memory plan: {exc}"]
    cpu_gb = machine_memory_gb()
    head = f"memory plan (GPU {gpu_gb:.0f} GiB" if gpu_gb else "memory plan (GPU size unknown: set ray.gpu_memory_gb"
    lines = [f"{head}; this machine {cpu_gb:.0f} GiB):"] + [f"  {p.line()}" for p in plans]
    for p in plans:
        cap = gpu_gb if p.on_gpu else cpu_gb
        if cap and p.total > cap * GIB:
            lines.append(f"  refused: {p.refusal(cap)}")
    return lines


def check_recipe(recipe, base_model: str | None, stages, force: bool = False) -> list[str]:
    """At the start of a real run: the plans of the engine actors and train entries among `stages` (lines to
    print); raises MemoryPlanError (one line per entry) when one cannot fit, unless `force`."""
    folder = base_model if base_model and Path(base_model).is_dir() else plan_model(recipe.model)
    gpu_gb = gpu_memory_gb(recipe)
    try:
        plans = recipe_plans(recipe, folder, gpu_gb, stages)
    except ValueError as exc:
        return [f"memory plan: {exc} (not checked)"]
    if not plans:
        return []
    cpu_gb = machine_memory_gb()
    try:
        check_plans(plans, gpu_gb, cpu_gb)
    except MemoryPlanError as exc:
        if not force:
            raise
        return [f"memory plan, forced past: {exc}"]
    big = max(plans, key=lambda p: p.total / ((gpu_gb if p.on_gpu else cpu_gb) or 1))
    cap = gpu_gb if big.on_gpu else cpu_gb
    return [f"memory plan: {len(plans)} to run fit; the fullest, {big.where}, ~{big.total / GIB:.1f} GiB {big.unit}"
            + (f" of {cap:.0f} GiB" if cap else " (GPU size unknown: set ray.gpu_memory_gb)")]
