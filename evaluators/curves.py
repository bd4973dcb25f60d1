"""Learning curves (the paper's Figure 1: "DFT beats SFT's best final accuracy within 10-20 steps"):
accuracy against training steps and training tokens, per method.

A train entry with `save_steps: N` and `keep_checkpoints: true` keeps a loadable model folder every N
optimizer steps (`<train stage>/checkpoints/step-<N>/model/`, workbench/trainers/checkpoint.py). Its eval
stage then scores every kept checkpoint too, with ONE set of engine actors for the whole train entry: the
engines start on the first checkpoint and load each next one's weights in place (`load_weights`: a state
dict for the transformers engine; for vLLM the checkpoint's state dict streamed through its layer-wise
`reload_weights`), instead of starting an engine per checkpoint. Per checkpoint the eval folder gets `checkpoints/step-<N>/` (per-sample parquet and
summary, as for the final model) and one `curve.parquet` with every point of the entry:

    curve.parquet   step, tokens, benchmark, avg_at_k      (step 0 is not here: the base model's eval is)

The report stage joins them (the base model as step 0 of every method, the final model as its last step):

    curves.csv      method, step, tokens, <benchmark> ... (Average@k, %), average
    curves.png      average accuracy against steps (left) and training tokens (right), one line per method

`tokens` are the training tokens (prompt + response) the optimizer had seen at that step, from the
checkpoint's info (the same count as costs.csv). With several seeds, a point is the mean over seeds.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

CURVE_SCHEMA = {"step": pl.Int64, "tokens": pl.Int64, "benchmark": pl.Utf8, "avg_at_k": pl.Float64}


def kept_checkpoints(train_dir: Path) -> list[tuple[int, Path, int]]:
    """(step, model folder, training tokens) of every checkpoint of a train stage that kept its model."""
    from workbench.trainers.checkpoint import list_checkpoints, read_info

    out = []
    for step, path in list_checkpoints(train_dir):
        if (path / "model" / "config.json").is_file():
            out.append((step, path / "model", int(read_info(path).get("train_tokens", 0))))
    return out


def curve_rows(step: int, tokens: int, summary: pl.DataFrame) -> pl.DataFrame:
    return pl.DataFrame([{"step": step, "tokens": tokens, "benchmark": r["benchmark"], "avg_at_k": r["avg_at_k"]}
                         for r in summary.iter_rows(named=True)], schema=CURVE_SCHEMA)


def evaluate_checkpoints(checkpoints: list[tuple[int, Path, int]], benchmarks: list, cfg, template,
                         out_dir: Path, name: str, seed: int, verify=None) -> pl.DataFrame:
    """Score every checkpoint ((step, model folder, tokens), in order) on `benchmarks` with one set of engine
    actors, reloading weights between checkpoints; write `out_dir/step-<N>/`; return their curve rows."""
    import ray

    from data_gen.engines import start_engines, stop_engines
    from evaluators.evaluate import benchmark_refs, evaluate_problems, load_benchmarks

    if not checkpoints:
        return pl.DataFrame(schema=CURVE_SCHEMA)
    problems = load_benchmarks(benchmark_refs(benchmarks, cfg.limit))
    engines = start_engines(str(checkpoints[0][1]), cfg, seed, log_dir=out_dir, n=cfg.k)  # out_dir/engine.log
    frames = []
    try:
        for i, (step, model_dir, tokens) in enumerate(checkpoints):
            if i > 0:
                ray.get([engine.load_weights.remote(str(model_dir)) for engine in engines])
            summary = evaluate_problems(str(model_dir), problems, cfg, template, Path(out_dir) / f"step-{step}",
                                        f"{name}@{step}", seed, verify, engines=engines)
            frames.append(curve_rows(step, tokens, summary))
    finally:
        stop_engines(engines)
    return pl.concat(frames)


def curves_table(base: pl.DataFrame, curves: dict[str, list[pl.DataFrame]], benchmarks: list[str]) -> pl.DataFrame:
    """The wide curves.csv frame: for each method, the base model at step 0, then its points (mean over the
    seeds' curve frames), Average@k in percent per benchmark and their plain mean."""
    base_rows = curve_rows(0, 0, base)
    out = []
    for method, frames in curves.items():
        points = pl.concat([base_rows, *frames]).group_by(["step", "benchmark"]).agg(
            pl.col("tokens").mean().round().cast(pl.Int64), pl.col("avg_at_k").mean())
        for (step,), group in sorted(points.group_by(["step"]), key=lambda kv: kv[0][0]):
            by_bench = dict(zip(group["benchmark"], group["avg_at_k"]))
            missing = [b for b in benchmarks if b not in by_bench]
            if missing:
                raise ValueError(f"curves: {method} at step {step} has no score for {', '.join(missing)}")
            values = [round(100 * by_bench[b], 2) for b in benchmarks]
            out.append({"method": method, "step": int(step), "tokens": int(group["tokens"][0]),
                        **dict(zip(benchmarks, values)), "average": round(sum(values) / len(values), 2)})
    schema = {"method": pl.Utf8, "step": pl.Int64, "tokens": pl.Int64, **{b: pl.Float64 for b in benchmarks},
              "average": pl.Float64}
    return pl.DataFrame(out, schema=schema)


def plot(table: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for method in table["method"].unique(maintain_order=True):
        rows = table.filter(pl.col("method") == method)
        for ax, x in zip(axes, ("step", "tokens")):
            ax.plot(rows[x].to_list(), rows["average"].to_list(), marker="o", markersize=3, label=method)
    axes[0].set_xlabel("optimizer steps")
    axes[1].set_xlabel("training tokens")
    axes[0].set_ylabel("Average@k, mean over benchmarks (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Learning curves")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_curves(out_dir: Path, base_summary: pl.DataFrame, curves: dict[str, list[pl.DataFrame]],
                 benchmarks: list[str], plot_png: bool = True) -> pl.DataFrame:
    """report/curves.csv (and .png) from the base model's summary and each method's curve frames."""
    table = curves_table(base_summary, curves, benchmarks)
    table.write_csv(Path(out_dir) / "curves.csv")
    if plot_png and table.height:
        plot(table, Path(out_dir) / "curves.png")
    return table


# ---------------------------------------------------------------------------------------------
# Performance against budget
# ---------------------------------------------------------------------------------------------
#
#    budget.csv   method, step, samples, flops, <in-distribution benchmark> (Average@k, %)
#    budget.png   that Average@k against cumulative samples (left) and estimated FLOPs (right), every method
#
# The in-distribution benchmark is the first of evaluate.benchmarks. Points are the base model (0 samples,
# 0 FLOPs), each kept checkpoint and the final model, mean over seeds. An offline method has spent its whole
# sampling budget (the generation its data came from) before its first step: its curve starts with a jump
# from 0 to those samples at the base model's score, then trains at constant samples; an online method's
# samples grow with its steps. FLOPs at step s: the generation's 2N x generated tokens, plus the rest of
# the ledger's FLOPs x s / steps (workbench/budget.py).


def budget_points(method: str, steps: int, ledger: dict, offline: bool, base: float,
                  points: list[tuple[int, float]]) -> list[dict]:
    """One method's (one seed's) budget curve from its ledger row and its (step, Average@k) points."""
    gen_flops = 2.0 * ledger["parameters"] * ledger["generated_tokens"] if offline else 0.0
    rows = [{"method": method, "step": 0, "samples": 0, "flops": 0.0, "score": base}]
    if offline:
        rows.append({"method": method, "step": 0, "samples": ledger["samples"], "flops": gen_flops, "score": base})
    for step, score in points:
        f = step / max(1, steps)
        rows.append({"method": method, "step": step,
                     "samples": ledger["samples"] if offline else round(ledger["samples"] * f),
                     "flops": gen_flops + (ledger["flops"] - gen_flops) * f, "score": score})
    return rows


def budget_table(rows: list[dict], benchmark: str) -> pl.DataFrame:
    """budget.csv from every method's and seed's budget_points rows: per method and point (step; at step 0 the
    offline methods' two points, before and after sampling), the mean over seeds."""
    frame = pl.DataFrame(rows, schema={"method": pl.Utf8, "step": pl.Int64, "samples": pl.Float64,
                                       "flops": pl.Float64, "score": pl.Float64})
    out = frame.group_by(["method", "step", (pl.col("samples") > 0).alias("_spent")], maintain_order=True).agg(
        pl.col("samples").mean().round().cast(pl.Int64), pl.col("flops").mean(),
        (100 * pl.col("score").mean()).round(2).alias(benchmark))
    return out.drop("_spent")


def catch_up(table: pl.DataFrame, benchmark: str, online: list[str], offline: list[str]) -> list[str]:
    """Where the curves cross, in words: for each online method and each offline one, the fewest samples (and
    FLOPs) at which one of the online method's trained points (checkpoints and final model) reaches the offline
    method's final score, or that none does within its budget."""
    out = []
    for on in online:
        curve = table.filter((pl.col("method") == on) & (pl.col("step") > 0)).sort("samples")  # trained points
        for off in offline:
            target = table.filter(pl.col("method") == off)[benchmark][-1]
            hit = curve.filter(pl.col(benchmark) >= target)
            if hit.height:
                r = hit.row(0, named=True)
                out.append(f"{on} reaches {off}'s final {benchmark} ({target:.2f}) at {r['samples']:,} samples "
                           f"({r['flops']:.3g} FLOPs, step {r['step']})")
            else:
                best = curve[benchmark].max()
                out.append(f"{on} never reaches {off}'s final {benchmark} ({target:.2f}) within its budget "
                           f"({curve['samples'].max():,} samples; its best point {best:.2f})")
    return out


def plot_budget(table: pl.DataFrame, benchmark: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for method in table["method"].unique(maintain_order=True):
        rows = table.filter(pl.col("method") == method)
        for ax, x in zip(axes, ("samples", "flops")):
            ax.plot(rows[x].to_list(), rows[benchmark].to_list(), marker="o", markersize=3, label=method)
    axes[0].set_xlabel("completions sampled (cumulative)")
    axes[1].set_xlabel("estimated FLOPs, cumulative (workbench/budget.py)")
    axes[0].set_ylabel(f"Average@k on {benchmark} (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Performance against budget")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_budget(out_dir: Path, rows: list[dict], benchmark: str, plot_png: bool = True) -> pl.DataFrame:
    """report/budget.csv (and .png) from budget_points rows of every method and seed."""
    table = budget_table(rows, benchmark)
    table.write_csv(Path(out_dir) / "budget.csv")
    if plot_png and table.height:
        plot_budget(table, benchmark, Path(out_dir) / "budget.png")
    return table
