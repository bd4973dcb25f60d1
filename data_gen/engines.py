"""Sampling on Ray: engine actors (one vLLM engine or one transformers model each), prompts sharded across them,
every shard saved as it finishes (`sample`), and what each actor reserved and where it writes its output.

The engines themselves (`hf_generate`, `build_vllm`, stop tokens) are in `data_gen/samplers.py`. An actor owns its
process for life: its whole output, vLLM's engine-core subprocess included, goes to `engine.log` in its stage
folder (`workbench/console.py send_output`), and it reserves `memory_gb` (or an estimate) as Ray `memory`.
Actors are named after the stage they serve (`generate: engine 0`, `evaluate dft: engine 1`, what the Ray
dashboard shows) and spread over the cluster's nodes (Ray's SPREAD strategy). An actor lost while sampling
(its process or node died) is replaced, and only its unfinished shards are sampled again (`sample`).
"""

from __future__ import annotations

import os
import uuid

from data_gen.config import SamplerConfig
from data_gen.samplers import (
    Completion,
    build_vllm,
    hf_generate,
    resolve_engine,
    stop_token_ids,
    vllm_completion,
    vllm_params,
)
from workbench.console import engine_log, ensure_ray, send_output


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


def _batches(n_prompts: int, num_actors: int, engine: str, cfg: SamplerConfig) -> list[tuple[int, int]]:
    """Contiguous (start, end) slices: a few per actor, so the progress bar moves and actors stay busy."""
    per_actor = -(-n_prompts // num_actors)
    size = max(1, min(per_actor, 4 * cfg.hf_batch_size if engine == "hf" else 1024))
    return [(s, min(s + size, n_prompts)) for s in range(0, n_prompts, size)]


def engine_memory(model: str, cfg: SamplerConfig, n: int = 1) -> tuple[float, str]:
    """(GiB each engine actor reserves as Ray `memory`, a note when the estimate was capped): cfg.memory_gb,
    else the estimate of workbench/resources.py for this model, engine and KV cache."""
    from workbench.resources import engine_memory_gb, fit_memory, node_memory_gb

    ensure_ray()
    return fit_memory("engine", cfg.memory_gb, lambda: engine_memory_gb(cfg, model, resolve_engine(cfg), n),
                      node_memory_gb())


# What each running engine actor reserved and where it writes: {actor id: (GiB, log file or None)}.
_ENGINES: dict[str, tuple[float, str | None]] = {}


def start_engines(model: str, cfg: SamplerConfig, seed: int, log_dir=None, n: int = 1, desc: str = "engines",
                  first: int = 0, count: int | None = None) -> list:
    """Start `cfg.num_actors` engine actors (vLLM or HF per cfg.engine) on Ray; reuse them across
    `sample(..., engines=...)` calls to pay the engine start once. Stop them with `stop_engines`.
    Reused multiprocess vLLM engines are not reseeded (see `_VLLMEngine.reseed`).
    Each reserves `engine_memory` as Ray `memory` (for `n` responses a prompt) and, with `log_dir`, writes
    its whole output to `engine_log(log_dir, i)` (engine.log, engine-1.log, ...) instead of the console.
    `desc` names the actors (`<desc>: engine <i>`); `first`, `count`: start only actors first..first+count-1
    (a replacement)."""
    ray = ensure_ray()
    cls = _VLLMEngine if resolve_engine(cfg) == "vllm" else _HFEngine
    memory_gb, note = engine_memory(model, cfg, n)
    if note:
        print(f"engine memory: {note}", flush=True)
    actor_cls = ray.remote(num_cpus=cfg.num_cpus_per_actor, num_gpus=cfg.num_gpus_per_actor,
                           memory=int(memory_gb * 2**30),
                           runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
                           scheduling_strategy="SPREAD")(cls)
    actors = []
    for i in range(first, first + (cfg.num_actors if count is None else count)):
        log = str(engine_log(log_dir, i)) if log_dir is not None else None
        name = f"{desc}: engine {i} ({uuid.uuid4().hex[:4]})"  # unique while alive, as Ray requires
        actors.append(actor_cls.options(name=name).remote(model, cfg, seed + i, log))
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
           log_dir=None, max_replacements: int = 3) -> list[list[Completion]]:
    """`n` completions for every rendered prompt, in prompt order, from engine actors on Ray.

    Prompts are cut into contiguous shards (`_batches`) handed to actors round-robin; before shard k its
    actor's engine is reseeded with seed + k, so a shard's samples depend on its prompts, the config and
    the seed only, not on which actor drew it or what that actor drew before. That holds for the HF
    engine and for vLLM with `vllm_in_process`; a multiprocess vLLM engine cannot be reseeded (see
    `_VLLMEngine.reseed`), so there a resumed run draws fresh samples for the missing shards.
    `shards` (a `data_gen.shards.ShardStore`) saves each finished shard and reuses the ones an earlier,
    killed run saved: only the missing shards are sampled, and no engine starts when none is missing.
    `engines` (from `start_engines`) reuses running actors; otherwise they are started here and stopped,
    writing their output into `log_dir` (`start_engines`). An actor started here that dies while sampling
    (process or node lost, not killed for memory) is replaced, up to `max_replacements` times, and only
    the shards it had not finished are sampled again, by the new actor with the same seeds. Any other
    failure raises one line naming the actor's log.
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
    ray = ensure_ray()
    own = engines is None
    actors = start_engines(model, cfg, seed, log_dir, n, desc=desc) if own else engines
    futures = {}  # ObjectRef -> (shard k, start, end, actor slot)

    def submit(k: int, s: int, e: int, slot: int):
        actors[slot].reseed.remote(seed + k)  # an actor runs its calls in order: this seeds the generate below
        ref = actors[slot].generate.remote(prompts[s:e], n)
        futures[ref] = (k, s, e, slot)
        return ref

    pending = [submit(k, s, e, i % num_actors) for i, (k, s, e) in enumerate(missing)]
    replaced = 0
    try:
        with Progress(transient=False) as bar:
            reserved = _ENGINES.get(actors[0]._actor_id.hex(), (0,))[0]  # Ray `memory` of each actor
            label = f"{desc} ({engine}, {num_actors} actor(s){f', {reserved:g} GiB each' if reserved else ''})"
            task = bar.add_task(label, total=len(prompts),
                                completed=len(prompts) - sum(e - s for _, s, e in missing))
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                k, s, e, slot = futures.pop(done[0])
                try:
                    results[s:e] = ray.get(done[0])
                except ray.exceptions.RayActorError as exc:
                    from workbench.resources import memory_kill

                    if not own or replaced >= max_replacements or memory_kill(exc) is not None:
                        raise engine_failure(desc, actors[slot], exc) from exc
                    lost = [(k, s, e)] + [futures.pop(f)[:3] for f in pending if futures[f][3] == slot]
                    pending = [f for f in pending if f in futures]
                    stop_engines([actors[slot]])
                    actors[slot] = start_engines(model, cfg, seed, log_dir, n, desc=desc, first=slot, count=1)[0]
                    replaced += 1
                    print(f"{desc}: engine {slot} was lost ({type(exc).__name__}); replaced, sampling its "
                          f"{len(lost)} unfinished shard(s) again", flush=True)
                    pending += [submit(*shard, slot) for shard in lost]
                    continue
                except ray.exceptions.RayError as exc:
                    raise engine_failure(desc, actors[slot], exc) from exc
                if shards is not None:
                    shards.save(k, s, e, results[s:e])
                bar.advance(task, e - s)
    finally:
        if own:
            stop_engines(actors)
    return results
