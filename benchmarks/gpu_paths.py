"""The paths of benchmarks/gpu_check.py: each builds what it needs, runs one GPU code path of the workbench
through its public functions (trainer plugins' `train(job, cfg)`, `common.micro_batch_loss`, `launch.shard`,
`data_gen.engines.sample`) and returns one line of detail, raises `Skip` with the reason, or raises.

The model is random, with SmolLM2-135M's architecture, tokenizer and chat template (gpu_assets/, see
PROVENANCE.md); the data are a few in-memory rows with the columns of DESIGN.md. Every path also runs on CPU
(TRL's torch fallback of the tiled head, gloo instead of NCCL), which is how tests/test_gpu_check.py checks them.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

ASSETS = Path(__file__).resolve().parent / "gpu_assets"
OPTIONAL = {"ray": ("ray",), "vllm": ("vllm", "ray"), "grpo-vllm": ("vllm",), "ppo-vllm": ("vllm",)}  # packages a path needs, not shipped
TOLERANCE = 1e-4
PROBLEMS = [("What is 2 + 3?", "5"), ("What is 7 - 4?", "3"), ("What is 6 + 6?", "12"), ("What is 9 - 1?", "8")]


class Skip(Exception):
    """A path that cannot run here; the message is the reason."""


def first_error_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


# --- the model and the data --------------------------------------------------------------------------------


def build_random_model(out: Path, layers: int | None = None, seed: int = 0) -> Path:
    """A Hugging Face folder: SmolLM2-135M's config (with `layers` decoder layers if given), random float32
    weights, and its real tokenizer and chat template, all from benchmarks/gpu_assets/ (see PROVENANCE.md)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in ASSETS.iterdir():
        if f.name == "tokenizer.json.gz":
            (out / "tokenizer.json").write_bytes(gzip.decompress(f.read_bytes()))
        elif f.suffix in (".json", ".jinja"):
            shutil.copy(f, out / f.name)
    config = AutoConfig.from_pretrained(out)
    if layers:
        config.num_hidden_layers = layers
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out)
    AutoTokenizer.from_pretrained(out)  # fail here, once, if the tokenizer files do not load
    return out


def tiny_data(kind: str):
    """A few rows of `positives`, `pairs` or `prompts` (columns as in DESIGN.md)."""
    import polars as pl

    problems, answers = [p for p, _ in PROBLEMS], [a for _, a in PROBLEMS]
    rows = {"prompt_id": [f"p{i}" for i in range(len(PROBLEMS))], "problem": problems}
    right = [f"Adding up step by step gives \\boxed{{{a}}}." for a in answers]
    if kind == "positives":
        return pl.DataFrame({**rows, "response": right})
    if kind == "pairs":
        wrong = [f"Adding up step by step gives \\boxed{{{int(a) + 1}}}." for a in answers]
        return pl.DataFrame({**rows, "chosen": right, "rejected": wrong})
    return pl.DataFrame({**rows, "answer": answers})


def make_job(model_dir: Path, kind: str, out_dir: Path):
    from workbench.template import TemplateConfig
    from workbench.trainers.base import TrainJob

    return TrainJob(base_model=Path(model_dir), data=tiny_data(kind), template=TemplateConfig(), out_dir=Path(out_dir),
                    seed=0, num_threads=min(8, os.cpu_count() or 1))


def load(model_dir: Path, device):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)


def random_batch(vocab: int, batch: int, seq: int, device):
    """dft_overhead.py's batch (random tokens, first quarter of each row prompt-masked) and its token count."""
    from benchmarks.dft_overhead import batch as overhead_batch

    inputs = overhead_batch(SimpleNamespace(vocab=vocab, batch=batch, seq=seq), device)
    return inputs, int((inputs["labels"][:, 1:] != -100).sum())


# --- the paths ---------------------------------------------------------------------------------------------


def tiled_vs_full(model_dir: Path, kind: str, device, batch: int = 4, seq: int = 512) -> dict:
    """One micro-batch's loss and gradients through `micro_batch_loss`, with TRL's tiled LM head ("tiled", the
    GPU path) and with full float32 logits ("full", the CPU path), each against the same loss from full logits
    upcast to float64 (`losses.token_loss`), same model and batch: {path: (|loss diff| / |loss|,
    max |grad diff| / max |grad|)}. The float64 reference is needed because float32 cross-entropy itself is off
    by ~3e-5 in log p for confident tokens (measured on CPU: the tiled head came out closer to float64).

    So that p_t, DFT's weight, spans orders of magnitude instead of sitting at ~1/vocab, the (tied) LM head is
    scaled by 3 and every other token repeats the one before it: a random model with tied embeddings gives a
    repeated token a high probability (median ~0.6), the random ones ~1e-9 to 1e-4."""
    import torch
    from trl.trainer import add_fused_lm_head

    from workbench.trainers.common import micro_batch_loss
    from workbench.trainers.losses import token_loss

    model = load(model_dir, device)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(3.0)
    add_fused_lm_head(model)
    inputs, n = random_batch(model.config.vocab_size, batch, seq, device)
    ids, labels = inputs["input_ids"], inputs["labels"]
    ids[:, 1::2] = ids[:, 0:-1:2]
    labels[labels != -100] = ids[labels != -100]

    def float64_loss():
        logits = model(input_ids=ids, attention_mask=inputs["attention_mask"]).logits
        return token_loss(logits.double(), labels, n, kind=kind)[0]

    runs = {}
    for name, loss_fn in (("tiled", lambda: micro_batch_loss(model, None, inputs, n, kind, True, {})[0]),
                          ("full", lambda: micro_batch_loss(model, None, inputs, n, kind, False, {})[0]),
                          ("float64", float64_loss)):
        model.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        runs[name] = (loss.item(), {k: p.grad.detach().clone() for k, p in model.named_parameters()})
    ref_loss, ref_grads = runs.pop("float64")
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    out = {"loss": ref_loss}
    for name, (loss, grads) in runs.items():
        diff = max(float((grads[k] - g).abs().max()) for k, g in ref_grads.items())
        out[name] = (rel_diff(loss, ref_loss), diff / max(scale, 1e-30))
    return out


def rel_diff(a: float, b: float) -> float:
    """|a - b| / |b|: a random model's DFT loss is ~2e-4 (p ~ 1/vocab), so differences are relative."""
    return abs(a - b) / max(abs(b), 1e-30)


def check_tiled(model_dir: Path, kind: str, device, args) -> str:
    r = tiled_vs_full(model_dir, kind, device, batch=args.batch, seq=min(args.seq, 512))
    text = (f"loss {r['loss']:.4g}; against full logits in float64, |loss diff|/|loss| and "
            f"grad max|diff|/max|grad|: tiled head {r['tiled'][0]:.1e}, {r['tiled'][1]:.1e}; "
            f"float32 full logits {r['full'][0]:.1e}, {r['full'][1]:.1e}")
    if max(r["tiled"]) > TOLERANCE:
        raise AssertionError(f"tiled head differs from full logits by more than {TOLERANCE}: {text}")
    return text


def last_loss(result) -> float:
    """The last logged loss of a finished plugin run (metrics.jsonl); it must be finite."""
    path = result.model_dir.parent / "metrics.jsonl"
    losses = [json.loads(line).get("loss") for line in path.read_text().splitlines()] if path.is_file() else []
    losses = [x for x in losses if x is not None]
    if not losses or not math.isfinite(losses[-1]):
        raise AssertionError(f"no finite loss in {path} ({losses[-3:]})")
    return losses[-1]


def plugin_step(plugin, job, cfg) -> str:
    """Train one step with a trainer plugin; it must log a finite loss and save a model."""
    result = plugin.train(job, cfg)
    if result.steps != 1 or not any(result.model_dir.glob("*.safetensors")):
        raise AssertionError(f"{plugin.name}: {result.steps} steps, saved {sorted(os.listdir(result.model_dir))}")
    return f"1 step, loss {last_loss(result):.4g}, {result.train_tokens} tokens"


def bf16_step(model_dir: Path, work: Path) -> str:
    """One DFT step at lr 1e-6 under bf16 autocast through our loop: saved weights float32, and changed."""
    import torch
    from safetensors.torch import load_file

    from workbench.trainers.dft import DFTConfig, DFTTrainerPlugin

    cfg = DFTConfig(bf16=True, gradient_checkpointing=True, learning_rate=1e-6, lr_scheduler="constant",
                    warmup_ratio=0.0, max_steps=1, batch_size=4, per_device_batch_size=2, max_length=256)
    result = DFTTrainerPlugin().train(make_job(model_dir, "positives", work / "bf16"), cfg)
    before = load_file(model_dir / "model.safetensors")
    after = load_file(result.model_dir / "model.safetensors")
    not_fp32 = [k for k, v in after.items() if v.dtype != torch.float32]
    if not_fp32:
        raise AssertionError(f"saved weights are not float32: {not_fp32[:3]} ({after[not_fp32[0]].dtype})")
    keys = [k for k in before if k in after and "embed_tokens" not in k]  # unseen tokens' rows get no gradient
    changed = sum(int((after[k] != before[k]).sum()) for k in keys) / sum(before[k].numel() for k in keys)
    if changed < 0.5:
        raise AssertionError(f"a 1e-6 step changed only {changed:.1%} of the non-embedding weights")
    return f"weights float32, {changed:.1%} of non-embedding weights changed by the 1e-6 step, loss {last_loss(result):.4g}"


def dpo_step(model_dir: Path, work: Path) -> str:
    from workbench.trainers.dpo import DPOConfig, DPOTrainerPlugin

    cfg = DPOConfig(bf16=True, gradient_checkpointing=True, max_steps=1, batch_size=2, per_device_batch_size=2,
                    max_length=256)
    return plugin_step(DPOTrainerPlugin(), make_job(model_dir, "pairs", work / "dpo"), cfg)


def grpo_step(model_dir: Path, work: Path, use_vllm: bool = False) -> str:
    import torch

    from workbench.trainers.grpo import GRPOConfig, GRPOTrainerPlugin

    if use_vllm and not torch.cuda.is_available():
        raise Skip("GRPO's vLLM colocate mode needs a GPU")
    cfg = GRPOConfig(bf16=True, max_steps=1, batch_size=4, num_generations=2, per_device_batch_size=4,
                     max_completion_length=16, use_vllm=use_vllm, vllm_gpu_memory_utilization=0.3)
    name = "grpo-vllm" if use_vllm else "grpo"
    return plugin_step(GRPOTrainerPlugin(), make_job(model_dir, "prompts", work / name), cfg)


def ppo_step(model_dir: Path, work: Path, engine: str = "hf") -> str:
    """One PPO iteration; rollouts from transformers generate (hf) or the in-process vLLM engine (vllm)."""
    from workbench.trainers.ppo import PPOConfig, PPOTrainerPlugin

    cfg = PPOConfig(bf16=True, max_steps=1, rollout_batch_size=2, samples_per_prompt=2, batch_size=4,
                    per_device_batch_size=2, max_completion_length=16, rollout_engine=engine)
    return plugin_step(PPOTrainerPlugin(), make_job(model_dir, "prompts", work / f"ppo-{engine}"), cfg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fsdp_step(model_dir: Path, device, batch: int = 2, seq: int = 256) -> dict:
    """One process group of world size 1 (NCCL on a GPU, gloo on CPU); the model sharded with FSDP2 as our
    loop does under several workers (`launch.shard`, then the tiled head on GPUs) and the unsharded model each
    take one AdamW step on the same batch. Returns both models' losses before and after the step."""
    import torch
    import torch.distributed as dist

    from workbench.trainers.common import micro_batch_loss
    from workbench.trainers.launch import scalar, shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=0, world_size=1)
    fused = device.type == "cuda"
    losses = {}
    try:
        for sharded in (False, True):
            model = load(model_dir, device)
            if sharded:
                shard(model)
            if fused:
                from trl.trainer import add_fused_lm_head

                add_fused_lm_head(model)
            inputs, n = random_batch(model.config.vocab_size, batch, seq, device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            before, _ = micro_batch_loss(model, None, inputs, n, "dft", fused, {})
            before.backward()
            scalar(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            optimizer.step()
            with torch.no_grad():
                after, _ = micro_batch_loss(model, None, inputs, n, "dft", fused, {})
            losses["sharded" if sharded else "plain"] = (before.item(), after.item())
            del model, optimizer
    finally:
        dist.destroy_process_group()
    return {"backend": backend, **losses}


def check_fsdp(model_dir: Path, device, args) -> str:
    r = fsdp_step(model_dir, device, batch=2, seq=min(args.seq, 256))
    (p0, p1), (s0, s1) = r["plain"], r["sharded"]
    text = f"{r['backend']}, world size 1: loss {s0:.6g} -> {s1:.6g} (unsharded {p0:.6g} -> {p1:.6g})"
    if rel_diff(s0, p0) > TOLERANCE or rel_diff(s1, p1) > TOLERANCE or s1 == s0:
        raise AssertionError(f"FSDP2 step differs from the unsharded one: {text}")
    return text


def ray_sample(model_dir: Path, engine: str) -> str:
    """Sample 2 responses per prompt through `data_gen.engines.sample` (Ray engine actors)."""
    import ray
    import torch

    from data_gen.config import SamplerConfig
    from data_gen.engines import sample
    from data_gen.samplers import render_prompts
    from workbench.template import TemplateConfig

    gpu = torch.cuda.is_available()
    cfg = SamplerConfig(engine=engine, max_tokens=16, num_gpus_per_actor=1 if gpu else 0, gpu_memory_utilization=0.3,
                        vllm_in_process=not gpu)
    prompts = render_prompts(str(model_dir), [p for p, _ in PROBLEMS], TemplateConfig())
    try:
        out = sample(str(model_dir), prompts, cfg, n=2, seed=0, desc=engine)
    finally:
        ray.shutdown()
    if len(out) != len(prompts) or any(len(row) != 2 for row in out):
        raise AssertionError(f"expected {len(prompts)} x 2 completions, got {[len(r) for r in out]}")
    return f"{len(prompts)} prompts x 2 samples through {engine} on Ray ({'GPU' if gpu else 'CPU'} actor)"


def run_path(name: str, model_dir: Path, work: Path, device, args) -> str:
    missing = [m for m in OPTIONAL.get(name, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"{' and '.join(missing)} not importable here")
    if name.startswith("tiled-head-"):
        return check_tiled(model_dir, "ce" if name.endswith("sft") else "dft", device, args)
    steps = {"bf16-autocast": lambda: bf16_step(model_dir, work), "dpo": lambda: dpo_step(model_dir, work),
             "grpo": lambda: grpo_step(model_dir, work), "ppo": lambda: ppo_step(model_dir, work),
             "fsdp2": lambda: check_fsdp(model_dir, device, args), "ray": lambda: ray_sample(model_dir, "hf"),
             "vllm": lambda: ray_sample(model_dir, "vllm"), "grpo-vllm": lambda: grpo_step(model_dir, work, True),
             "ppo-vllm": lambda: ppo_step(model_dir, work, "vllm")}
    return steps[name]()
