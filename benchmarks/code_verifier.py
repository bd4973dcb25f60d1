"""Benchmark: what the code verifier's sandbox costs per program, bwrap against rlimit-only.

Grades the reference solutions of the toy code task and the HumanEval-style set (all correct) plus the same
programs with a wrong return value, in-process, once per sandbox mode, and reports programs per second and
the per-program overhead of bwrap over rlimit-only isolation.

    .venv/bin/python benchmarks/code_verifier.py [--programs 40]

Last line: {"bwrap_s_per_program": ..., "rlimit_s_per_program": ..., "bwrap_over_rlimit": ..., ...}.
"""

from __future__ import annotations

import argparse
import json
import time

from data_gen.code_tasks import humaneval_style_rows, toy_code_benchmark_rows
from data_gen.verifiers import grade_many
from data_gen.verifiers.code import CodeVerifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=40, help="Programs per mode (half right, half wrong).")
    args = parser.parse_args()
    rows = (humaneval_style_rows() + toy_code_benchmark_rows())[: args.programs // 2]
    responses = [r["solution"] for r in rows] + [r["solution"].replace("return", "return None and", 1) for r in rows]
    golds = [r["answer"] for r in rows] * 2
    result = {"programs": len(responses)}
    for mode in ("bwrap", "rlimit"):
        verifier = CodeVerifier({"sandbox": mode})
        verifier.check_ready()  # probe outside the timing
        start = time.perf_counter()
        grades = grade_many(verifier, responses, golds, timeout_s=10.0)
        elapsed = time.perf_counter() - start
        result[f"{mode}_s_per_program"] = round(elapsed / len(responses), 4)
        result[f"{mode}_correct"] = sum(g.correct for g in grades)  # expected: half of them
        print(f"{mode}: {len(responses)} programs in {elapsed:.1f}s ({verifier.version()})")
    result["bwrap_over_rlimit"] = round(result["bwrap_s_per_program"] / result["rlimit_s_per_program"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
