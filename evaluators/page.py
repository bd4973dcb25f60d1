"""report/index.html: one self-contained page per run, written by the report stage.

Sections, in this order, each only when the run has its inputs (nothing is shown empty):

    headline     table2.md's tables (Average@k per method x benchmark, intervals, significance marks,
                 each method minus the reference, ours beside the paper's numbers) and table2.png
    tuning       table2.md's tuning part (trials, validation scores +- standard errors, the choice, edge
                 flags) and report/tuning.csv (every column), when the recipe sweeps
    budget       table2.md's budget ledger and report/costs.csv (every column), budget.png (performance
                 against budget), budget.md, budget.csv
    curves       report/curves.png and curves.csv (the paper's Figure 1)
    token-probs  report/token_probs.png and token_probs.md (Figure 2)
    other        any other PNG, CSV or markdown file in report/ that no section above shows
    data         build/stats.json (prompts, samples, pass@1, pass@n, positives, pairs, truncated, verifier
                 statuses) and a few example positives and pairs
    provenance   the code's commit, package versions, model and data fingerprints, seeds, the recipe as
                 run, and every stage's wall time, from the stages' manifest.json files

The page reads the files the run wrote rather than their exact columns, so new columns show up as they
appear. Figures are inline PNGs, styles inline, no script: it reads the same with scripts off, and
opening it makes no request (tests/test_page.py checks that in Chromium).
"""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path

import polars as pl
import yaml

from evaluators.html import csv_table, document, esc, figure, fmt, markdown, table

PAGE = "index.html"
SHOWN = {"table2.md", "table2.png", "table2.csv", "table2_seeds.csv", "significance.csv", "tuning.csv",
         "costs.csv", "budget.csv", "budget.png", "budget.md", "curves.png", "curves.csv", "token_probs.png",
         "token_probs.csv", "token_probs.md", "spread.csv"}
OWN_SECTIONS = ("**Tuning", "**Costs", "**Budget")  # table2.md parts shown in their own sections
FOLDED = ("**Each method minus",)  # table2.md parts shown folded under the headline
EXAMPLES = 3  # example positives and pairs shown
CUT = 1500  # characters of one example text shown


def report_parts(text: str) -> list[str]:
    """A report markdown file cut into its parts: each starts at a bold title paragraph and holds what follows
    it (its table, its list of flags) up to the next title."""
    parts: list[str] = []
    for block in (b.strip() for b in text.split("\n\n")):
        if parts and block and not block.startswith("**"):
            parts[-1] += "\n\n" + block
        elif block:
            parts.append(block)
    return parts


def md_parts(path: Path, prefixes: tuple[str, ...]) -> str:
    """The parts of a report markdown file whose title starts with one of `prefixes`, as HTML ("" if none)."""
    if not path.is_file():
        return ""
    return markdown("\n\n".join(p for p in report_parts(path.read_text()) if p.startswith(prefixes)))


def headline(report: Path) -> str | None:
    """The accuracy table, ours beside the paper's, the bar figure; the paired tests and the per-seed
    numbers folded under it (<details> opens without script)."""
    md = report / "table2.md"
    if not md.is_file():
        return None
    parts = [p for p in report_parts(md.read_text()) if not p.startswith(OWN_SECTIONS)]
    tests = [p for p in parts if p.startswith(FOLDED)]
    body = markdown("\n\n".join(p for p in parts if p not in tests))
    if (report / "table2.png").is_file():
        body += figure(report / "table2.png", "Average@k per benchmark, one bar per method, 95% interval whiskers")
    for part in tests:
        first = part.split("\n", 1)[0].split("**")[1]
        body += f"<details><summary>{esc(first)}: the paired tests behind the marks</summary>{markdown(part)}" \
                "</details>"
    if (report / "table2_seeds.csv").is_file():
        body += "<details><summary>every seed's numbers (table2_seeds.csv)</summary>" + \
            csv_table(report / "table2_seeds.csv") + "</details>"
    return body


def tuning(report: Path) -> str | None:
    """The report's tuning table (every trial, validation score +- standard error, the choice, edge flags),
    then tuning.csv with every column it has."""
    if not (report / "tuning.csv").is_file():
        return None
    body = md_parts(report / "table2.md", ("**Tuning",))
    csv = csv_table(report / "tuning.csv")
    if not body:
        return '<p class="caption">Every trial on the validation split (tuning.csv)</p>' + csv
    return body + "<details><summary>every column (tuning.csv)</summary>" + csv + "</details>"


def budget(report: Path) -> str | None:
    """The ledger (what each method spent), the performance-against-budget figure, its notes and points."""
    parts = []
    ledger = md_parts(report / "table2.md", ("**Budget", "**Costs"))
    if (report / "costs.csv").is_file():
        csv = csv_table(report / "costs.csv")
        parts.append(ledger + "<details><summary>every column (costs.csv)</summary>" + csv + "</details>"
                     if ledger else '<p class="caption">What each method spent (costs.csv)</p>' + csv)
    elif ledger:
        parts.append(ledger)
    if (report / "budget.png").is_file():
        parts.append(figure(report / "budget.png", "Performance against budget"))
    if (report / "budget.md").is_file():
        parts.append(markdown((report / "budget.md").read_text()))
    if (report / "budget.csv").is_file():
        parts.append("<details><summary>the figure's points (budget.csv)</summary>" +
                     csv_table(report / "budget.csv") + "</details>")
    return "\n".join(parts) or None


def curves(report: Path) -> str | None:
    if not (report / "curves.png").is_file():
        return None
    body = figure(report / "curves.png", "Learning curves: accuracy against optimizer steps and training tokens")
    if (report / "curves.csv").is_file():
        body += "<details><summary>the points (curves.csv)</summary>" + csv_table(report / "curves.csv") + \
            "</details>"
    return body


def token_probs(report: Path) -> str | None:
    if not (report / "token_probs.png").is_file():
        return None
    body = figure(report / "token_probs.png", "Probabilities of the training tokens under each model")
    if (report / "token_probs.md").is_file():
        body += markdown((report / "token_probs.md").read_text())
    return body


def other_files(report: Path) -> str | None:
    """PNG, CSV and markdown files of report/ that no other section shows (a new report file is never
    hidden)."""
    parts = []
    for path in sorted(report.iterdir()):
        if path.name in SHOWN or path.suffix not in (".png", ".csv", ".md"):
            continue
        if path.suffix == ".png":
            parts.append(figure(path, path.stem))
        else:
            parts.append(f"<h3>{esc(path.name)}</h3>" + (csv_table(path, max_rows=50) if path.suffix == ".csv"
                                                        else markdown(path.read_text())))
    return "\n".join(parts) or None


def _pct(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"


def _pre(text) -> str:
    text = str(text)
    more = f"\n... ({len(text) - CUT} more characters)" if len(text) > CUT else ""
    return f"<pre>{esc(text[:CUT] + more)}</pre>"


def examples(path: Path, columns: list[str]) -> str:
    """The first EXAMPLES rows of a parquet data set, `columns` side by side, escaped."""
    frame = pl.read_parquet(path).head(EXAMPLES)
    rows = [[_pre(r[c]) for c in columns] for r in frame.select(columns).iter_rows(named=True)]
    return table(columns, rows, raw=True)


def data(run_dir: Path) -> str | None:
    """What the trainers were given: the build stage's statistics and a few example rows."""
    stats_path = run_dir / "build" / "stats.json"
    if not stats_path.is_file():
        return None
    stats = json.loads(stats_path.read_text())
    n = stats.get("samples_per_prompt")
    known = [("prompts", "prompts"), ("samples", "samples"), ("samples_per_prompt", "samples per prompt"),
             ("pass@1", "pass@1 (base model)"), (f"pass@{n}", f"pass@{n} (base model)"),
             ("positives", "positives"), ("pairs", "pairs (DPO)"), ("truncated", "truncated samples"),
             ("truncated_correct", "truncated and correct"), ("rl_prompts", "RL prompts"),
             ("demonstrations", "demonstrations")]
    rows = [[label, _pct(stats[k]) if k.startswith("pass@") else fmt(stats[k])] for k, label in known if k in stats]
    for key, value in stats.items():  # nested counts (verifier statuses, prompts without pairs), the rest
        if isinstance(value, dict):
            rows += [[f"{key}: {sub}", fmt(v)] for sub, v in value.items()]
        elif key not in dict(known) and key != "share_correct":
            rows.append([key, fmt(value)])
    body = '<p class="caption">The offline data every method trained on (build/stats.json).</p>' + \
        table(["statistic", "value"], rows)
    positives, pairs = run_dir / "build" / "positives.parquet", run_dir / "build" / "pairs.parquet"
    if positives.is_file():
        body += f"<h3>Example positives (the first {EXAMPLES})</h3>" + examples(positives, ["problem", "response"])
    if pairs.is_file():
        body += f"<h3>Example pairs (the first {EXAMPLES})</h3>" + \
            examples(pairs, ["problem", "chosen", "rejected"])
    return body


def manifests(run_dir: Path) -> dict[str, dict]:
    """{stage name: manifest} for every finished stage folder below `run_dir` (in-progress ones skipped)."""
    out = {}
    paths = [p for depth in ("*", "*/*", "*/*/*") for p in run_dir.glob(f"{depth}/manifest.json")]
    for path in sorted(paths):
        rel = path.parent.relative_to(run_dir)
        if any(part.startswith(".") for part in rel.parts) or "checkpoints" in rel.parts:
            continue
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(manifest, dict) and "stage" in manifest:
            out[str(rel)] = manifest
    return out


def code_commit() -> str:
    """The workbench checkout's commit, `+ uncommitted changes` when tracked files differ from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=False, capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, check=False,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def provenance(run_dir: Path, recipe: dict | None) -> str:
    found = manifests(run_dir)
    parts = [table(["item", "value"], [
        ["code commit (when this page was written)", esc(code_commit())],
        ["page written", esc(datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"))],
        ["run directory", esc(run_dir.resolve())]], raw=True)]
    versions: dict[str, set] = {}
    for m in found.values():
        for pkg, ver in (m.get("versions") or {}).items():
            versions.setdefault(pkg, set()).add(str(ver))
    if versions:
        parts.append("<h3>Package versions (from the stages' manifests)</h3>" +
                     table(["package", "version"], [[p, " / ".join(sorted(v))] for p, v in versions.items()]))
    prints: dict[tuple[str, str], list[str]] = {}
    for stage, m in found.items():
        for key, value in (m.get("counts") or {}).items():
            if "fingerprint" in key or key in ("base_model", "verifier_version"):
                prints.setdefault((key, str(value)), []).append(stage)
    if prints:
        parts.append("<h3>Models and data</h3>" + table(["what", "value", "recorded by"],
                                                        [[k, v, ", ".join(st)] for (k, v), st in prints.items()]))
    seeds: dict[str, list[str]] = {}
    for stage, m in found.items():
        seeds.setdefault(str(m.get("seed")), []).append(stage)
    if seeds:
        parts.append("<h3>Seeds</h3>" + table(["seed", "stages"], [[s, ", ".join(st)] for s, st in seeds.items()]))
    if recipe is None:  # a page rewritten later: the stages' configs are the recipe as it ran
        recipe = {stage: m.get("config") for stage, m in found.items()}
        title = "The stages' configs as run (from their manifests)"
    else:
        title = "The recipe as run (every field, defaults included)"
    parts.append(f"<h3>{esc(title)}</h3><details><summary>show</summary><pre>"
                 f"{esc(yaml.safe_dump(recipe, sort_keys=False, width=110))}</pre></details>")
    walls = [[stage, fmt(float(m.get("wall_time_s", 0.0))), str(m.get("finished_at", "-"))]
             for stage, m in sorted(found.items(), key=lambda kv: str(kv[1].get("finished_at", "")))]
    if walls:
        total = sum(float(m.get("wall_time_s", 0.0)) for m in found.values())
        parts.append(f"<h3>Wall time per stage</h3><p class=\"note\">{len(walls)} finished stages, {total:.0f} s "
                     "in all (stages that ran side by side overlap; cached stages show their first run).</p>" +
                     table(["stage", "wall time (s)", "finished at"], walls))
    return "\n".join(parts)


def write_page(run_dir: Path, report_dir: Path | None = None, recipe: dict | None = None,
               name: str | None = None) -> Path:
    """Write `report_dir`/index.html (default `run_dir`/report) for the run in `run_dir`; return its path.

    `recipe` (the recipe's JSON dump) is shown as run; without it, the stages' configs from the manifests.
    """
    run_dir = Path(run_dir)
    report = Path(report_dir) if report_dir is not None else run_dir / "report"
    if not report.is_dir():
        raise FileNotFoundError(f"page: {report} is not a folder (has the report stage run?)")
    name = name or (recipe or {}).get("run", {}).get("name") or run_dir.name
    sections = [("headline", "Results", headline(report)),
                ("tuning", "Tuning", tuning(report)),
                ("budget", "Budget", budget(report)),
                ("curves", "Learning curves", curves(report)),
                ("token-probs", "Token probabilities", token_probs(report)),
                ("other", "Other report files", other_files(report)),
                ("data", "The data trained on", data(run_dir)),
                ("provenance", "Provenance", provenance(run_dir, recipe))]
    meta = (f"run <code>{esc(name)}</code> in <code>{esc(run_dir.resolve())}</code>; code {esc(code_commit())}; "
            f"written {esc(datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z'))}")
    page = document(f"Report: {name}", meta, [s for s in sections if s[2] is not None])
    path = report / PAGE
    path.write_text(page, encoding="utf-8")
    return path


def page_for(run_dir: Path) -> Path:
    """The page of a finished run: report/index.html, written now for a run from before pages existed (a new
    file beside the report's outputs; the report manifest's files stay as they were)."""
    run_dir = Path(run_dir)
    page = run_dir / "report" / PAGE
    if page.is_file():
        return page
    if not (run_dir / "report" / "table2.md").is_file():
        raise FileNotFoundError(f"{run_dir}: no report/table2.md (run `workbench run` or `workbench report` "
                                "with its recipe first)")
    return write_page(run_dir)


def open_page(page: Path) -> bool:
    """Open `page` in the desktop's browser; False where there is none (no display: a server, a container,
    where a terminal browser would otherwise take over the terminal)."""
    import os
    import sys
    import webbrowser

    if not (sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        return webbrowser.open(Path(page).resolve().as_uri())
    except webbrowser.Error:
        return False
