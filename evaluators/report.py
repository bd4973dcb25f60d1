"""The Table 2 report: one row per method (base, then every train entry), Average@k per benchmark.

Inputs are eval summaries (`eval/<method>/summary.parquet`, fractions) and per-method costs; outputs:

    table2.csv   method, <benchmark> ... (percent), average        accuracies only
    table2.md    the same with 95% intervals, the costs, and the paper's numbers when asked for
    table2.png   grouped bars per benchmark, one bar per method, with the 95% interval as whiskers
    costs.csv    method, samples_generated, train_tokens, steps, train_wall_s, generate_wall_s

`average` is the plain mean of the benchmark columns, as in the paper.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from evaluators.paper import PAPER_BENCHMARKS, paper_row

COST_SCHEMA = {"method": pl.Utf8, "samples_generated": pl.Int64, "train_tokens": pl.Int64, "steps": pl.Int64,
               "train_wall_s": pl.Float64, "generate_wall_s": pl.Float64}


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


def render_table(table: pl.DataFrame, cis: dict | None = None, k: int | None = None) -> str:
    """The accuracy table as markdown; with `cis`, each cell also shows its 95% interval."""
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
            cells.append(cell)
        rows.append(cells + [f"{r['average']:.2f}"])
    return "\n".join([f"**{title}**, 95% bootstrap interval over problems in brackets" if cis else
                      f"**{title}**", ""] + _md(["method", *benchmarks, "average"], rows))


def render_costs(costs: pl.DataFrame) -> str:
    rows = [[r["method"], str(r["samples_generated"]), str(r["train_tokens"]), str(r["steps"]),
             f"{r['train_wall_s']:.1f}", f"{r['generate_wall_s']:.1f}"] for r in costs.iter_rows(named=True)]
    return "\n".join(["**Costs**", ""] + _md(
        ["method", "samples generated", "training tokens", "steps", "train wall (s)", "generate wall (s)"], rows))


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


def write_report(out: Path, summaries: dict[str, pl.DataFrame], costs: pl.DataFrame | None = None,
                 benchmarks: list[str] | None = None, paper: str | None = None, plot: bool = True,
                 algorithms: dict[str, str] | None = None) -> pl.DataFrame:
    """Write table2.csv / .md / .png and costs.csv into `out`; returns the accuracy table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(summaries, benchmarks)
    cis = intervals(summaries)
    ks = {int(k) for s in summaries.values() for k in s["k"].to_list()}
    k = ks.pop() if len(ks) == 1 else None
    table.write_csv(out / "table2.csv")
    parts = [render_table(table, cis, k)]
    if costs is not None:
        costs = pl.DataFrame(costs, schema=COST_SCHEMA)
        costs.write_csv(out / "costs.csv")
        parts.append(render_costs(costs))
    if paper:
        parts.append(render_paper(table, paper, algorithms))
    (out / "table2.md").write_text("\n\n".join(parts) + "\n")
    if plot:
        plot_table(table, cis, out / "table2.png", k)
    return table
