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
    template = cfg.prompt_template(ctx.recipe.template)  # evaluate.template, else the run's one template
    summary = evaluate_model(str(path), cfg.benchmarks, cfg, template, ctx.out, name,
                             ctx.extra.get("seed", ctx.recipe.run.seed), verify=ctx.recipe.verify)
    counts = {"benchmarks": summary.height, "problems": int(summary["n_problems"].sum()), "k": cfg.k}
    for r in summary.iter_rows(named=True):
        counts[f"avg@{cfg.k}/{r['benchmark']}"] = round(100 * r["avg_at_k"], 2)
    train = [Path(p) for d, p in ctx.inputs.items() if d.startswith("train/")]
    if train:  # learning curves: the entry's kept checkpoints, one set of engines (evaluators/curves.py)
        counts["checkpoints"] = evaluate_curve(ctx, train[0], summary)
    return counts


def evaluate_curve(ctx: StageContext, train_dir: Path, final: pl.DataFrame) -> int:
    """Score the kept checkpoints of `train_dir` before its final step; write curve.parquet with them and
    the final model; return how many checkpoints were scored (0: no curve)."""
    from evaluators.curves import curve_rows, evaluate_checkpoints, kept_checkpoints

    found = kept_checkpoints(train_dir)
    if not found:
        return 0
    done = (read_manifest(train_dir) or {}).get("counts", {})
    last = int(done.get("steps", found[-1][0]))
    found = [c for c in found if c[0] < last]  # the final model was scored above
    cfg = ctx.recipe.evaluate
    frame = evaluate_checkpoints(found, cfg.benchmarks, cfg, cfg.prompt_template(ctx.recipe.template),
                                 ctx.out / "checkpoints",
                                 ctx.extra["model_name"], ctx.extra.get("seed", ctx.recipe.run.seed),
                                 ctx.recipe.verify)
    pl.concat([frame, curve_rows(last, int(done.get("train_tokens", 0)), final)]).write_parquet(
        ctx.out / "curve.parquet")
    return len(found)


def _manifest(folder: Path | None) -> dict:
    if folder is None:
        return {}
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"report: {Path(folder) / 'manifest.json'} is missing (did that stage finish?)")
    return manifest


def method_costs(inputs: dict[str, Path], methods: list[str] | dict[str, list[str]]) -> pl.DataFrame:
    """Per trained method: samples generated for its data, training tokens and steps, wall times.

    Methods trained on positives or pairs are charged the generate stage's samples and wall time (they
    all share one offline data set); methods on prompts (PPO, GRPO) or demonstrations are not, and an
    online trainer's own rollouts count when its manifest reports `samples_generated`. `methods` maps
    each method to its train stages (one per seed); a run's numbers are the mean over them.
    """
    gen = _manifest(inputs.get("generate"))
    gen_samples = int(gen.get("counts", {}).get("samples", 0))
    gen_wall = float(gen.get("wall_time_s", 0.0))
    if not isinstance(methods, dict):
        methods = {m: [f"train/{m}"] for m in methods}
    rows = []
    for method, stages in methods.items():
        per_seed = []
        for stage in stages:
            manifest = _manifest(inputs[stage])
            counts = manifest.get("counts", {})
            offline = counts.get("data") in ("positives", "pairs")
            per_seed.append({
                "samples_generated": (gen_samples if offline else 0) + int(counts.get("samples_generated", 0)),
                "train_tokens": int(counts.get("train_tokens", 0)),
                "steps": int(counts.get("steps", 0)),
                # the task's own training time; the manifest's wall time also counts waiting in Ray's queue
                "train_wall_s": float(counts.get("train_time_s", manifest.get("wall_time_s", 0.0))),
                "generate_wall_s": gen_wall if offline else 0.0,
            })
        mean = {k: sum(r[k] for r in per_seed) / len(per_seed) for k in per_seed[0]}
        rows.append({"method": method, **{k: round(v) if k in ("samples_generated", "train_tokens", "steps")
                                          else v for k, v in mean.items()}})
    return pl.DataFrame(rows, schema={"method": pl.Utf8, "samples_generated": pl.Int64, "train_tokens": pl.Int64,
                                      "steps": pl.Int64, "train_wall_s": pl.Float64, "generate_wall_s": pl.Float64})


def report_stage(ctx: StageContext) -> dict:
    """Write the report (evaluators/report.py) from the eval folders of every method and seed, and the
    train manifests (costs) and tune stages (trials and chosen values)."""
    from workbench.sweep import tuning_table

    recipe = ctx.recipe
    methods = [entry.name for entry in recipe.train]
    # {method: {seed: (train stage or None, eval stage)}} from the plan; a single run's names otherwise
    runs = ctx.extra.get("runs") or {m: {recipe.run.seed: (None if m == "base" else f"train/{m}", f"eval/{m}")}
                                     for m in ["base", *methods]}
    evals = {}
    for name, by_seed in runs.items():
        evals[name] = {}
        for seed, (_, stage) in by_seed.items():
            folder = ctx.inputs.get(stage)
            if folder is None or not (Path(folder) / "summary.parquet").is_file():
                raise FileNotFoundError(f"report: no eval summary for {name!r} (expected {stage}/summary.parquet)")
            evals[name][seed] = Path(folder)
    benchmarks = [ref.name for ref in benchmark_refs(recipe.evaluate.benchmarks)]
    costs = method_costs(ctx.inputs, {m: [t for t, _ in runs[m].values()] for m in methods})
    algorithms = {entry.name: entry.algorithm for entry in recipe.train}
    tuning = tuning_table(recipe, ctx.inputs) if any(e.sweep for e in recipe.train) else None
    cfg = recipe.report
    table = write_report(ctx.out, evals, costs, benchmarks, cfg.paper, cfg.plot, algorithms, cfg.reference,
                         cfg.alpha, tuning, recipe.evaluate.bootstrap_samples)
    figures(ctx, evals, runs, benchmarks)
    return {"rows": table.height, "benchmarks": len(benchmarks), "seeds": len(recipe.run.seed_list),
            **{f"average/{r['method']}": r["average"] for r in table.iter_rows(named=True)}}


def figures(ctx: StageContext, evals: dict[str, dict], runs: dict, benchmarks: list[str]) -> None:
    """The paper's Figure 1 (report/curves.*, when train entries kept checkpoints) and Figure 2
    (report/token_probs.*, when report.token_probs_rows > 0)."""
    from evaluators.curves import write_curves
    from evaluators.token_probs import write_token_probs
    from workbench.train_stage import DATA_FILES

    methods = [m for m in evals if m != "base"]
    curves = {m: [pl.read_parquet(f / "curve.parquet") for f in evals[m].values() if (f / "curve.parquet").is_file()]
              for m in methods}
    curves = {m: frames for m, frames in curves.items() if frames}
    cfg = ctx.recipe.report
    if curves:
        base = pl.concat([pl.read_parquet(f / "summary.parquet") for f in evals["base"].values()])
        write_curves(ctx.out, base, curves, benchmarks, cfg.plot)
    if cfg.token_probs_rows:
        data_path = Path(ctx.inputs["build"]) / DATA_FILES[cfg.token_probs_data]
        if not data_path.is_file():
            raise FileNotFoundError(f"report.token_probs_data: {data_path} not found (the build stage writes it)")
        models = {"base": ctx.base_model}
        for m in methods:  # the first seed's final model of each method
            train_stage = next(iter(runs[m].values()))[0]
            models[m] = Path(ctx.inputs[train_stage]) / "model"
        max_length = max([getattr(e.config, "max_length", 2048) for e in ctx.recipe.train] or [2048])
        write_token_probs(ctx.out, models, pl.read_parquet(data_path), ctx.recipe.template, cfg.token_probs_rows,
                          cfg.token_probs_data, max_length=max_length, plot_png=cfg.plot)
