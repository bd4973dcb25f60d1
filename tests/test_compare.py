"""`workbench compare`: shared rows only, each run's score, paired differences, and what was left out."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from evaluators.compare import compare, compare_runs, load_run, render_html
from evaluators.stats import paired_bootstrap

WORKBENCH = str(Path(sys.executable).parent / "workbench")


def write_eval(run: Path, stage: str, seed: int, correct: dict[str, list[list[bool]]], k: int = 2,
               temperature: float = 1.0) -> None:
    """An eval stage folder as the pipeline writes it: per-sample parquet per benchmark, summary, manifest.
    `correct[benchmark][problem]` holds the k samples' correctness."""
    folder = run / "eval" / stage
    folder.mkdir(parents=True)
    summary = []
    for bench, problems in correct.items():
        rows = [{"problem_id": f"{bench}/{i}", "sample_idx": j, "correct": c}
                for i, samples in enumerate(problems) for j, c in enumerate(samples)]
        pl.DataFrame(rows).write_parquet(folder / f"{bench}.parquet")
        acc = float(np.mean([np.mean(s) for s in problems]))
        summary.append({"model": stage, "benchmark": bench, "n_problems": len(problems), "k": k,
                        "avg_at_k": acc, "pass_at_k": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1})
    pl.DataFrame(summary).write_parquet(folder / "summary.parquet")
    config = {"evaluate": {"k": k, "temperature": temperature, "bootstrap_samples": 500}, "seed": seed}
    (folder / "manifest.json").write_text(json.dumps({"stage": f"eval/{stage}", "seed": seed, "config": config}))


def problems(n: int, share: float, k: int = 2) -> list[list[bool]]:
    """n problems, the first round(share * n) of them all correct, the rest all wrong."""
    return [[i < round(share * n)] * k for i in range(n)]


@pytest.fixture
def two_runs(tmp_path):
    a, b = tmp_path / "a" / "quick", tmp_path / "b" / "three-seeds"
    for method, share in [("base", 0.2), ("dft", 0.6), ("sft", 0.5)]:
        write_eval(a, method, 0, {"toy-id": problems(20, share), "toy-long": problems(10, share)})
    for seed in (0, 1, 2):
        for method, share in [("base", 0.2), ("dft", 0.8)]:  # no sft; toy-long on other problems; k 4
            write_eval(b, f"{method}@s{seed}", seed,
                       {"toy-id": problems(20, share, 4), "toy-big": problems(10, share, 4)}, k=4)
    return a, b


def test_shared_rows_scores_and_paired_difference(two_runs):
    a, b = two_runs
    runs = [load_run(a), load_run(b)]
    assert runs[1].seeds == [0, 1, 2] and list(runs[1].evals) == ["base", "dft"]
    rows, header, notes = compare(runs, samples=500)
    assert header == ["method", "benchmark", "quick", "three-seeds", "three-seeds − quick", "p (three-seeds)"]
    assert [r[:2] for r in rows] == [["base", "toy-id"], ["dft", "toy-id"]]
    base, dft = rows
    assert base[2].startswith("20.00 [10.0, 30.0]")  # one seed: the run's own summary interval
    assert dft[3].startswith("80.00 [")  # three seeds: crossed bootstrap over seeds and problems
    assert dft[4].startswith("+20.00 [") and base[4] == "+0.00 [+0.0, +0.0]"
    # 1 seed against 3: seed-averaged per problem, then evaluators.stats.paired_bootstrap over problems
    order = sorted(range(20), key=lambda i: f"toy-id/{i}")  # problems in problem_id order, as the files sort
    want = paired_bootstrap(np.array([float(i < 16) for i in order]), np.array([float(i < 12) for i in order]),
                            samples=500)
    assert dft[5] == f"{want['p_value']:.4f}"
    text = "\n".join(notes)
    assert "method(s) sft of quick" in text
    assert "toy-long of quick" in text and "toy-big of three-seeds" in text
    assert "seed counts differ" in text
    assert "evaluate.k is 4 in three-seeds, 2 in quick" in text


def test_runs_on_partly_shared_problems_pair_only_those(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_eval(a, "base", 0, {"toy-id": problems(8, 0.5)})
    write_eval(b, "base", 0, {"toy-id": problems(4, 0.5)})  # the first 4 problems of a's 8
    rows, _, notes = compare([load_run(a), load_run(b)], samples=200)
    # shared problems 0-3: a has 0-3 correct, b has 0-1 correct -> b - a = -50 points
    assert rows[0][4].startswith("-50.00")
    assert rows[0][4].endswith(" †")
    assert any("† differences over the shared problems only: toy-id (b vs a: 4 shared of 4 and 8)" in n for n in notes)


def test_no_shared_method_or_one_run_is_one_clear_error(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_eval(a, "dft", 0, {"toy-id": problems(4, 0.5)})
    write_eval(b, "sft", 0, {"toy-id": problems(4, 0.5)})
    with pytest.raises(ValueError, match="share no method"):
        compare_runs([a, b])
    with pytest.raises(ValueError, match="at least two"):
        compare_runs([a])
    with pytest.raises(FileNotFoundError, match="no finished evaluation"):
        load_run(tmp_path)


def test_cli_prints_markdown_and_writes_the_html_page(two_runs, tmp_path):
    a, b = two_runs
    page = tmp_path / "out" / "compare.html"
    out = subprocess.run([WORKBENCH, "compare", str(a), str(b), "--html", str(page), "--samples", "300"],
                         check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| dft | toy-id | 60.00 [50.0, 70.0] |" in out.stdout
    assert "Left out" in out.stdout and f"comparison page: {page}" in out.stdout
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "http" not in html.split("</style>")[1]
    assert "<li>left out: method(s) sft of quick" in html
    missing = subprocess.run([WORKBENCH, "compare", str(a), str(tmp_path / "nope")], check=False, capture_output=True, text=True)
    assert missing.returncode != 0 and "is not a run directory" in missing.stdout + missing.stderr


def test_html_escapes_run_text(two_runs):
    a, b = two_runs
    text, runs = compare_runs([a, b], samples=100)
    assert "<b>x</b>" not in render_html(text.replace("quick", "<b>x</b>"), runs)
