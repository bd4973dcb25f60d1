"""The Table 2 report: one row per method (base, then every train entry), Average@k per benchmark.

Inputs are, per method and seed, an eval folder (`summary.parquet`, fractions, and the per-sample
`<benchmark>.parquet` files), per-method budget ledgers and the tuning trials; outputs:

    table2.csv        method, <benchmark> ... (percent, mean over seeds), average     accuracies only
    table2_seeds.csv  method, seed, benchmark, avg_at_k, ci_low, ci_high (percent)     every seed's numbers
    significance.csv  method, reference, benchmark, difference, ci_low, ci_high, p_value, p_permutation,
                      p_holm, significant, seeds, n_problems, resamples (differences in points of percent)
    spread.csv        method, benchmark, seeds, mean, seed_sd, seed_min, seed_max (percent; several seeds)
    table2.md         the table with 95% intervals, significance marks and each method's budget (samples,
                      FLOPs), whether the comparison set can reach alpha, the across-seed spread, the tuning
                      trials, the budget ledger, the paper's numbers
    table2.png        grouped bars per benchmark, one bar per method, with the 95% interval as whiskers
    costs.csv         method, steps, then the ledger columns of workbench/budget.py (samples,
                      generated_tokens, trained_tokens, forwarded_tokens, parameters, flops, wall_s,
                      gen_wall_s), mean over seeds
    tuning.csv        every sweep trial (workbench/sweep.py tuning_table)

`average` is the plain mean of the benchmark columns, as in the paper. With one seed a cell's interval is
the evaluator's bootstrap over problems; with several it is the crossed bootstrap over seeds and problems
(evaluators/stats.py), so it includes the training-seed variance. Every method is compared with
`report.reference` (default dft) on the same problems and seeds: the paired difference, its crossed
interval and two-sided p-value; a cell is marked when the Holm-adjusted p-value over all the comparisons
is below `report.alpha`. The number of resamples grows with the number of comparisons m so that the
smallest attainable adjusted p, 2m / (B + 1), is at most alpha / 10 (`stats.resamples_for`); table2.md says
so, or says plainly that the set cannot reach alpha.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from evaluators.paper import PAPER_BENCHMARKS, paper_row
from evaluators.stats import (
    holm,
    paired_bootstrap,
    paired_permutation_test,
    resamples_for,
    seed_mean_interval,
    smallest_holm_p,
)

COST_SCHEMA = {"method": pl.Utf8, "steps": pl.Int64, "samples": pl.Int64, "generated_tokens": pl.Int64,
               "trained_tokens": pl.Int64, "forwarded_tokens": pl.Int64, "parameters": pl.Int64,
               "flops": pl.Float64, "wall_s": pl.Float64, "gen_wall_s": pl.Float64}


def build_table(summaries: dict[str, pl.DataFrame], benchmarks: list[str] | None = None) -> pl.DataFrame:
    """Rows in `summaries` order (method -> summary frame); Average@k in percent, 2 decimals."""
    if benchmarks is None:
        benchmarks = next(iter(summaries.values()))["benchmark"].to_list() if summaries else []
    rows = []
    for method, summary in summaries.items():
        by_bench = {r["benchmark"]: r for r in summary.iter_rows(named=True)}
        missing = [b for b in benchmarks if b not in by_bench]
        if missing:
            raise ValueError(f"report: eval summary of {method!r} has no row for {', '.join(missing)}")
        values = [100 * by_bench[b]["avg_at_k"] for b in benchmarks]
        rows.append({"method": method, **{b: round(v, 2) for b, v in zip(benchmarks, values)},
                     "average": round(sum(values) / len(values), 2) if values else 0.0})
    schema = {"method": pl.Utf8, **{b: pl.Float64 for b in benchmarks}, "average": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def intervals(summaries: dict[str, pl.DataFrame]) -> dict[tuple[str, str], tuple[float, float]]:
    """{(method, benchmark): (low, high)} in percent."""
    return {(m, r["benchmark"]): (100 * r["ci_low"], 100 * r["ci_high"])
            for m, s in summaries.items() for r in s.iter_rows(named=True)}


def _md(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def render_table(table: pl.DataFrame, cis: dict | None = None, k: int | None = None, marks: set | None = None,
                 note: str | None = None, budgets: dict[str, dict] | None = None) -> str:
    """The accuracy table as markdown; with `cis`, each cell also shows its 95% interval; cells whose
    (method, benchmark) is in `marks` get a `*`; `note` replaces the line under the table's title; `budgets`
    ({method: ledger row}) adds each method's samples and FLOPs beside its scores."""
    benchmarks = [c for c in table.columns if c not in ("method", "average")]
    title = f"Average@{k} (%)" if k else "Average@k (%)"
    rows = []
    for r in table.iter_rows(named=True):
        cells = [r["method"]]
        for b in benchmarks:
            cell = f"{r[b]:.2f}"
            if cis and (r["method"], b) in cis:
                low, high = cis[(r["method"], b)]
                cell += f" [{low:.1f}, {high:.1f}]"
            cells.append(cell + (" *" if marks and (r["method"], b) in marks else ""))
        cells.append(f"{r['average']:.2f}")
        if budgets is not None:
            led = budgets.get(r["method"])
            cells += [f"{led['samples']:,}", f"{led['flops']:.3g}"] if led else ["-", "-"]
        rows.append(cells)
    head = note or (f"**{title}**, 95% bootstrap interval over problems in brackets" if cis else f"**{title}**")
    extra = ["samples", "FLOPs"] if budgets is not None else []
    return "\n".join([head, ""] + _md(["method", *benchmarks, "average", *extra], rows))


def render_costs(costs: pl.DataFrame, matched: str | None = None) -> str:
    from workbench.budget import FLOPS_FORMULA

    rows = [[r["method"], str(r["steps"]), f"{r['samples']:,}", f"{r['generated_tokens']:,}",
             f"{r['trained_tokens']:,}", f"{r['forwarded_tokens']:,}", f"{r['flops']:.3g}", f"{r['wall_s']:.1f}",
             f"{r['gen_wall_s']:.1f}"] for r in costs.iter_rows(named=True)]
    head = (f"**Budget ledger** (mean over seeds; samples and generated tokens: completions sampled, the offline "
            f"methods charged the generation their data came from; {FLOPS_FORMULA}; budget matched: "
            f"{matched or 'none'})")
    return "\n".join([head, ""] + _md(
        ["method", "steps", "samples", "generated tokens", "trained tokens", "forwarded tokens", "FLOPs",
         "train wall (s)", "generate wall (s)"], rows))


def render_paper(table: pl.DataFrame, paper: str, algorithms: dict[str, str] | None = None) -> str:
    """Ours beside the paper's numbers: `ours / paper (ours - paper)` per cell, for matching rows."""
    algorithms = algorithms or {}
    cols = [c for c in PAPER_BENCHMARKS if c in table.columns] + ["average"]
    rows = []
    for r in table.iter_rows(named=True):
        ref = paper_row(paper, r["method"], algorithms.get(r["method"]))
        if ref is None:
            rows.append([r["method"]] + ["n/a in the paper"] * len(cols))
            continue
        rows.append([r["method"]] + [f"{r[c]:.2f} / {ref[c]:.2f} ({r[c] - ref[c]:+.2f})" for c in cols])
    note = (f"**Ours vs the paper's {paper.replace('table', 'Table ')}** (ours / paper (difference), percent; "
            f"paper: Qwen2.5-Math-1.5B, Average@16)")
    if len(cols) < len(PAPER_BENCHMARKS) + 1:
        note += "; our average is over our benchmarks only"
    return "\n".join([note, ""] + _md(["method", *cols], rows))


def plot_table(table: pl.DataFrame, cis: dict, path: Path, k: int | None = None) -> None:
    """Grouped bars: one group per benchmark (and the average), one bar per method, CI whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    benchmarks = [c for c in table.columns if c not in ("method",)]
    methods = table["method"].to_list()
    x = np.arange(len(benchmarks))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(benchmarks) + 0.3 * len(methods)), 4))
    for i, r in enumerate(table.iter_rows(named=True)):
        values = [r[b] for b in benchmarks]
        lows = [values[j] - cis.get((r["method"], b), (values[j], values[j]))[0] for j, b in enumerate(benchmarks)]
        highs = [cis.get((r["method"], b), (values[j], values[j]))[1] - values[j] for j, b in enumerate(benchmarks)]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=r["method"],
               yerr=[np.maximum(lows, 0), np.maximum(highs, 0)], capsize=2)
    ax.set_xticks(x, benchmarks)
    ax.set_ylabel(f"Average@{k} (%)" if k else "Average@k (%)")
    ax.legend(fontsize="small", ncols=min(4, len(methods)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def problem_scores(folder: Path, benchmark: str) -> pl.DataFrame:
    """Per problem of one eval folder's benchmark: problem_id, score (share of its k samples correct)."""
    path = Path(folder) / f"{benchmark}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"report: {path} is missing (the per-sample file of that evaluation)")
    return pl.read_parquet(path, columns=["problem_id", "correct"]).group_by("problem_id").agg(
        pl.col("correct").cast(pl.Float64).mean().alias("score")).sort("problem_id")


def score_matrices(evals: dict[str, dict[int, Path]], benchmarks: list[str]) -> dict[tuple[str, str], np.ndarray]:
    """{(method, benchmark): scores[seed, problem]}, problems in one order shared by every method and seed."""
    out, ids = {}, {}
    for method, by_seed in evals.items():
        for b in benchmarks:
            rows = []
            for seed, folder in by_seed.items():
                frame = problem_scores(folder, b)
                ids.setdefault(b, frame["problem_id"].to_list())
                if frame["problem_id"].to_list() != ids[b]:
                    raise ValueError(f"report: {folder}/{b}.parquet holds other problems than the other methods' "
                                     f"(seed {seed}); paired comparisons need the same problems")
                rows.append(frame["score"].to_numpy())
            out[(method, b)] = np.stack(rows)
    return out


SIGNIFICANCE_SCHEMA = {"method": pl.Utf8, "reference": pl.Utf8, "benchmark": pl.Utf8, "difference": pl.Float64,
                       "ci_low": pl.Float64, "ci_high": pl.Float64, "p_value": pl.Float64,
                       "p_permutation": pl.Float64, "p_holm": pl.Float64, "significant": pl.Boolean,
                       "seeds": pl.Int64, "n_problems": pl.Int64, "resamples": pl.Int64}


def significance(matrices: dict, methods: list[str], benchmarks: list[str], reference: str, alpha: float = 0.05,
                 samples: int = 2000) -> pl.DataFrame:
    """Every method against `reference` per benchmark (percent points; see the module docstring). `samples` is
    the least number of resamples: it grows with the number of comparisons (stats.resamples_for)."""
    pairs = [(m, b) for m in methods if m != reference for b in benchmarks]
    samples = resamples_for(len(pairs), alpha, samples)
    rows = []
    for method, b in pairs:
        a, ref = matrices[(method, b)], matrices[(reference, b)]
        boot = paired_bootstrap(a, ref, samples=samples)
        rows.append({"method": method, "reference": reference, "benchmark": b,
                     "difference": 100 * boot["difference"], "ci_low": 100 * boot["low"],
                     "ci_high": 100 * boot["high"], "p_value": boot["p_value"],
                     "p_permutation": paired_permutation_test(a, ref, samples=samples),
                     "seeds": a.shape[0], "n_problems": a.shape[1], "resamples": samples})
    for row, adjusted in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = adjusted
        row["significant"] = adjusted < alpha
    return pl.DataFrame(rows, schema=SIGNIFICANCE_SCHEMA)


def reach_statement(comparisons: int, samples: int, alpha: float) -> str:
    """One plain sentence: whether this family of comparisons can reach `alpha` at all."""
    floor = smallest_holm_p(comparisons, samples)
    if floor < alpha:
        return (f"{comparisons} comparisons, {samples:,} bootstrap resamples: the smallest attainable Holm-adjusted "
                f"p is 2 x {comparisons} / ({samples:,} + 1) = {floor:.4g}, below alpha = {alpha}.")
    return (f"**This comparison set cannot reach alpha = {alpha}**: with {comparisons} comparisons and {samples:,} "
            f"resamples the smallest attainable Holm-adjusted p is {floor:.4g}, so no difference here can be called "
            f"significant, whatever the data.")


def render_significance(sig: pl.DataFrame, alpha: float) -> str:
    rows = [[r["method"], r["benchmark"], f"{r['difference']:+.2f}", f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]",
             f"{r['p_value']:.4f}", f"{r['p_holm']:.4f}", "yes" if r["significant"] else "no"]
            for r in sig.iter_rows(named=True)]
    ref = sig["reference"][0]
    head = (f"**Each method minus {ref}** (points of Average@k; paired over the same problems and seeds; "
            f"crossed bootstrap interval and two-sided p-value; significant: Holm-adjusted "
            f"p < {alpha} over these {sig.height} comparisons). " + reach_statement(sig.height, int(sig["resamples"][0]),
                                                                                  alpha))
    return "\n".join([head, ""] + _md(
        ["method", "benchmark", "difference", "95% interval", "p", "p (Holm)", "significant"], rows, right_from=2))


def spread_table(matrices: dict, methods: list[str], benchmarks: list[str]) -> pl.DataFrame:
    """Per method and benchmark: the across-seed mean, standard deviation (ddof 1) and range of the per-seed
    Average@k (percent)."""
    rows = []
    for m in methods:
        for b in benchmarks:
            per_seed = 100 * matrices[(m, b)].mean(axis=1)
            rows.append({"method": m, "benchmark": b, "seeds": len(per_seed), "mean": float(per_seed.mean()),
                         "seed_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0,
                         "seed_min": float(per_seed.min()), "seed_max": float(per_seed.max())})
    return pl.DataFrame(rows, schema={"method": pl.Utf8, "benchmark": pl.Utf8, "seeds": pl.Int64,
                                      "mean": pl.Float64, "seed_sd": pl.Float64, "seed_min": pl.Float64,
                                      "seed_max": pl.Float64})


def render_spread(spread: pl.DataFrame) -> str:
    benchmarks = spread["benchmark"].unique(maintain_order=True).to_list()
    rows = []
    for m in spread["method"].unique(maintain_order=True).to_list():
        cells = [m]
        for b in benchmarks:
            r = spread.filter((pl.col("method") == m) & (pl.col("benchmark") == b)).row(0, named=True)
            cells.append(f"{r['seed_sd']:.2f} ({r['seed_min']:.1f}-{r['seed_max']:.1f})")
        rows.append(cells)
    n = int(spread["seeds"].max())
    head = (f"**Across-seed spread** (standard deviation of the {n} per-seed Average@k, in points, and their range; "
            f"with {n} seeds the standard deviation itself is uncertain by about +-{100 / (2 * (n - 1)) ** 0.5:.0f}%)")
    return "\n".join([head, ""] + _md(["method", *benchmarks], rows))


def render_tuning(tuning: pl.DataFrame, summary: list[dict] | None = None) -> str:
    """Every trial (values, validation score +- standard error, extension, chosen), then per method the flags:
    a choice still at an edge of what was searched, a trial count that differs from the others'."""
    rows = [[r["method"], str(r["trial"]), r["values"], f"{r['validation_avg_at_k']:.2f} +- {r['validation_se']:.2f}",
             "yes" if r["extension"] else "", "**chosen**" if r["chosen"] else ""]
            for r in tuning.iter_rows(named=True)]
    head = ("**Tuning** (every trial on the validation split, Average@k +- standard error over its problems; chosen: "
            "the smallest learning rate within one standard error of the best; extension: a trial added because "
            "the choice sat at an edge of the range; the chosen values trained every seed)")
    parts = ["\n".join([head, ""] + _md(["method", "trial", "values", "validation", "extension", ""], rows,
                                         right_from=3))]
    flags = []
    for r in summary or []:
        if r["at_edge"]:
            flags.append(f"- {r['method']}: the chosen {r['chosen']} is still at the {r['at_edge']} edge of what was "
                         f"searched after {r['extensions']} extension(s): its optimum is not bracketed.")
        if r["trials_differ"]:
            flags.append(f"- {r['method']}: {r['trials']} trials, a different count from the other methods'.")
    if summary:
        parts.append("\n".join(flags) if flags else "Every method's choice is interior to its searched range, and "
                     "every method had the same number of trials.")
    return "\n\n".join(parts)


def _seed_rows(summaries: dict[str, dict[int, pl.DataFrame]]) -> pl.DataFrame:
    rows = [{"method": m, "seed": seed, "benchmark": r["benchmark"], "avg_at_k": 100 * r["avg_at_k"],
             "ci_low": 100 * r["ci_low"], "ci_high": 100 * r["ci_high"]}
            for m, by_seed in summaries.items() for seed, s in by_seed.items() for r in s.iter_rows(named=True)]
    return pl.DataFrame(rows, schema={"method": pl.Utf8, "seed": pl.Int64, "benchmark": pl.Utf8,
                                      "avg_at_k": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64})


def write_report(out: Path, evals: dict[str, dict[int, Path]], costs: pl.DataFrame | None = None,
                 benchmarks: list[str] | None = None, paper: str | None = None, plot: bool = True,
                 algorithms: dict[str, str] | None = None, reference: str | None = "dft", alpha: float = 0.05,
                 tuning: pl.DataFrame | None = None, bootstrap_samples: int = 2000,
                 tuning_summary: list[dict] | None = None, matched: str | None = None) -> pl.DataFrame:
    """Write the report files (module docstring) into `out` from `evals` = {method: {seed: eval folder}};
    `costs`: one ledger row per trained method (COST_SCHEMA); `matched`: the budget unit matched."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {m: {seed: pl.read_parquet(Path(f) / "summary.parquet") for seed, f in by_seed.items()}
                 for m, by_seed in evals.items()}
    seed_rows = _seed_rows(summaries)
    seed_rows.write_csv(out / "table2_seeds.csv")
    means = {m: seed_rows.filter(pl.col("method") == m).group_by("benchmark", maintain_order=True).agg(
        (pl.col("avg_at_k").mean() / 100).alias("avg_at_k")) for m in evals}
    table = build_table(means, benchmarks)
    benchmarks = [c for c in table.columns if c not in ("method", "average")]
    n_seeds = max(len(by_seed) for by_seed in evals.values())
    matrices = score_matrices(evals, benchmarks)
    if n_seeds == 1:
        cis = intervals({m: next(iter(by_seed.values())) for m, by_seed in summaries.items()})
        note = None
    else:
        cis = {}
        for (m, b), scores in matrices.items():
            ci = seed_mean_interval(scores, samples=bootstrap_samples)
            cis[(m, b)] = (100 * ci["low"], 100 * ci["high"])
        note = f"mean over {n_seeds} seeds; 95% crossed bootstrap interval (seeds and problems) in brackets"
    ks = {int(k) for by_seed in summaries.values() for s in by_seed.values() for k in s["k"].to_list()}
    k = ks.pop() if len(ks) == 1 else None
    table.write_csv(out / "table2.csv")
    marks, extra_parts = set(), []
    if reference in evals:
        sig = significance(matrices, list(evals), benchmarks, reference, alpha, bootstrap_samples)
        sig.write_csv(out / "significance.csv")
        marks = {(r["method"], r["benchmark"]) for r in sig.iter_rows(named=True) if r["significant"]}
        note = (note or "95% bootstrap interval over problems in brackets") + \
            f"; * differs from {reference} (Holm-adjusted p < {alpha}, table below)"
        extra_parts.append(render_significance(sig, alpha))
    elif reference:
        extra_parts.append(f"No row named {reference!r}: no significance tests (set report.reference to a row).")
    if n_seeds > 1:
        spread = spread_table(matrices, list(evals), benchmarks)
        spread.write_csv(out / "spread.csv")
        extra_parts.append(render_spread(spread))
    title = f"**Average@{k} (%)**" if k else "**Average@k (%)**"
    budgets = None
    if costs is not None:
        costs = pl.DataFrame(costs, schema=COST_SCHEMA)
        budgets = {r["method"]: r for r in costs.iter_rows(named=True)}
        note = (note or "95% bootstrap interval over problems in brackets") + \
            f"; samples and FLOPs: each method's budget (ledger below; budget matched: {matched or 'none'})"
    parts = [render_table(table, cis, k, marks, f"{title}, {note}" if note else None, budgets), *extra_parts]
    if tuning is not None:
        tuning.write_csv(out / "tuning.csv")
        parts.append(render_tuning(tuning, tuning_summary))
    if costs is not None:
        costs.write_csv(out / "costs.csv")
        parts.append(render_costs(costs, matched))
    if paper:
        parts.append(render_paper(table, paper, algorithms))
    (out / "table2.md").write_text("\n\n".join(parts) + "\n")
    if plot:
        plot_table(table, cis, out / "table2.png", k)
    return table
