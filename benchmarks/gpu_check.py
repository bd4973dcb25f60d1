"""A prepared GPU check (issue 15): every GPU code path of the workbench that can travel, in one short run.

    PYTHONPATH=. python benchmarks/gpu_check.py [--layers 30 --seq 2048 --batch 4 --budget-s 450 --log-dir DIR]

The model is random, with SmolLM2-135M's architecture, tokenizer and chat template (benchmarks/gpu_assets/;
all 30 layers unless --layers shrinks it). Each path (benchmarks/gpu_paths.py) runs in its own subprocess (a
crash or a broken CUDA context stays there; its full log goes to --log-dir) and prints one line,
`<path>: ok ...`, `<path>: skipped: <reason>` or `<path>: <its first error line>`:

- tiled-head-sft, tiled-head-dft: `common.micro_batch_loss` through TRL's tiled LM head (fused=True, the
  GPU default) against full logits on the same batch: loss and gradients equal to 1e-4;
- bf16-autocast: one DFT step through our loop (`DFTTrainerPlugin.train`, bf16, lr 1e-6): the saved weights
  are float32 and the step changed them (in bfloat16 a 1e-6 step would round away);
- dpo, grpo, ppo: one step (PPO: one iteration) of each trainer plugin on tiny in-memory data, HF-generate
  rollouts, bf16 and settings as in recipes/table2-qwen2.5-math-1.5b.yaml;
- fsdp2: torch.distributed with one process over NCCL, `launch.shard` (FSDP2 `fully_shard`), one AdamW step:
  loss before and after equal to the unsharded model's;
- ray, vllm, grpo-vllm, ppo-vllm: sampling through Ray engine actors (HF; vLLM), GRPO's vLLM colocate mode
  and PPO's in-process vLLM rollouts with weight sync, where ray / vllm import, else skipped with the reason.

Then the memory plan (`memory-plan`, workbench/memory_plan.py): benchmarks/memory_plan.py's cases (DFT, DPO,
GRPO and PPO, bf16, with and without gradient checkpointing) each train 2 steps in a process of their own on
this model; each prints its peak `torch.cuda.max_memory_allocated` beside the plan's per-GPU estimate without
its runtime part (the CUDA context is not allocated memory), and their ratio. On CPU (`--allow-cpu`) the
peak is the process's resident set and the estimate the plan's per-process total.

Then the figures, the last line, JSON: benchmarks/dft_overhead.py's variants, each in its own process, on
this model and one random batch of --batch x --seq tokens: DFT/SFT step time and peak memory on the path our
loop takes on GPUs (the tiled head), and our DFT step's peak memory over TRL's
`SFTTrainer(loss_type="dft")` (goal <= 0.8).

Without a GPU it imports everything it would use, says so and exits 0; `--allow-cpu` runs the paths on CPU
anyway (gloo instead of NCCL, TRL's torch fallback of the tiled head): slow, for working on this script.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.gpu_paths import Skip, build_random_model, first_error_line, load, run_path

# subprocesses: the paths of a group share one process (and its model); every other path has its own
GROUPS = [("tiled-head-sft", "tiled-head-dft"), ("bf16-autocast",), ("dpo",), ("grpo",), ("ppo",), ("fsdp2",),
          ("ray",), ("vllm",), ("grpo-vllm",), ("ppo-vllm",)]
PATHS = [p for group in GROUPS for p in group]
VARIANTS = ("sft-fused", "dft-fused", "dft-logits", "trl-dft")  # dft_overhead.py's names
FIGURES_RESERVE_S = 120  # of the budget, kept for the figures' four processes
MEMORY = "memory-plan"  # the memory plan's cases (benchmarks/memory_plan.py), each in its own process
MEMORY_CASES = ("dft", "dft-ckpt", "dpo-ckpt", "grpo", "grpo-ckpt", "ppo-ckpt")
MEMORY_RESERVE_S = 120  # of the budget, kept for them


def import_everything() -> list[str]:
    """Import every module the paths use (ray and vllm only where they import); return the failures."""
    failures = []
    for name in ["torch", "transformers", "safetensors", "datasets", "polars", "math_verify", "trl", "trl.trainer",
                 "torch.distributed.fsdp", "benchmarks.dft_overhead", "benchmarks.memory_plan", "workbench.memory_plan",
                 "data_gen.samplers", "data_gen.verifier",
                 "workbench.trainers.common", "workbench.trainers.launch", "workbench.trainers.dft",
                 "workbench.trainers.dpo", "workbench.trainers.grpo", "workbench.trainers.ppo"]:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - report every missing piece, not just the first
            failures.append(f"{name}: {first_error_line(e)}")
    from workbench.registry import VERIFIERS, plugins

    if "math" not in plugins(VERIFIERS):  # GRPO and PPO reward through the registered math verifier
        failures.append("workbench entry points: not registered (the project is not installed; README's GPU check)")
    return failures


# --- inside a child process ---------------------------------------------------------------------------------


def child(args) -> None:
    """Run the paths named in --child, one `RESULT <path> <line>` per path on stdout."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for name in args.child.split(","):
        t0 = time.perf_counter()
        try:
            line = "ok, " + run_path(name, Path(args.model_dir), Path(args.work_dir), device, args)
            line += f" [{time.perf_counter() - t0:.1f} s]"
        except Skip as e:
            line = f"skipped: {e}"
        except Exception as e:  # noqa: BLE001 - report the path's first error line and go on to the next
            traceback.print_exc()
            line = first_error_line(e)
        print(f"RESULT {name} {line}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def measure_child(args) -> None:
    """One dft_overhead.py variant (its `child`) on our random SmolLM2-architecture model, in training mode with
    gradient checkpointing on for every variant (TRL's SFTTrainer turns it on by default; dft_overhead.py's own
    model leaves it off, so there its TRL variants are not like for like)."""
    from transformers import AutoConfig

    from benchmarks import dft_overhead

    def build(_args, device):
        model = load(Path(args.model_dir), device).train()
        model.gradient_checkpointing_enable()  # TRL's SFTConfig default, and the Table 2 recipe's setting
        return model

    dft_overhead.build = build
    vocab = AutoConfig.from_pretrained(args.model_dir).vocab_size
    dft_overhead.child(SimpleNamespace(variant=args.measure, vocab=vocab, seq=args.seq, batch=args.batch,
                                       steps=args.steps, warmup=2, threads=min(8, os.cpu_count() or 1)))


def memory_child(args) -> None:
    """One memory-plan case: train it, print its peak (GPU: max_memory_allocated; CPU: peak resident set)."""
    import resource

    import torch

    from benchmarks import memory_plan as bench

    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    result = bench.train_case(args.memory_case, args.model_dir, min(8, os.cpu_count() or 1),
                              Path(tempfile.mkdtemp(dir=args.work_dir)) / "t", bf16=on_gpu)
    peak = torch.cuda.max_memory_allocated() if on_gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({**result, "peak_gib": peak / 2**30, "on_gpu": on_gpu}), flush=True)


def run_memory(common: list[str], deadline: float, args, log_dir: Path, model_dir: Path) -> dict:
    """Each memory-plan case in its own process: one line each (measured, estimate, ratio); {case: numbers}."""
    from benchmarks import memory_plan as bench
    from workbench.memory_plan import GIB

    out = {}
    for case, got in json_children(MEMORY, "--memory-case", MEMORY_CASES, common, deadline, args, log_dir):
        plan = bench.estimate(case, str(model_dir), on_gpu=got["on_gpu"], bf16=got["on_gpu"])
        est = (plan.total - (plan.parts["runtime"] if got["on_gpu"] else 0)) / GIB
        out[case] = {"measured_gib": round(got["peak_gib"], 3), "estimate_gib": round(est, 3),
                     "ratio": round(est / got["peak_gib"], 3)}
        print(f"{MEMORY} {case}: measured {got['peak_gib']:.2f} GiB, estimate {est:.2f} GiB, ratio "
              f"{est / got['peak_gib']:.2f} [{got['wall_s']} s; {plan.line()}]", flush=True)
    return out


# --- the driver --------------------------------------------------------------------------------------------


def parse_results(stdout: str, stderr: str, returncode: int, paths, timed_out_s: float | None = None) -> dict:
    """Each path's line from a child's output; a path without a RESULT line gets the child's first error line."""
    lines = {}
    for line in stdout.splitlines():
        m = re.match(r"RESULT (\S+) (.*)$", line)
        if m and m.group(1) in paths:
            lines[m.group(1)] = m.group(2)
    errors = [line.strip() for line in stderr.splitlines()
              if re.match(r"\s*(Fatal Python error|[\w.]*(Error|Exception|Interrupt)\b)", line)]
    tail = [line.strip() for line in stderr.splitlines() if line.strip()]
    if timed_out_s is not None:
        missing = f"TimeoutError: no result within {timed_out_s:.0f} s"
    else:
        missing = errors[0] if errors else (tail[-1] if tail else f"exited with code {returncode} and no result")
    return {p: lines.get(p, missing) for p in paths}


def run_child(cmd: list[str], timeout_s: float, log: Path) -> tuple[str, str, int, float | None]:
    """Run a child in its own process group (killed as a whole on timeout); keep its output in `log`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    timed_out = None
    try:
        stdout, stderr = proc.communicate(timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        timed_out = timeout_s
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind (engine cores, Ray workers)
    except (ProcessLookupError, PermissionError):
        pass
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    return stdout, stderr, proc.returncode, timed_out


def json_children(label: str, flag: str, names, common: list[str], deadline: float, args, log_dir: Path):
    """Yields (name, the JSON on its last line) for `gpu_check.py <flag> <name>` run in its own process, one
    after another; a name that fails, or that the time budget leaves out, gets a line `<label> <name>: why`."""
    for name in names:
        left = deadline - time.monotonic()
        if left < 10:
            print(f"{label} {name}: skipped: time budget spent", flush=True)
            continue
        out, err, rc, timed_out = run_child([sys.executable, __file__, flag, name, *common],
                                            min(args.path_timeout_s, left), log_dir / f"{flag[2:]}-{name}.log")
        try:
            yield name, json.loads(out.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            print(f"{label} {name}: {parse_results(out, err, rc, ['x'], timed_out)['x']}", flush=True)


def ratio(results: dict, key: str, a: str, b: str) -> float | None:
    if a in results and b in results and results[b][key]:
        return round(results[a][key] / results[b][key], 4)
    return None


def figures(results: dict, args, device_name: str) -> dict:
    """The last line: ratios from dft_overhead.py's variants (None where a variant failed)."""
    mem = ratio(results, "peak_mib", "dft-fused", "trl-dft")
    return {
        "dft_sft_step_time_ratio": ratio(results, "step_s", "dft-fused", "sft-fused"),
        "dft_sft_peak_memory_ratio": ratio(results, "peak_mib", "dft-fused", "sft-fused"),
        "ours_over_trl_dft_peak_memory": mem,
        "ours_over_trl_dft_peak_memory_goal": 0.8,
        "goal_met": None if mem is None else mem <= 0.8,
        "ours_over_trl_dft_step_time": ratio(results, "step_s", "dft-fused", "trl-dft"),
        "full_logits_dft_over_trl_dft_peak_memory": ratio(results, "peak_mib", "dft-logits", "trl-dft"),
        "device": device_name, "seq": args.seq, "batch": args.batch, "layers": args.layers,
        "gradient_checkpointing": True, "dtype": "float32",
        "step_s": {v: round(r["step_s"], 5) for v, r in results.items()},
        "peak_mib": {v: r["peak_mib"] for v, r in results.items()},
    }


def run_paths(wanted, common: list[str], deadline: float, args, log_dir: Path) -> None:
    """Each group of wanted paths in its own process, until the deadline; one line per path."""
    for group in GROUPS:
        paths = [p for p in group if p in wanted]
        left = deadline - time.monotonic()
        if not paths:
            continue
        if left < 10:
            lines = {p: f"skipped: time budget spent (--budget-s {args.budget_s:g})" for p in paths}
        else:
            out, err, rc, timed_out = run_child([sys.executable, __file__, "--child", ",".join(paths), *common],
                                                min(args.path_timeout_s, left), log_dir / f"{paths[0]}.log")
            lines = parse_results(out, err, rc, paths, timed_out)
        for p in paths:
            print(f"{p}: {lines[p]}", flush=True)


def run_figures(common: list[str], deadline: float, args, log_dir: Path) -> dict:
    """Each of dft_overhead.py's variants in its own process (its own peak memory); {variant: its JSON}."""
    return dict(json_children("figures", "--measure", VARIANTS, common, deadline, args, log_dir))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=30, help="decoder layers of the random model (SmolLM2-135M: 30)")
    ap.add_argument("--seq", type=int, default=2048, help="tokens per sequence for the figures")
    ap.add_argument("--batch", type=int, default=4, help="sequences per batch")
    ap.add_argument("--steps", type=int, default=5, help="timed optimizer steps per figure variant")
    ap.add_argument("--budget-s", type=float, default=450, help="stop starting paths after this many seconds")
    ap.add_argument("--path-timeout-s", type=float, default=150, help="most seconds one path's process may take")
    ap.add_argument("--only", help="comma-separated paths to run (default: all)")
    ap.add_argument("--no-figures", action="store_true", help="skip the step-time / peak-memory figures")
    ap.add_argument("--log-dir", help="where each process's full output goes (default: a temporary folder)")
    ap.add_argument("--allow-cpu", action="store_true", help="run on CPU when there is no GPU (slow)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--memory-case", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args) or 0
    if args.measure:
        return measure_child(args) or 0
    if args.memory_case:
        return memory_child(args) or 0

    start = time.monotonic()
    wanted = args.only.split(",") if args.only else [*PATHS, MEMORY]
    unknown = sorted(set(wanted) - {*PATHS, MEMORY})
    if unknown:
        raise SystemExit(f"--only: unknown path(s) {', '.join(unknown)} (known: {', '.join(PATHS)})")
    failures = import_everything()
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(f"no GPU (torch {torch.__version__}: torch.cuda.is_available() is False): nothing run; "
              + ("imports ok" if not failures else "imports failed: " + "; ".join(failures)))
        return 1 if failures else 0
    import transformers
    import trl

    device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="gpu-check-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"gpu_check on {device_name}: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"trl {trl.__version__}; random SmolLM2-135M architecture, {args.layers} layers; logs in {log_dir}", flush=True)
    for failure in failures:
        print(f"import {failure}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))  # the model and every trained copy of it
    try:
        model_dir = build_random_model(work / "model", args.layers)
        common = ["--model-dir", str(model_dir), "--work-dir", str(work), "--seq", str(args.seq),
                  "--batch", str(args.batch), "--steps", str(args.steps)]
        deadline = start + args.budget_s
        reserve = 0 if args.no_figures else FIGURES_RESERVE_S
        run_paths(wanted, common, deadline - reserve - (MEMORY_RESERVE_S if MEMORY in wanted else 0), args, log_dir)
        memory = run_memory(common, deadline - reserve, args, log_dir, model_dir) if MEMORY in wanted else {}
        results = {} if args.no_figures else run_figures(common, deadline, args, log_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({**figures(results, args, device_name), "memory_plan": memory,
                      "wall_s": round(time.monotonic() - start, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
