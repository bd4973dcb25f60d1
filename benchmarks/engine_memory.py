"""Benchmark: peak resident memory of one sampling engine actor (and its children: vLLM's engine core)
against the Ray `memory` it reserves, `engine_memory_gb` of workbench/resources.py (issue 16, item 7).

Starts the actor as the generate stage does (`start_engines`), samples once, and polls the resident size
(RSS) of the actor's process tree every 0.2 s. RSS counts shared library pages once per process, so the
sum slightly overstates what two processes add to a node.

    .venv/bin/python benchmarks/engine_memory.py --model smollm2-135m --engine vllm --prompts 16 --n 4
    .venv/bin/python benchmarks/engine_memory.py --model toy:arith --engine hf --prompts 64 --n 4 --max-tokens 96

Last line: {"peak_gb": ..., "reserved_gb": ..., "reserved_over_peak": ...}. Target: reserved_over_peak in
[1.0, 1.5] (enough, without starving the node).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time


def tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toy:arith", help="a workbench model spec or HF folder")
    ap.add_argument("--engine", choices=["vllm", "hf"], default="hf")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--kv-cache-gb", type=float, default=1.0)
    ap.add_argument("--hf-batch-size", type=int, default=64)
    ap.add_argument("--in-process", action="store_true", help="vllm_in_process")
    args = ap.parse_args()

    import ray

    from data_gen.config import SamplerConfig
    from data_gen.engines import engine_memory, start_engines, stop_engines
    from data_gen.samplers import render_prompts
    from workbench.console import quiet_local_ray
    from workbench.models import resolve_model
    from workbench.template import TemplateConfig

    model = str(resolve_model(args.model))
    cfg = SamplerConfig(engine=args.engine, max_tokens=args.max_tokens, kv_cache_gb=args.kv_cache_gb,
                        hf_batch_size=args.hf_batch_size, vllm_in_process=args.in_process)
    quiet_local_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    reserved, _ = engine_memory(model, cfg, args.n)
    prompts = render_prompts(model, [f"What is {i} + {i + 7}?" for i in range(args.prompts)], TemplateConfig())
    logs = tempfile.mkdtemp(prefix="bench-engine-")
    t0 = time.time()
    (actor,) = start_engines(model, cfg, seed=0, log_dir=logs, n=args.n)
    pid = ray.get(actor.__ray_call__.remote(lambda self: __import__("os").getpid()))
    peak, done = [0], threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(pid))
            time.sleep(0.2)

    threading.Thread(target=poll, daemon=True).start()
    out = ray.get(actor.generate.remote(prompts, args.n))
    done.set()
    peak[0] = max(peak[0], tree_rss(pid))
    stop_engines([actor])
    ray.shutdown()
    tokens = sum(c.num_tokens for row in out for c in row)
    peak_gb = peak[0] / 2**30
    print(f"{args.engine} {args.model}: {tokens} tokens in {time.time() - t0:.0f} s (start included); "
          f"peak RSS {peak_gb:.2f} GiB, reserved {reserved:g} GiB; engine log in {logs}")
    print(json.dumps({"engine": args.engine, "model": args.model, "peak_gb": round(peak_gb, 2),
                      "reserved_gb": reserved, "reserved_over_peak": round(reserved / peak_gb, 2)}))


if __name__ == "__main__":
    main()
