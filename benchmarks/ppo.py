"""Benchmark: PPO iterations with vLLM rollouts (weights synced from the actor after every update) against
transformers-generate rollouts, and the peak memory of the PPO process.

Both runs use one PPO config, the PPO entry of the SmolLM2 recipe (recipes/smollm2-135m.yaml: SmolLM2-135M,
rollout batches of 8 prompts x 4 samples, micro-batch 8, responses up to 192 tokens), its prompts (the
recipe's `prompts` section), template and seed; only `rollout_engine` differs (`vllm` / `hf`). Each run is
its own subprocess, so its memory is its own; the vLLM engine lives inside that process.

- iteration_time_ratio: median wall time of a whole PPO iteration (rollout, scoring, old / reference / value
  passes, actor and critic updates, the weight sync) with HF rollouts over the same with vLLM rollouts,
  from metrics.jsonl's `step_s`; the first iteration (warm-up) is left out when there are more. Engine start
  and model loading happen before the first iteration and are reported apart (`setup_s`).
- peak_rss_gb: the peak resident set (VmHWM) of the vLLM-rollout PPO process, in GiB (HF's is printed too).
- rollout_time_ratio and the phases (rollout, score, prep = old / reference log-probs and values, update,
  sync; medians as above), so one sees which phase bounds the whole-iteration ratio: on a 2-core CPU the
  update and prep passes (the same work in both runs) dominate, and the ratio stays below 1.5 even when the
  rollout itself is several times faster (issue 12 notes).

    .venv/bin/python benchmarks/ppo.py [--recipe recipes/smollm2-135m.yaml] [--steps N] [--threads 2]

Last line: {"iteration_time_ratio": hf/vllm, "peak_rss_gb": ..., ...}. Targets (issue 12): >= 1.5 and <= 6.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dft_overhead import rss_kib  # benchmarks/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]


def child(args) -> None:
    """One PPO run as the recipe's entry says, with args.engine rollouts; prints one JSON line."""
    import torch

    from data_gen.prompts import load_prompts
    from workbench.models import resolve_model
    from workbench.recipe import load_recipe
    from workbench.trainers.base import TrainJob
    from workbench.trainers.ppo import PPOTrainerPlugin

    recipe = load_recipe(args.recipe)
    entry = next((e for e in recipe.train if e.algorithm == "ppo"), None)
    if entry is None:
        sys.exit(f"{args.recipe}: no train entry with algorithm ppo")
    update = {"rollout_engine": args.engine} | ({"max_steps": args.steps} if args.steps else {})
    cfg = entry.config.model_copy(update=update)
    prompts, _ = load_prompts(recipe.prompts, recipe.run.seed)
    out = Path(tempfile.mkdtemp(prefix=f"ppo-bench-{args.engine}-"))
    job = TrainJob(base_model=Path(resolve_model(recipe.model)), data=prompts.select("problem", "answer"),
                   template=recipe.template, out_dir=out, seed=recipe.run.seed, num_threads=args.threads)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = PPOTrainerPlugin().train(job, cfg)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()]
    steps = [r["step_s"] for r in rows]
    print(json.dumps({
        "engine": args.engine, "iterations": len(rows), "step_s": steps,
        "rollout_s": [r["rollout_s"] for r in rows], "sync_s": [r["sync_s"] for r in rows],
        "score_s": [r["score_s"] for r in rows], "prep_s": [r["prep_s"] for r in rows],
        "update_s": [r["update_s"] for r in rows],
        "reward": [r["reward"] for r in rows], "response_length": [r["response_length"] for r in rows],
        "setup_s": round(wall - sum(steps), 1), "peak_rss_gb": round(rss_kib("VmHWM") / 2**20, 3),
        "rollout_tokens": result.extra["rollout_tokens"],
    }))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "smollm2-135m.yaml"))
    ap.add_argument("--steps", type=int, default=0, help="PPO iterations per run (0: the entry's max_steps)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each run")
    ap.add_argument("--engine", help=argparse.SUPPRESS)  # set in the per-run subprocess
    args = ap.parse_args()
    if args.engine:
        return child(args)

    passthrough = sys.argv[1:]
    runs = {}
    for engine in ("vllm", "hf"):
        out = subprocess.run([sys.executable, __file__, *passthrough, "--engine", engine], capture_output=True,
                             text=True, check=False, cwd=ROOT)
        if out.returncode != 0:
            sys.exit(f"the {engine} run failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
        runs[engine] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(runs[engine]), flush=True)

    def median(run, key="step_s"):  # the first iteration (warm-up) left out when there are more
        values = run[key][1:] if len(run[key]) > 1 else run[key]
        return round(statistics.median(values), 3)

    print(json.dumps({
        "iteration_time_ratio": round(median(runs["hf"]) / median(runs["vllm"]), 3),
        "peak_rss_gb": runs["vllm"]["peak_rss_gb"],
        "peak_rss_gb_hf": runs["hf"]["peak_rss_gb"],
        "iteration_s_vllm": median(runs["vllm"]),
        "iteration_s_hf": median(runs["hf"]),
        "rollout_s_vllm": median(runs["vllm"], "rollout_s"), "rollout_s_hf": median(runs["hf"], "rollout_s"),
        "rollout_time_ratio": round(median(runs["hf"], "rollout_s") / median(runs["vllm"], "rollout_s"), 3),
        "sync_s": median(runs["vllm"], "sync_s"),
        **{f"{key}_vllm": median(runs["vllm"], key) for key in ("score_s", "prep_s", "update_s")},
        **{f"{key}_hf": median(runs["hf"], key) for key in ("score_s", "prep_s", "update_s")},
        "iterations": runs["vllm"]["iterations"], "threads": args.threads,
        "targets": {"iteration_time_ratio": ">= 1.5", "peak_rss_gb": "<= 6"},
    }))


if __name__ == "__main__":
    main()
