"""Calibrate the memory plan (workbench/memory_plan.py) against measured peaks on this machine's CPU.

Runs each trainer for two optimizer steps (PPO: iterations; in the second AdamW's moments are alive during the
forward and backward passes, as in every later step) on SmolLM2-135M (float32 on CPU) in a process of its own,
with data that fills `max_length` (long responses; prompts near the online methods' prompt budget, completions
forced to `max_completion_length`), reads the process's peak resident set (`ru_maxrss`), and prints the plan's
estimate for the same entry, their ratio and the plan's parts:

    .venv/bin/python benchmarks/memory_plan.py                 # every case, one after the other
    .venv/bin/python benchmarks/memory_plan.py --cases dft-ckpt,ppo --threads 2
    .venv/bin/python benchmarks/memory_plan.py --from-log OLD_OUTPUT   # today's estimates for measured peaks

A case runs `plugin().train(job, cfg)` exactly as the train stage does (no Ray: one process). Its first line
of output is the runtime baseline: a process that imported torch, transformers, TRL and the trainers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXT = ("Let x be the number of apples. Then 3x + 7 = 22, so 3x = 15 and x = 5. We check: 3 * 5 + 7 = 22. "
        "Therefore the answer is \\boxed{5}. ") * 60
BASE = {"max_steps": 2, "learning_rate": 1e-5, "lr_scheduler": "constant", "warmup_ratio": 0.0, "max_length": 384}
RL = {"max_completion_length": 128}
CASES = {
    "sft": ("sft", {"batch_size": 4, "per_device_batch_size": 4, "gradient_checkpointing": False}),
    "dft": ("dft", {"batch_size": 4, "per_device_batch_size": 4, "gradient_checkpointing": False}),
    "dft-ckpt": ("dft", {"batch_size": 4, "per_device_batch_size": 4, "gradient_checkpointing": True}),
    "dpo": ("dpo", {"batch_size": 2, "per_device_batch_size": 2, "gradient_checkpointing": False}),
    "dpo-ckpt": ("dpo", {"batch_size": 2, "per_device_batch_size": 2, "gradient_checkpointing": True}),
    "grpo": ("grpo", {**RL, "num_generations": 4, "batch_size": 4, "per_device_batch_size": 4, "beta": 0.001,
                      "gradient_checkpointing": False}),
    "grpo-ckpt": ("grpo", {**RL, "num_generations": 4, "batch_size": 4, "per_device_batch_size": 4,
                           "beta": 0.001, "gradient_checkpointing": True}),
    "ppo": ("ppo", {**RL, "rollout_engine": "hf", "rollout_batch_size": 4, "samples_per_prompt": 1,
                    "batch_size": 4, "per_device_batch_size": 4, "rollout_hf_batch_size": 4,
                    "gradient_checkpointing": False}),
    "ppo-ckpt": ("ppo", {**RL, "rollout_engine": "hf", "rollout_batch_size": 4, "samples_per_prompt": 1,
                         "batch_size": 4, "per_device_batch_size": 4, "rollout_hf_batch_size": 4,
                         "gradient_checkpointing": True}),
}


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def data(algorithm: str, tokenizer, cfg):
    """Rows whose sequences fill max_length: long responses, or prompts near the online prompt budget."""
    import polars as pl

    n = 8
    if algorithm in ("grpo", "ppo"):
        from workbench.template import TemplateConfig, render_prompt

        template = len(tokenizer(render_prompt(tokenizer, "", TemplateConfig()), add_special_tokens=False)["input_ids"])
        budget = cfg.max_length - cfg.max_completion_length - template - 8  # the template's own tokens
        problem = tokenizer.decode(tokenizer(TEXT, add_special_tokens=False)["input_ids"][:budget])
        return pl.DataFrame({"prompt_id": [f"p{i}" for i in range(n)], "problem": [f"{i}. {problem}" for i in range(n)],
                             "answer": ["5"] * n})
    if algorithm == "dpo":
        return pl.DataFrame({"prompt_id": [f"p{i}" for i in range(n)], "problem": ["What is x?"] * n,
                             "chosen": [TEXT] * n, "rejected": [TEXT.replace("5", "6")] * n})
    return pl.DataFrame({"prompt_id": [f"p{i}" for i in range(n)], "problem": ["What is x?"] * n, "response": [TEXT] * n})


def train_case(case: str, model_dir: str, threads: int, out: Path, bf16: bool = False) -> dict:
    """In this process: train the case on `model_dir` (on the GPU when there is one); what it trained on."""
    import torch
    from transformers import AutoTokenizer

    from data_gen import samplers
    from workbench.registry import get_trainer
    from workbench.template import TemplateConfig
    from workbench.trainers import grpo
    from workbench.trainers.base import TrainJob

    torch.set_num_threads(threads)
    algorithm, extra = CASES[case]
    plugin = get_trainer(algorithm)
    cfg = plugin.Config(**{**BASE, **extra, "bf16": bf16})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if algorithm in ("grpo", "ppo"):  # never stop early: every completion is max_completion_length tokens
        samplers.stop_token_ids = lambda tok, gen=None: [tokenizer.vocab_size - 1]
        real = grpo.trl_args

        def forced(job, c, stop_ids):
            args = real(job, c, stop_ids)
            args.generation_kwargs = {"min_new_tokens": c.max_completion_length}
            return args

        grpo.trl_args = forced
    job = TrainJob(base_model=Path(model_dir), data=data(algorithm, tokenizer, cfg), template=TemplateConfig(),
                   out_dir=out, seed=0, num_threads=threads)
    t0 = time.perf_counter()
    result = plugin().train(job, cfg)
    rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()] if job.metrics_path.exists() \
        else []
    return {"case": case, "wall_s": round(time.perf_counter() - t0, 1), "steps": result.steps,
            "response_length": rows[-1].get("response_length") if rows else None}


def baseline() -> dict:
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401
    from transformers import AutoTokenizer

    from workbench.models import resolve_model
    from workbench.trainers import dpo, grpo, ppo, sft  # noqa: F401

    AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    return {"case": "baseline", "peak_gib": peak_rss() / 2**30}


def estimate(case: str, model_dir: str, on_gpu: bool = False, bf16: bool = False):
    """The memory plan of the case's entry (workbench/memory_plan.py's train_plan)."""
    from workbench.memory_plan import model_shape, train_plan
    from workbench.recipe import parse_recipe

    algorithm, extra = CASES[case]
    entry = {"name": case, "algorithm": algorithm, **BASE, **extra, "bf16": bf16, "num_gpus": 1 if on_gpu else 0}
    recipe = parse_recipe({"run": {"name": "m"}, "model": model_dir, "train": [entry]}, "memory_plan")
    return train_plan(recipe.train[0], 0, model_shape(model_dir, model_dir), on_gpu=on_gpu, gpu_gb=None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--from-log", help="a previous run's output: its measured peaks against today's estimates "
                    "(after a formula changed; nothing is trained)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="/tmp/memory-plan-bench", help="scratch folder for the trained models")
    args = ap.parse_args()
    if args.one:
        import tempfile

        with tempfile.TemporaryDirectory(dir=args.out) as tmp:
            from workbench.models import resolve_model

            result = baseline() if args.one == "baseline" else train_case(
                args.one, resolve_model("smollm2-135m"), args.threads, Path(tmp) / "t")
            result["peak_gib"] = peak_rss() / 2**30
        print("RESULT " + json.dumps(result), flush=True)
        return
    if args.from_log:
        import re

        from workbench.memory_plan import GIB
        from workbench.models import resolve_model

        ratios = []
        for case, measured in re.findall(r"^(\S+)\s+measured ([\d.]+) GiB", Path(args.from_log).read_text(), re.MULTILINE):
            plan = estimate(case, resolve_model("smollm2-135m"))
            ratios.append(plan.total / GIB / float(measured))
            print(f"{case:10s} measured {float(measured):.2f} GiB  estimate {plan.total / GIB:.2f} GiB  "
                  f"ratio {ratios[-1]:.2f}\n           {plan.line()}")
        print(f"estimate / measured: min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} cases")
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(args.threads)}
    ratios = []
    for case in ["baseline", *args.cases.split(",")]:
        proc = subprocess.run([sys.executable, __file__, "--one", case, "--threads", str(args.threads), "--out",
                               args.out], capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{case}: failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
            continue
        got = json.loads(line[7:])
        if case == "baseline":
            print(f"baseline (imports + tokenizer): {got['peak_gib']:.2f} GiB", flush=True)
            continue
        from workbench.memory_plan import GIB
        from workbench.models import resolve_model

        plan = estimate(case, resolve_model("smollm2-135m"))
        est, detail = plan.total / GIB, plan.line()
        ratios.append(est / got["peak_gib"])
        print(f"{case:10s} measured {got['peak_gib']:.2f} GiB  estimate {est:.2f} GiB  ratio {est / got['peak_gib']:.2f}"
              f"  ({got['wall_s']} s, response_length {got['response_length']})", flush=True)
        print(f"           {detail}", flush=True)
    if ratios:
        print(f"estimate / measured: min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} cases")


if __name__ == "__main__":
    main()
