"""The `eval/<model>` and `report` stages of the pipeline.

- `evaluate_stage`: one model (the base model, or one train entry's checkpoint) on the recipe's
  benchmarks with the recipe's `evaluate` settings and its one prompt template.
- `report_stage`: gathers every eval summary into Table 2 (rows: base, then the train entries in recipe
  order) and the cost of each method, from the train and generate manifests.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from evaluators.evaluate import benchmark_refs, evaluate_model
from evaluators.report import render_table, write_report
from workbench.rundir import read_manifest
from workbench.stage import StageContext

__all__ = ["evaluate_stage", "render_table", "report_stage"]


def evaluate_stage(ctx: StageContext) -> dict:
    """Evaluate `ctx.extra["model_path"]` as row `ctx.extra["model_name"]`; writes into ctx.out."""
    name = ctx.extra["model_name"]
    path = ctx.extra["model_path"]
    cfg = ctx.recipe.evaluate
    summary = evaluate_model(str(path), cfg.benchmarks, cfg, ctx.recipe.template, ctx.out, name,
                             ctx.recipe.run.seed, verify=ctx.recipe.verify)
    counts = {"benchmarks": summary.height, "problems": int(summary["n_problems"].sum()), "k": cfg.k}
    for r in summary.iter_rows(named=True):
        counts[f"avg@{cfg.k}/{r['benchmark']}"] = round(100 * r["avg_at_k"], 2)
    return counts


def _manifest(folder: Path | None) -> dict:
    if folder is None:
        return {}
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"report: {Path(folder) / 'manifest.json'} is missing (did that stage finish?)")
    return manifest


def method_costs(inputs: dict[str, Path], methods: list[str]) -> pl.DataFrame:
    """Per trained method: samples generated for its data, training tokens and steps, wall times.

    Methods trained on positives or pairs are charged the generate stage's samples and wall time (they
    all share one offline data set); methods on prompts (PPO, GRPO) or demonstrations are not, and an
    online trainer's own rollouts count when its manifest reports `samples_generated`.
    """
    gen = _manifest(inputs.get("generate"))
    gen_samples = int(gen.get("counts", {}).get("samples", 0))
    gen_wall = float(gen.get("wall_time_s", 0.0))
    rows = []
    for method in methods:
        manifest = _manifest(inputs[f"train/{method}"])
        counts = manifest.get("counts", {})
        offline = counts.get("data") in ("positives", "pairs")
        rows.append({
            "method": method,
            "samples_generated": (gen_samples if offline else 0) + int(counts.get("samples_generated", 0)),
            "train_tokens": int(counts.get("train_tokens", 0)),
            "steps": int(counts.get("steps", 0)),
            # the task's own training time; the manifest's wall time also counts waiting in Ray's queue
            "train_wall_s": float(counts.get("train_time_s", manifest.get("wall_time_s", 0.0))),
            "generate_wall_s": gen_wall if offline else 0.0,
        })
    return pl.DataFrame(rows, schema={"method": pl.Utf8, "samples_generated": pl.Int64, "train_tokens": pl.Int64,
                                      "steps": pl.Int64, "train_wall_s": pl.Float64, "generate_wall_s": pl.Float64})


def report_stage(ctx: StageContext) -> dict:
    """Write report/table2.{md,csv,png} and costs.csv from the eval summaries and manifests."""
    methods = [entry.name for entry in ctx.recipe.train]
    summaries = {}
    for name in ["base"] + methods:
        folder = ctx.inputs.get(f"eval/{name}")
        if folder is None or not (Path(folder) / "summary.parquet").is_file():
            raise FileNotFoundError(f"report: no eval summary for {name!r} (expected eval/{name}/summary.parquet)")
        summaries[name] = pl.read_parquet(Path(folder) / "summary.parquet")
    benchmarks = [ref.name for ref in benchmark_refs(ctx.recipe.evaluate.benchmarks)]
    costs = method_costs(ctx.inputs, methods)
    algorithms = {entry.name: entry.algorithm for entry in ctx.recipe.train}
    table = write_report(ctx.out, summaries, costs, benchmarks, ctx.recipe.report.paper,
                         ctx.recipe.report.plot, algorithms)
    return {"rows": table.height, "benchmarks": len(benchmarks),
            **{f"average/{r['method']}": r["average"] for r in table.iter_rows(named=True)}}
