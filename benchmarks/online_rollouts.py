"""Benchmark: seconds per iteration spent rolling out and updating, and peak memory, for a recipe's PPO and
GRPO entries (default: recipes/compare-smollm2.yaml), each exactly as the recipe configures it but for
`--steps` iterations.

Each entry trains in its own subprocess (its memory is its own) on the recipe's prompts, template and seed:

- PPO (ours): the phases come from its metrics.jsonl: `rollout_s` (sampling, vLLM or HF generate), `score_s`
  (the verifier), `prep_s` (old / reference log-probs and values), `update_s` (actor and critic updates),
  `sync_s` (weights into the rollout engine), `step_s` (the whole iteration).
- GRPO (TRL): TRL logs no timings, so this script times `GRPOTrainer._generate` (sampling, transformers
  generate) and `_generate_and_score_completions` (sampling, rewards, old / reference log-probs) inside each
  optimizer step (a callback marks the steps); update = step - generate_and_score.

One iteration is one optimizer step of the entry (PPO: one rollout batch, `rollout_batch_size` x
`samples_per_prompt` completions; GRPO: `batch_size` completions). Reported per entry: medians over the
iterations after the first (warm-up) when there are more, setup (model loads, engine start) apart, and the
subprocess's peak resident set (VmHWM).

    .venv/bin/python benchmarks/online_rollouts.py [--recipe R] [--steps 3] [--threads 2] [--only ppo|grpo]

One line per entry, then a JSON line with every number.
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


def _grpo_timers(timings: list[dict]):
    """Patch TRL's GRPOTrainer so that each optimizer step appends {step_s, rollout_s, sample_s} to `timings`."""
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    current = {"sample_s": 0.0, "rollout_s": 0.0, "t0": 0.0}

    def timed(method, key):
        def wrapper(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                current[key] += time.perf_counter() - t0
        return wrapper

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            current.update(sample_s=0.0, rollout_s=0.0, t0=time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            step = time.perf_counter() - current["t0"]
            timings.append({"step_s": step, "rollout_s": current["rollout_s"], "sample_s": current["sample_s"],
                            "update_s": step - current["rollout_s"]})

    GRPOTrainer._generate = timed(GRPOTrainer._generate, "sample_s")
    GRPOTrainer._generate_and_score_completions = timed(GRPOTrainer._generate_and_score_completions, "rollout_s")
    init = GRPOTrainer.__init__

    def init_with_timer(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(StepTimer())

    GRPOTrainer.__init__ = init_with_timer


def child(args) -> None:
    """Train the recipe's entry `args.entry` for args.steps iterations; print one JSON line."""
    import torch

    from data_gen.prompts import load_prompts
    from workbench.models import resolve_model
    from workbench.recipe import load_recipe
    from workbench.registry import get_trainer
    from workbench.trainers.base import TrainJob

    recipe = load_recipe(args.recipe)
    entry = next(e for e in recipe.train if e.name == args.entry)
    cfg = entry.config.model_copy(update={"max_steps": args.steps})
    prompts, _ = load_prompts(recipe.prompts, recipe.run.seed)
    out = Path(tempfile.mkdtemp(prefix=f"online-bench-{entry.name}-"))
    job = TrainJob(base_model=Path(resolve_model(recipe.model)), data=prompts.select("problem", "answer"),
                   template=recipe.template, out_dir=out, seed=recipe.run.seed, num_threads=args.threads)
    torch.set_num_threads(args.threads)
    grpo_timings: list[dict] = []
    if entry.algorithm == "grpo":
        _grpo_timers(grpo_timings)
    t0 = time.perf_counter()
    get_trainer(entry.algorithm)().train(job, cfg)
    wall = time.perf_counter() - t0
    if entry.algorithm == "ppo":
        rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()]
        keys = ("step_s", "rollout_s", "score_s", "prep_s", "update_s", "sync_s")
        phases = {k: [r[k] for r in rows] for k in keys}
        per_step = int(cfg.rollout_batch_size) * int(cfg.samples_per_prompt)
    else:
        phases = {k: [t[k] for t in grpo_timings] for k in ("step_s", "rollout_s", "sample_s", "update_s")}
        per_step = int(cfg.batch_size)
    print(json.dumps({"entry": entry.name, "algorithm": entry.algorithm, "iterations": len(phases["step_s"]),
                      "completions_per_iteration": per_step, **phases,
                      "setup_s": round(wall - sum(phases["step_s"]), 1),
                      "peak_rss_gb": round(rss_kib("VmHWM") / 2**20, 3)}))


def median(values: list[float]) -> float:
    """Median over the iterations after the first (warm-up) when there are more than one."""
    return round(statistics.median(values[1:] if len(values) > 1 else values), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "compare-smollm2.yaml"))
    ap.add_argument("--steps", type=int, default=3, help="iterations (optimizer steps) per entry")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each run")
    ap.add_argument("--only", choices=["ppo", "grpo"], help="benchmark only this algorithm's entries")
    ap.add_argument("--entry", help=argparse.SUPPRESS)  # set in the per-entry subprocess
    args = ap.parse_args()
    if args.entry:
        return child(args)

    from workbench.recipe import load_recipe

    entries = [e for e in load_recipe(args.recipe).train
               if e.algorithm in ("ppo", "grpo") and (args.only is None or e.algorithm == args.only)]
    if not entries:
        sys.exit(f"{args.recipe}: no train entry with algorithm ppo or grpo")
    results = []
    for entry in entries:
        cmd = [sys.executable, __file__, "--recipe", args.recipe, "--steps", str(args.steps),
               "--threads", str(args.threads), "--entry", entry.name]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
        if out.returncode != 0:
            sys.exit(f"entry {entry.name}: the run failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
        run = json.loads(out.stdout.strip().splitlines()[-1])
        summary = {"entry": run["entry"], "algorithm": run["algorithm"], "iterations": run["iterations"],
                   "completions_per_iteration": run["completions_per_iteration"],
                   "iteration_s": median(run["step_s"]), "rollout_s": median(run["rollout_s"]),
                   "update_s": median(run["update_s"]), "setup_s": run["setup_s"],
                   "peak_rss_gb": run["peak_rss_gb"]}
        print(f"{summary['entry']} ({summary['algorithm']}): iteration {summary['iteration_s']} s = rollout "
              f"{summary['rollout_s']} s + update {summary['update_s']} s (+ the rest), "
              f"{summary['completions_per_iteration']} completions/iteration, setup {summary['setup_s']} s, "
              f"peak RSS {summary['peak_rss_gb']} GiB", flush=True)
        results.append({**summary, "raw": run})
    print(json.dumps({"recipe": args.recipe, "threads": args.threads, "steps": args.steps, "entries": results}))


if __name__ == "__main__":
    main()
