"""Benchmark: the cost of DFT's token weight over plain SFT, on the same model, batch and steps.

Each variant runs in its own subprocess (so that peak memory is its own), on the same randomly initialised
Qwen2 (default: vocab 32k, hidden 256, 2 layers; a large vocabulary makes the loss a visible share of the
step), the same random token batch (per-device batch x seq, first quarter of each row prompt-masked) and
the same number of optimizer steps:

- sft-logits / dft-logits: our trainer's step (`workbench.trainers.common.micro_batch_loss`, then AdamW)
  through full logits, the trainer's default on CPU;
- sft-fused / dft-fused: the same through TRL's tiled LM head, the trainer's default on GPUs;
- trl-nll / trl-dft: TRL 1.16's own `SFTTrainer` with `loss_type="nll"` / `"dft"` (the peer), unless --no-trl.
The headline ratios are DFT over SFT on the path the trainer uses on this device.

Step time: each run's fastest timed optimizer step (forward, loss, backward, AdamW) after warm-up, median
over the interleaved repeats. The fastest step is the one least disturbed by other processes on a shared
machine; the ratio of median steps is printed too.
Peak memory: on a GPU, `torch.cuda.max_memory_allocated`; on CPU, the process's peak resident set
(VmHWM) minus its resident set just before the model is built, i.e. what weights, gradients, optimizer
state and activations added at their high point (imports are done before, the same for every variant).
Children run with MALLOC_MMAP_THRESHOLD_=65536 so that glibc returns every freed tensor at once and the
resident set tracks live memory (with its adaptive threshold the peak varied by ~10% between identical runs).

    .venv/bin/python benchmarks/dft_overhead.py [--vocab 32000 --seq 256 --batch 4 --steps 6 --repeats 2 --threads 1]

Last line: {"step_time_ratio": dft/sft, "peak_memory_ratio": dft/sft, ...}. Target: <= 1.03 and <= 1.02.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def build(args, device):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=args.seq, tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg).to(device)


def batch(args, device):
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    labels = ids.clone()
    labels[:, : args.seq // 4] = -100
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device)}


def run_ours(args, variant, device) -> list[float]:
    import torch
    from trl.trainer import add_fused_lm_head

    from workbench.trainers.common import micro_batch_loss

    model = build(args, device)
    fused = variant.endswith("-fused")
    if fused:
        add_fused_lm_head(model)
    kind = "ce" if variant.startswith("sft") else "dft"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    inputs = batch(args, device)
    n = int((inputs["labels"][:, 1:] != -100).sum())
    times = []
    for _ in range(args.warmup + args.steps):
        sync(device)
        t0 = time.perf_counter()
        loss, _ = micro_batch_loss(model, None, inputs, n, kind, fused, {})
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - t0)
    return times[args.warmup:]


def run_trl(args, variant, device) -> list[float]:
    import tempfile

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from workbench.toy_model import build_byte_tokenizer

    model = build(args, device)
    inputs = batch(args, "cpu")
    ids = inputs["input_ids"].tolist()
    mask = [[0] * (args.seq // 4) + [1] * (args.seq - args.seq // 4)] * args.batch
    data = Dataset.from_dict({"input_ids": ids, "completion_mask": mask})
    times, t0 = [], [0.0]

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            sync(device)
            t0[0] = time.perf_counter()

        def on_step_end(self, *a, **k):
            sync(device)
            times.append(time.perf_counter() - t0[0])

    cfg = SFTConfig(output_dir=tempfile.mkdtemp(), loss_type=variant.split("-")[1], max_steps=args.warmup + args.steps,
                    per_device_train_batch_size=args.batch, learning_rate=1e-5, lr_scheduler_type="constant",
                    completion_only_loss=True, max_length=args.seq, report_to="none", save_strategy="no",
                    logging_steps=10_000, disable_tqdm=True, use_cpu=device == "cpu", dataloader_num_workers=0,
                    bf16=False)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=build_byte_tokenizer(),
                         callbacks=[Timer()])
    trainer.train()
    return times[args.warmup:]


def sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # every variant imports the same before the baseline
    import datasets  # noqa: F401
    import transformers  # noqa: F401
    import trl.trainer  # noqa: F401
    from trl import SFTTrainer  # noqa: F401

    import workbench.trainers.common  # noqa: F401

    base = rss_kib("VmRSS")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = (run_trl if args.variant.startswith("trl") else run_ours)(args, args.variant, device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else (rss_kib("VmHWM") - base) / 1024
    print(json.dumps({"variant": args.variant, "device": device, "step_s": min(times),
                      "median_step_s": statistics.median(times), "peak_mib": round(peak, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6, help="timed optimizer steps per variant")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each variant, interleaved; medians kept")
    ap.add_argument("--no-trl", action="store_true", help="skip TRL's own SFTTrainer variants")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # set in the per-variant subprocess
    args = ap.parse_args()
    if args.variant:
        return child(args)

    variants = ["sft-logits", "dft-logits", "sft-fused", "dft-fused"] + ([] if args.no_trl else ["trl-nll", "trl-dft"])
    passthrough = [a for a in sys.argv[1:] if a != "--no-trl"]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            out = subprocess.run([sys.executable, __file__, *passthrough, "--variant", v], capture_output=True,
                                 text=True, check=False, env=env)
            if out.returncode != 0:
                sys.exit(f"variant {v} failed: {out.stderr.strip().splitlines()[-1]}")
            results[v].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[v][-1]), flush=True)

    def med(key):
        return {v: statistics.median(r[key] for r in rs) for v, rs in results.items()}

    step, median_step, mem = med("step_s"), med("median_step_s"), med("peak_mib")
    device = results["sft-logits"][0]["device"]
    path = "fused" if device == "cuda" else "logits"

    def ratio(values, a, b):
        return round(values[a] / values[b], 4)

    summary = {
        "step_time_ratio": ratio(step, f"dft-{path}", f"sft-{path}"),
        "peak_memory_ratio": ratio(mem, f"dft-{path}", f"sft-{path}"),
        "median_step_time_ratio": ratio(median_step, f"dft-{path}", f"sft-{path}"),
        "device": device,
        "trainer_path": path,
        "other_path_step_time_ratio": ratio(step, "dft-fused", "sft-fused") if path == "logits"
        else ratio(step, "dft-logits", "sft-logits"),
        "step_s": {v: round(s, 4) for v, s in step.items()},
        "peak_mib": mem,
    }
    if not args.no_trl:
        summary["trl_step_time_ratio"] = ratio(step, "trl-dft", "trl-nll")
        summary["trl_peak_memory_ratio"] = ratio(mem, "trl-dft", "trl-nll")
        summary["ours_over_trl_dft_step_time"] = ratio(step, f"dft-{path}", "trl-dft")
        summary["ours_over_trl_dft_peak_memory"] = ratio(mem, f"dft-{path}", "trl-dft")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
