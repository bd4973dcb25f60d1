"""Grading whole tables: the verify stage, `workbench verify-file` and the evaluator run these.

`verify_frame` grades every row (columns `response`, `answer`) with the recipe's verifier in Ray CPU
tasks over chunks of `chunk_size`, under the rules of `data_gen.verifiers.base` (main thread, deadline,
statuses, error budget), and adds `correct`, `pred`, `status`.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from data_gen.config import VerifyConfig
from data_gen.io import read_rows
from data_gen.verifiers.base import STATUSES, VerifierError, check_chunk, grade_chunk, make_verifier
from workbench.console import ensure_ray


def verify_frame(df: pl.DataFrame, cfg: VerifyConfig) -> pl.DataFrame:
    """Grade every row of `df` with cfg.verifier in Ray tasks; return df with correct, pred, status.

    Raises VerifierError when the verifier cannot run here, or a chunk's share of status=error exceeds
    cfg.max_error_rate.
    """
    for col in ("response", "answer"):
        if col not in df.columns:
            raise VerifierError(f"verify: input has no {col!r} column (columns: {df.columns})")
    verifier = make_verifier(cfg.verifier, cfg.options)
    verifier.check_ready()  # refuse before any work (e.g. the code verifier without a sandbox)
    ray = ensure_ray()
    task = ray.remote(num_cpus=cfg.num_cpus_per_task, max_retries=0)(grade_chunk)
    responses = [r if r is not None else "" for r in df["response"].to_list()]
    golds = [str(a) if a is not None else "" for a in df["answer"].to_list()]
    starts = list(range(0, len(df), cfg.chunk_size))
    futures = [task.remote(cfg.verifier, cfg.options, responses[s:s + cfg.chunk_size],
                           golds[s:s + cfg.chunk_size], cfg.timeout_s) for s in starts]
    # Hard outer guard: each sample costs at most ~2 deadlines (gold + grade), so a chunk that runs far
    # past that is stuck somewhere signals cannot reach (a C call); fail loudly instead of hanging.
    limit = cfg.chunk_size * 2 * (cfg.timeout_s + verifier.grace_s) + 60
    rows: list[tuple] = []
    for i, (start, fut) in enumerate(zip(starts, futures)):
        try:
            chunk = ray.get(fut, timeout=limit)
        except ray.exceptions.GetTimeoutError:
            for f in futures:
                ray.cancel(f, force=True)
            raise VerifierError(f"verify: chunk {i} (rows {start}-{start + cfg.chunk_size - 1}) did not finish "
                                f"in {limit:.0f} s; a sample is stuck past its timeout") from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            if isinstance(cause, VerifierError):
                raise VerifierError(str(cause)) from None
            raise
        check_chunk(i, start, chunk, cfg.max_error_rate)
        rows.extend(chunk)
    return df.with_columns(
        pl.Series("correct", [r[0] for r in rows], dtype=pl.Boolean),
        pl.Series("pred", [r[1] for r in rows], dtype=pl.String),
        pl.Series("status", [r[2] for r in rows], dtype=pl.String),
    )


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a .jsonl or .parquet file; a malformed file raises one line naming it (and the row)."""
    rows = read_rows(path, VerifierError)
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def status_counts(df: pl.DataFrame) -> dict[str, int]:
    return {s: int((df["status"] == s).sum()) for s in STATUSES}


def verify_file(in_path, out_path, cfg: VerifyConfig) -> dict:
    """Grade a jsonl/parquet file with `response` and `answer` columns; write it with correct/pred/status."""
    df = read_table(in_path)
    for col in ("response", "answer"):
        if col not in df.columns:
            raise VerifierError(f"{in_path}: no {col!r} column (columns: {df.columns})")
    df = df.with_columns(pl.col("answer").cast(pl.String), pl.col("response").cast(pl.String))
    out = verify_frame(df, cfg)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix == ".parquet":
        out.write_parquet(out_path)
    else:
        out.write_ndjson(out_path)
    n = len(out)
    return {"samples": n, "correct": int(out["correct"].sum()),
            "share_correct": (out["correct"].sum() / n) if n else math.nan, **status_counts(out)}


def verify_benchmarks(df: pl.DataFrame, cfg: VerifyConfig) -> pl.DataFrame:
    """`verify_frame` where each row's `benchmark` names its verifier (the evaluator's grading).

    A registered benchmark's `verifier` grades its rows (cfg's options apply when it is cfg.verifier);
    rows of anything else (e.g. a sweep's validation split) use cfg.verifier. Row order is kept.
    """
    from workbench.registry import PluginError, get_benchmark

    def verifier_of(name: str) -> str:
        try:
            return getattr(get_benchmark(name), "verifier", cfg.verifier)
        except PluginError:
            return cfg.verifier

    by_name = {name: verifier_of(name) for name in df["benchmark"].unique(maintain_order=True).to_list()}
    if set(by_name.values()) <= {cfg.verifier}:
        return verify_frame(df, cfg)
    df = df.with_row_index("_row")
    parts = []
    for verifier in dict.fromkeys(by_name.values()):
        rows = df.filter(pl.col("benchmark").is_in([n for n, v in by_name.items() if v == verifier]))
        vcfg = cfg if verifier == cfg.verifier else cfg.model_copy(update={"verifier": verifier, "options": {}})
        parts.append(verify_frame(rows, vcfg))
    return pl.concat(parts).sort("_row").drop("_row")
