"""The `eval/<model>` and `report` stages of the pipeline.

- `evaluate_stage`: one model (the base model, or one train entry's checkpoint) on the recipe's
  benchmarks with the recipe's `evaluate` settings and its one prompt template.
- `report_stage`: gathers every eval summary into Table 2 (rows: base, then the train entries in recipe
  order), each method's budget ledger (workbench/budget.py, from the train and generate manifests), the
  tuning trials, the learning curves and the performance-against-budget figure (evaluators/curves.py).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from evaluators.evaluate import benchmark_refs, evaluate_model
from evaluators.page import write_page
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


def stage_ledger(folder: Path, generate: dict | None, parameters: int | None) -> tuple[dict, dict]:
    """(ledger row, counts) of one finished train stage (workbench/budget.py read_ledger)."""
    from workbench.budget import read_ledger

    return read_ledger(folder, generate, parameters or 0), _manifest(folder).get("counts", {})


def method_costs(inputs: dict[str, Path], methods: list[str] | dict[str, list[str]],
                 parameters: int | None = None) -> pl.DataFrame:
    """Per trained method: its steps and budget ledger (workbench/budget.py), the mean over its train stages
    (one per seed). Methods on positives or pairs are charged the generate stage's samples, tokens and wall
    time (they all share one offline data set); methods on prompts (PPO, GRPO) their own rollouts."""
    from workbench.budget import LEDGER_COLUMNS, mean_rows

    gen = _manifest(inputs.get("generate")) or None
    if not isinstance(methods, dict):
        methods = {m: [f"train/{m}"] for m in methods}
    rows = []
    for method, stages in methods.items():
        per_seed = [stage_ledger(inputs[stage], gen, parameters) for stage in stages]
        steps = round(sum(int(c.get("steps", 0)) for _, c in per_seed) / len(per_seed))
        rows.append({"method": method, "steps": steps, **mean_rows([led for led, _ in per_seed])})
    from evaluators.report import COST_SCHEMA

    return pl.DataFrame(rows, schema=COST_SCHEMA).select(["method", "steps", *LEDGER_COLUMNS])


def report_stage(ctx: StageContext) -> dict:
    """Write the report (evaluators/report.py) from the eval folders of every method and seed, and the
    train manifests (costs) and tune stages (trials and chosen values)."""
    from workbench.budget import count_parameters
    from workbench.sweep import tuning_summary, tuning_table

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
    parameters = count_parameters(ctx.base_model) if ctx.base_model else None
    costs = method_costs(ctx.inputs, {m: [t for t, _ in runs[m].values()] for m in methods}, parameters)
    algorithms = {entry.name: entry.algorithm for entry in recipe.train}
    swept = any(e.sweep for e in recipe.train)
    tuning = tuning_table(recipe, ctx.inputs) if swept else None
    cfg = recipe.report
    table = write_report(ctx.out, evals, costs, benchmarks, cfg.paper, cfg.plot, algorithms, cfg.reference,
                         cfg.alpha, tuning, recipe.evaluate.bootstrap_samples,
                         tuning_summary(recipe, ctx.inputs) if swept else None, recipe.budget.match)
    figures(ctx, evals, runs, benchmarks)
    if methods:
        budget_figure(ctx, evals, runs, benchmarks[0], parameters)
    write_page(ctx.out.parent, ctx.out, recipe.model_dump(mode="json"))  # report/index.html, last: it shows all
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


def budget_figure(ctx: StageContext, evals: dict[str, dict], runs: dict, benchmark: str,
                  parameters: int | None) -> None:
    """report/budget.csv and budget.png (evaluators/curves.py): Average@k on the in-distribution benchmark (the
    first of evaluate.benchmarks) against cumulative samples and FLOPs, every method and seed, from its ledger
    and its learning-curve checkpoints (or its final model only); the crossings go to budget.md."""
    from evaluators.curves import budget_points, catch_up, write_budget

    gen = _manifest(ctx.inputs.get("generate")) or None
    rows, offline, online = [], [], []
    for method, by_seed in runs.items():
        if method == "base":
            continue
        for seed, (train, _) in by_seed.items():
            ledger, counts = stage_ledger(ctx.inputs[train], gen, parameters)
            base = _score(evals["base"][seed], benchmark)
            folder = evals[method][seed]
            if (folder / "curve.parquet").is_file():
                curve = pl.read_parquet(folder / "curve.parquet").filter(pl.col("benchmark") == benchmark)
                points = sorted(zip(curve["step"].to_list(), curve["avg_at_k"].to_list()))
            else:
                points = [(int(counts.get("steps", 0)), _score(folder, benchmark))]
            is_offline = counts.get("data") in ("positives", "pairs")
            rows += budget_points(method, int(counts.get("steps", 0)), ledger, is_offline, base, points)
        (offline if is_offline else online if counts.get("data") == "prompts" else []).append(method)
    table = write_budget(ctx.out, rows, benchmark, ctx.recipe.report.plot)
    lines = catch_up(table, benchmark, online, offline)
    (ctx.out / "budget.md").write_text(
        f"**Where the budget curves cross** ({benchmark}, mean over seeds; budget matched: "
        f"{ctx.recipe.budget.match})\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")


def _score(folder: Path, benchmark: str) -> float:
    summary = pl.read_parquet(Path(folder) / "summary.parquet").filter(pl.col("benchmark") == benchmark)
    if summary.height == 0:
        raise ValueError(f"report: {folder}/summary.parquet has no row for {benchmark}")
    return float(summary["avg_at_k"][0])
