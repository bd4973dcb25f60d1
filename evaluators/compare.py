"""`workbench compare RUN_A RUN_B [...]`: finished runs side by side, paired where they can be.

One table over the methods and benchmarks every run has: each run's Average@k (percent) with its 95%
interval, and for every run after the first its difference from RUN_A, paired over the problems both
evaluated, with a 95% interval and a two-sided p-value (evaluators/stats.py's `paired_bootstrap`; p is
not adjusted for the number of comparisons). A run's interval is the one its own report shows: the
evaluator's bootstrap over problems for one seed, the crossed bootstrap over seeds and problems
(`seed_mean_interval`) for several.

Pairing: with the same number of seeds in both runs, seed i of one is paired with seed i of the other
(independent trainings; the difference's interval then carries both runs' seed variance); otherwise each
problem's score is first averaged over seeds, and the interval covers the problems only (the output says
so). Methods or benchmarks that not every run has, benchmarks where two runs share no problem, and
evaluation settings that differ between runs (k, temperature, prompt template, verifier, base model, ...)
are listed under the table with the reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from evaluators.report import problem_scores
from evaluators.stats import paired_bootstrap, seed_mean_interval

SEEDED = re.compile(r"^(?P<method>.+)@s(?P<seed>\d+)$")
# the evaluation settings that change what a score means (not where or how fast it ran)
SETTINGS = [("evaluate", k) for k in ("k", "temperature", "top_p", "max_tokens", "dtype", "template")] + \
    [("template", None), ("verify", "verifier"), ("verify", "options"), ("model", None)]


@dataclass
class Run:
    """One finished run directory's evaluations: {method: {seed: eval folder}}, in its report's row order."""

    path: Path
    label: str
    evals: dict[str, dict[int, Path]]
    settings: dict[str, str] = field(default_factory=dict)
    samples: int = 2000

    @property
    def seeds(self) -> list[int]:
        return sorted({s for by_seed in self.evals.values() for s in by_seed})


def load_run(path: Path, label: str | None = None) -> Run:
    """Every finished eval/<method>[@s<seed>]/ of a run directory, with its evaluation settings."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"compare: {path} is not a run directory")
    evals: dict[str, dict[int, Path]] = {}
    settings, samples = {}, 2000
    for folder in sorted(path.glob("eval/*/")):
        manifest = folder / "manifest.json"
        if not (folder / "summary.parquet").is_file() or not manifest.is_file():
            continue  # unfinished, or not an evaluation
        m = json.loads(manifest.read_text())
        named = SEEDED.match(folder.name)
        method = named["method"] if named else folder.name
        evals.setdefault(method, {})[int(m.get("seed", 0))] = folder
        config = m.get("config", {})
        samples = int(config.get("evaluate", {}).get("bootstrap_samples") or samples)
        for section, key in SETTINGS:
            if section in config and (key is None or key in config[section]):
                value = config[section] if key is None else config[section][key]
                if section != "model" or method == "base":  # a trained model's eval names no base model
                    settings[f"{section}.{key}" if key else section] = json.dumps(value, sort_keys=True)
    if not evals:
        raise FileNotFoundError(f"compare: {path}/eval/ holds no finished evaluation (summary.parquet + "
                                "manifest.json); has the run evaluated anything?")
    order = _row_order(path)
    evals = {m: evals[m] for m in sorted(evals, key=lambda m: (order.index(m) if m in order else len(order), m))}
    return Run(path, label or path.name, evals, settings, samples)


def _row_order(path: Path) -> list[str]:
    manifest = path / "report" / "manifest.json"
    if manifest.is_file():
        return ["base", *json.loads(manifest.read_text()).get("config", {}).get("rows", [])]
    return ["base"]


def benchmarks_of(run: Run, method: str) -> list[str]:
    folder = next(iter(run.evals[method].values()))
    return pl.read_parquet(folder / "summary.parquet")["benchmark"].to_list()


def scores(run: Run, method: str, benchmark: str) -> pl.DataFrame:
    """problem_id and one column per seed (`s<seed>`): each problem's share of correct samples."""
    frame = None
    for seed, folder in sorted(run.evals[method].items()):
        one = problem_scores(folder, benchmark).rename({"score": f"s{seed}"})
        frame = one if frame is None else frame.join(one, on="problem_id", how="inner")
    return frame


def run_score(run: Run, method: str, benchmark: str, frame: pl.DataFrame) -> tuple[float, float, float]:
    """(Average@k, low, high) in percent, as the run's own report computes them."""
    if len(run.evals[method]) == 1:
        summary = pl.read_parquet(next(iter(run.evals[method].values())) / "summary.parquet")
        r = summary.filter(pl.col("benchmark") == benchmark).row(0, named=True)
        return 100 * r["avg_at_k"], 100 * r["ci_low"], 100 * r["ci_high"]
    ci = seed_mean_interval(frame.drop("problem_id").to_numpy().T, samples=run.samples)
    return 100 * ci["mean"], 100 * ci["low"], 100 * ci["high"]


def paired(a: pl.DataFrame, b: pl.DataFrame, samples: int) -> tuple[dict, int, bool] | None:
    """`a - b` over the problems both evaluated: (paired_bootstrap result, shared problems, seeds paired);
    None when they share no problem."""
    b = b.rename({c: f"ref_{c}" for c in b.columns if c != "problem_id"})
    both = a.join(b, on="problem_id", how="inner")
    if both.height == 0:
        return None
    ma = both.select([c for c in a.columns if c != "problem_id"]).to_numpy().T
    mb = both.select([c for c in b.columns if c != "problem_id"]).to_numpy().T
    seeds_paired = ma.shape[0] == mb.shape[0]
    if not seeds_paired:
        ma, mb = ma.mean(axis=0), mb.mean(axis=0)
    return paired_bootstrap(ma, mb, samples=samples), both.height, seeds_paired


def compare(runs: list[Run], samples: int = 2000) -> tuple[list[list[str]], list[str], list[str]]:
    """(table rows, header, notes): the shared methods x benchmarks, each run's score, each later run
    minus the first; notes say what was left out and why."""
    ref, others = runs[0], runs[1:]
    notes = []
    shared = [m for m in ref.evals if all(m in r.evals for r in others)]
    for r in runs:
        missing = [m for m in r.evals if m not in shared]
        if missing:
            notes.append(f"left out: method(s) {', '.join(missing)} of {r.label} (not in every run)")
    if not shared:
        raise ValueError("compare: the runs share no method (no eval/<method> in every run)")
    header = ["method", "benchmark", *[r.label for r in runs]]
    for r in others:
        header += [f"{r.label} − {ref.label}", f"p ({r.label})"]
    rows, partial, unpaired = [], set(), set()
    for method in shared:
        benches = [b for b in benchmarks_of(ref, method) if all(b in benchmarks_of(r, method) for r in others)]
        for r in runs:
            extra = [b for b in benchmarks_of(r, method) if b not in benches]
            if extra:
                notes.append(f"left out: {method} on {', '.join(extra)} of {r.label} (not evaluated in every run)")
        for b in benches:
            frames = [scores(r, method, b) for r in runs]
            row = [method, b]
            for r, frame in zip(runs, frames):
                mean, low, high = run_score(r, method, b, frame)
                row.append(f"{mean:.2f} [{low:.1f}, {high:.1f}]")
            for r, frame in zip(others, frames[1:]):
                result = paired(frame, frames[0], samples)
                if result is None:
                    notes.append(f"no paired difference for {method} on {b}: {r.label} and {ref.label} "
                                 "share no problem")
                    row += ["-", "-"]
                    continue
                boot, n, seeds_paired = result
                mark = ""
                if n < max(frame.height, frames[0].height):
                    partial.add(f"{b} ({r.label} vs {ref.label}: {n} shared of {frame.height} and "
                                f"{frames[0].height})")
                    mark = " †"
                if not seeds_paired:
                    unpaired.add(f"{r.label} ({len(r.seeds)} seed(s)) vs {ref.label} ({len(ref.seeds)})")
                row += [f"{100 * boot['difference']:+.2f} [{100 * boot['low']:+.1f}, {100 * boot['high']:+.1f}]{mark}",
                        f"{boot['p_value']:.4f}"]
            rows.append(row)
    notes += [f"† differences over the shared problems only: {p}" for p in sorted(partial)]
    notes += [f"seed counts differ, {u}: each problem averaged over seeds first, so that difference's interval "
              "covers the problems, not the seed variance" for u in sorted(unpaired)]
    for r in others:
        for key in sorted(set(ref.settings) | set(r.settings)):
            if ref.settings.get(key) != r.settings.get(key):
                notes.append(f"evaluation setting differs: {key} is {r.settings.get(key, 'unset')} in {r.label}, "
                             f"{ref.settings.get(key, 'unset')} in {ref.label} (scores compared as they are)")
    return rows, header, notes


def labels(paths: list[Path]) -> list[str]:
    """Each run's folder name; the whole path where two runs share a name."""
    names = [Path(p).name for p in paths]
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths)]


def render(runs: list[Run], rows: list[list[str]], header: list[str], notes: list[str], samples: int) -> str:
    """The comparison as markdown: which runs, the table, then what was left out and why."""
    ref = runs[0]
    lines = ["**Runs**: " + "; ".join(f"{r.label} = `{r.path}` ({len(r.seeds)} seed(s))" for r in runs), "",
             (f"**Average@k (%)** per run [95% interval]; each later run minus {ref.label} in points, paired "
              f"over the problems both evaluated [95% interval], with its two-sided bootstrap p ({samples} "
              "resamples, not adjusted for the number of comparisons)"), "",
             "| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if notes:
        lines += ["", "**Left out, and differences to keep in mind**", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def render_html(markdown_text: str, runs: list[Run]) -> str:
    """The same comparison as one self-contained page in the report page's style."""
    from evaluators.html import document, inline_md, markdown

    body, notes = markdown_text.split("\n**Left out", 1) if "\n**Left out" in markdown_text else (markdown_text, "")
    html = markdown(body)
    if notes:
        items = [line[2:] for line in notes.splitlines() if line.startswith("- ")]
        html += "<h3>Left out, and differences to keep in mind</h3><ul>" + \
            "".join(f"<li>{inline_md(i)}</li>" for i in items) + "</ul>"
    title = "Compare: " + " vs ".join(r.label for r in runs)
    return document(title, f"{len(runs)} runs; written by <code>workbench compare</code>",
                    [("comparison", "Comparison", html)])


def compare_runs(paths: list[Path], samples: int = 2000) -> tuple[str, list[Run]]:
    """Load the runs and return the comparison as markdown (and the runs)."""
    if len(paths) < 2:
        raise ValueError("compare: give at least two run directories")
    runs = [load_run(p, label) for p, label in zip(paths, labels(paths))]
    rows, header, notes = compare(runs, samples)
    return render(runs, rows, header, notes, samples), runs
