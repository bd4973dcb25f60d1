"""Benchmark: one DFT run on 1 worker against the same run on 2 FSDP2 workers (Ray Train, gloo on CPU).

Both go through `workbench.trainers.launch.launch`, the door every train entry takes: 1 worker is one Ray task,
2 workers a Ray Train `TorchTrainer` whose workers shard SmolLM2-135M with `fully_shard` per decoder layer and
the root (workbench/trainers/launch.py). Same base model, data, seed and global batch (each worker takes half
of every global batch), float32, `--steps` optimizer steps.

- loss_max_abs_diff: the largest |loss_1 - loss_2| over the logged steps (same batches, so ~float noise);
- per_worker_peak_memory_ratio: the larger of the two workers' peaks over the single worker's. Peak = the
  process's peak resident set (VmHWM, reset through /proc/self/clear_refs just before the model loads) minus
  its resident set at that moment: what weights, gradients, AdamW states, activations and the final export
  added. FSDP2 shards parameters, gradients and AdamW states, so the target is <= 0.75.
- step_time_ratio: median step time of 2 workers over 1 (on 2 shared cores this measures little).

    .venv/bin/python benchmarks/distributed.py [--steps 3 --batch 4 --micro 2 --max-length 64 --rows 16]

Last line: {"loss_max_abs_diff": ..., "per_worker_peak_memory_ratio": ..., ...}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
from pathlib import Path

from dft_overhead import rss_kib  # benchmarks/ is on sys.path when this script runs


def worker(base: str, out: str, cfg: dict, rows: int) -> dict:
    """One training process (of 1 or 2): the DFT trainer on toy problems, with its memory peak."""
    import polars as pl
    import torch  # noqa: F401 - imported before the baseline, like every library the run needs
    import transformers  # noqa: F401

    from workbench.registry import get_trainer
    from workbench.template import TemplateConfig
    from workbench.trainers.base import TrainJob
    from workbench.trainers.checkpoint import rank_world

    pairs = [(7 * i % 50, 13 * i % 40) for i in range(rows)]
    data = pl.DataFrame({"problem": [f"What is {a} + {b}?" for a, b in pairs],
                         "response": [f"{a} + {b} = {a + b}, so the answer is \\boxed{{{a + b}}}." for a, b in pairs]})
    plugin = get_trainer("dft")
    job = TrainJob(base_model=Path(base), data=data, template=TemplateConfig(), out_dir=Path(out), seed=0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = rss_kib("VmRSS")
    result = plugin().train(job, plugin.Config(**cfg))
    peak = rss_kib("VmHWM") - before
    rank, world = rank_world()
    (Path(out) / f"peak-rank{rank}.json").write_text(json.dumps({"peak_kib": peak}))
    return {"steps": result.steps, "world": world}


def run(base: str, out: Path, workers: int, cfg: dict, rows: int) -> tuple[list[dict], list[int]]:
    import ray

    from workbench.recipe import TrainEntry
    from workbench.trainers.launch import launch

    entry = TrainEntry(name=f"bench-{workers}", algorithm="dft", num_workers=workers, num_cpus=1)
    ray.get(launch(entry, worker, base, str(out), cfg, rows, out_dir=out))
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    peaks = [json.loads(p.read_text())["peak_kib"] for p in sorted(out.glob("peak-rank*.json"))]
    return logged, peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4, help="global batch (sequences per optimizer step)")
    ap.add_argument("--micro", type=int, default=2, help="per-device micro-batch")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--rows", type=int, default=16)
    args = ap.parse_args()

    import dft_overhead
    import ray

    from workbench.models import resolve_model

    ray.cloudpickle.register_pickle_by_value(dft_overhead)  # the workers run `worker`, which uses rss_kib

    base = str(resolve_model(args.model))
    cfg = {"learning_rate": 1e-4, "batch_size": args.batch, "per_device_batch_size": args.micro,
           "max_steps": args.steps, "lr_scheduler": "constant", "warmup_ratio": 0.0, "max_length": args.max_length}
    # glibc returns freed blocks at once, so the resident set tracks live tensors (as in dft_overhead.py)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}})
    with tempfile.TemporaryDirectory(prefix="wb-dist-") as tmp:
        one, peak_one = run(base, Path(tmp) / "one", 1, cfg, args.rows)
        two, peak_two = run(base, Path(tmp) / "two", 2, cfg, args.rows)
    ray.shutdown()
    assert [r["step"] for r in one] == [r["step"] for r in two], (one, two)
    diffs = [abs(a["loss"] - b["loss"]) for a, b in zip(one, two)]
    times = {name: [b["time_s"] - a["time_s"] for a, b in itertools.pairwise(rows)] or [rows[0]["time_s"]]
             for name, rows in (("one", one), ("two", two))}
    for a, b in zip(one, two):
        print(f"step {a['step']}: loss 1 worker {a['loss']:.7f}  2 workers {b['loss']:.7f}  "
              f"|diff| {abs(a['loss'] - b['loss']):.2e}")
    print(f"peak memory (MiB): 1 worker {peak_one[0] / 1024:.0f}; 2 workers "
          + ", ".join(f"rank {i} {p / 1024:.0f}" for i, p in enumerate(peak_two)))
    print(json.dumps({
        "model": args.model, "steps": args.steps, "global_batch": args.batch, "max_length": args.max_length,
        "loss_max_abs_diff": max(diffs),
        "per_worker_peak_memory_ratio": round(max(peak_two) / peak_one[0], 4),
        "peak_memory_mib": {"one": round(peak_one[0] / 1024, 1), "two": [round(p / 1024, 1) for p in peak_two]},
        "step_time_ratio": round(statistics.median(times["two"]) / statistics.median(times["one"]), 3),
        "target": {"loss_max_abs_diff": 1e-5, "per_worker_peak_memory_ratio": 0.75},
    }))


if __name__ == "__main__":
    main()
