"""Benchmark: the Ray verifier (verify_frame, chunks as Ray tasks) against a single-process loop.

Half the samples are MATH-500 reference solutions graded against their own answer or another problem's
answer (repeated, so math-verify's parse caches help); the other half are distinct synthetic responses
ending in \boxed{\frac{a}{b}} against a gold that is equal (\frac{2a}{2b}) or not (\frac{a+1}{b}),
so that most of the work cannot come from caches.

    .venv/bin/python benchmarks/verify.py --samples 20000 [--chunk-size 512] [--num-cpus 2]

Last line: {"speedup": ..., "same_labels": true, ...}. Target: speedup >= 1.7 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def load_pairs() -> list[tuple[str, str]]:
    env = os.environ.get("WORKBENCH_BENCHMARKS_DIR")
    root = Path(env) if env else Path(__file__).resolve().parents[1] / "evaluators" / "data"  # shipped copy
    rows = [json.loads(line) for line in (root / "math500.jsonl").read_text().splitlines() if line.strip()]
    pairs = [(r["solution"], r["answer"]) for r in rows]
    pairs += [(r["solution"], rows[(i + 1) % len(rows)]["answer"]) for i, r in enumerate(rows)]
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--num-cpus", type=int, default=2)
    args = ap.parse_args()

    import random

    import polars as pl
    import ray

    from data_gen.config import VerifyConfig
    from data_gen.verifier import grade_many, verify_frame

    real = load_pairs()
    rng = random.Random(0)
    pairs = []
    for i in range(args.samples):
        if i % 2 == 0:
            pairs.append(real[(i // 2) % len(real)])
        else:
            a, b = rng.randint(1, 10**6), rng.randint(2, 10**6)
            gold = f"\\frac{{{2 * a}}}{{{2 * b}}}" if rng.random() < 0.5 else f"\\frac{{{a + 1}}}{{{b}}}"
            pairs.append((f"Step {i}: we simplify and get \\boxed{{\\frac{{{a}}}{{{b}}}}}.", gold))
    df = pl.DataFrame({"response": [p[0] for p in pairs], "answer": [p[1] for p in pairs]})
    cfg = VerifyConfig(chunk_size=args.chunk_size)

    start = time.perf_counter()
    single = grade_many(df["response"].to_list(), df["answer"].to_list(), cfg.timeout_s)
    single_s = time.perf_counter() - start

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    verify_frame(df.head(args.num_cpus), cfg.model_copy(update={"chunk_size": 1}))  # start the workers
    start = time.perf_counter()
    out = verify_frame(df, cfg)
    ray_s = time.perf_counter() - start
    ray.shutdown()

    same = out["correct"].to_list() == [g.correct for g in single]
    print(json.dumps({"samples": args.samples, "single_s": single_s, "ray_s": ray_s,
                      "share_correct": float(out["correct"].mean()),
                      "statuses": dict(out["status"].value_counts().iter_rows()),
                      "speedup": single_s / ray_s, "same_labels": same}))


if __name__ == "__main__":
    main()
