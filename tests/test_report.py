"""The Table 2 report from a small fixed eval result (fake summaries and manifests in a tmp run dir)."""

import json

import polars as pl
import pytest

from evaluators.paper import TABLE1, TABLE2, paper_row
from evaluators.report import build_table, render_table
from evaluators.stages import report_stage
from workbench.recipe import parse_recipe
from workbench.stage import StageContext

BENCHES = ["toy-id", "toy-long"]
ACC = {"base": (0.25, 0.05), "dft": (0.50, 0.10), "dpo": (0.40, 0.00)}


def _summary(name, accs):
    return pl.DataFrame([{"model": name, "benchmark": b, "n_problems": 100, "k": 4, "avg_at_k": a,
                          "pass_at_k": min(1.0, 2 * a), "maj_at_k": a, "ci_low": max(0.0, a - 0.05),
                          "ci_high": a + 0.05} for b, a in zip(BENCHES, accs)])


def _samples(acc, n=100, k=4):
    """Per-sample rows with the first round(acc * n * k) samples (in problem order) correct."""
    hits = round(acc * n * k)
    return pl.DataFrame({"problem_id": [f"p{i:03d}" for i in range(n) for _ in range(k)],
                         "sample_idx": [j for _ in range(n) for j in range(k)],
                         "correct": [i * k + j < hits for i in range(n) for j in range(k)]})


def _write(folder, manifest, summary=None):
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if summary is not None:
        summary.write_parquet(folder / "summary.parquet")
        for row in summary.iter_rows(named=True):
            _samples(row["avg_at_k"]).write_parquet(folder / f"{row['benchmark']}.parquet")
    return folder


@pytest.fixture
def ctx(tmp_path):
    recipe = parse_recipe({
        "run": {"name": "t"}, "model": "toy:arith",
        "train": [{"name": "dft", "algorithm": "dft"}, {"name": "dpo", "algorithm": "dpo"}],
        "evaluate": {"benchmarks": BENCHES, "k": 4},
        "report": {"paper": "table2"},
    })
    inputs = {"generate": _write(tmp_path / "generate", {"counts": {"samples": 800}, "wall_time_s": 12.5})}
    ledger = {"samples": 800, "generated_tokens": 4000, "trained_tokens": 5000, "forwarded_tokens": 0,
              "parameters": 1000, "flops": 1000 * (2 * 4000 + 6 * 5000), "wall_s": 30.0, "gen_wall_s": 12.5}
    inputs["train/dft"] = _write(tmp_path / "train" / "dft", {  # a manifest with its ledger (workbench/budget.py)
        "counts": {"data": "positives", "train_tokens": 5000, "steps": 10, "train_time_s": 30.0, "ledger": ledger},
        "wall_time_s": 31.0})
    inputs["train/dpo"] = _write(tmp_path / "train" / "dpo", {  # an older manifest: the ledger is computed
        "counts": {"data": "pairs", "algorithm": "dpo", "train_tokens": 7000, "steps": 10, "train_time_s": 20.0},
        "wall_time_s": 30.0})
    for name, accs in ACC.items():
        inputs[f"eval/{name}"] = _write(tmp_path / "eval" / name, {"counts": {}}, _summary(name, accs))
    return StageContext(recipe, tmp_path / "report", inputs)


def test_report_stage_writes_table_costs_and_plot(ctx):
    counts = report_stage(ctx)
    out = ctx.out
    table = pl.read_csv(out / "table2.csv")
    assert table.columns == ["method", "toy-id", "toy-long", "average"]
    assert table["method"].to_list() == ["base", "dft", "dpo"]  # base, then recipe order
    assert table.row(0) == ("base", 25.0, 5.0, 15.0)
    assert table.row(1) == ("dft", 50.0, 10.0, 30.0)
    assert table.row(2) == ("dpo", 40.0, 0.0, 20.0)
    assert counts["rows"] == 3 and counts["average/dft"] == 30.0

    costs = pl.read_csv(out / "costs.csv")
    assert costs.to_dicts()[0] == {"method": "dft", "steps": 10, **{k: v for k, v in ledger_of(ctx, "dft").items()}}
    dpo = costs.to_dicts()[1]  # charged the generation; its reference forwards every trained token
    assert dpo["samples"] == 800 and dpo["trained_tokens"] == 7000 and dpo["forwarded_tokens"] == 7000
    assert dpo["wall_s"] == 20.0 and dpo["gen_wall_s"] == 12.5
    assert costs["method"].to_list() == ["dft", "dpo"]
    budget = pl.read_csv(out / "budget.csv")  # base at 0 samples, base at 800 (data generated), final
    assert budget.filter(method="dft")["samples"].to_list() == [0, 800, 800]
    assert budget.filter(method="dft")["toy-id"].to_list() == [25.0, 25.0, 50.0]
    assert (out / "budget.png").is_file() and "budget matched: none" in (out / "budget.md").read_text()

    md = (out / "table2.md").read_text()
    assert "Average@4" in md and "**Budget ledger**" in md and "FLOPs = 2N x generated" in md
    assert "| dft | 50.00 [45.0, 55.0] | 10.00 [5.0, 15.0] | 30.00 | 800 | 3.8e+07 |" in md
    assert "4 comparisons, 1,599 bootstrap resamples: the smallest attainable Holm-adjusted p is 2 x 4 / (1,599 + 1) = 0.005" in md
    assert "| base | 25.00 [20.0, 30.0] * | 5.00 [0.0, 10.0] * | 15.00 | - | - |" in md
    assert "Ours vs the paper's Table 2" in md  # no paper benchmark here, so only the averages compare
    assert f"30.00 / {TABLE2['dft']['average']:.2f} ({30.0 - TABLE2['dft']['average']:+.2f})" in md
    sig = pl.read_csv(out / "significance.csv")
    assert sig["method"].to_list() == ["base", "base", "dpo", "dpo"] and set(sig["reference"]) == {"dft"}
    assert sig.filter(method="base", benchmark="toy-id")["difference"][0] == pytest.approx(-25.0)
    assert sig.filter(method="dpo", benchmark="toy-long")["difference"][0] == pytest.approx(-10.0)
    assert sig["significant"].all() and (sig["p_value"] < 0.05).all()
    assert "| base | 25.00 [20.0, 30.0] * |" in md and "| base |" in md and "Each method minus dft" in md
    assert pl.read_csv(out / "table2_seeds.csv").height == 6  # 3 methods x 2 benchmarks x 1 seed
    png = (out / "table2.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def ledger_of(ctx, name):
    return json.loads((ctx.inputs[f"train/{name}"] / "manifest.json").read_text())["counts"]["ledger"]


def test_report_fails_on_missing_summary(ctx):
    del ctx.inputs["eval/dpo"]
    with pytest.raises(FileNotFoundError, match="eval/dpo"):
        report_stage(ctx)


def test_build_and_render_table():
    summaries = {n: _summary(n, a) for n, a in ACC.items()}
    table = build_table(summaries)
    text = render_table(table)
    assert text.splitlines()[2].startswith("| method | toy-id | toy-long | average |")
    assert "| base | 25.00 | 5.00 | 15.00 |" in text
    with pytest.raises(ValueError, match="no row for math500"):
        build_table(summaries, ["toy-id", "math500"])


def test_paper_numbers():
    assert TABLE2["dft"]["math500"] == 64.71 and TABLE2["base"]["average"] == 15.92
    assert TABLE1["sft"]["average"] == 18.01
    for table in (TABLE1, TABLE2):  # the printed averages are the means of the five columns
        for row in table.values():
            values = [v for k, v in row.items() if k != "average"]
            assert abs(sum(values) / 5 - row["average"]) < 0.02
    assert paper_row("table1", "dft-demos", "dft") == TABLE1["dft"]
    assert paper_row("table2", "mine", "grpo") == TABLE2["grpo"]
    assert paper_row("table2", "sft-demos", "sft") is None


def test_report_over_seeds_means_and_marks(ctx, tmp_path):
    """Two seeds per method: the table shows the mean, table2_seeds.csv each seed, the interval widens."""
    runs = {}
    for name, accs in {"base": (0.25, 0.05), "dft": (0.30, 0.05), "dpo": (0.40, 0.0)}.items():
        runs[name] = {}
        for seed, shift in [(0, -0.15), (1, 0.15)]:  # dft's toy-id differs a lot between seeds
            shifted = [accs[0] + (shift if name == "dft" else 0.0), accs[1]]
            stage = f"eval/{name}@s{seed}"
            ctx.inputs[stage] = _write(tmp_path / "eval" / f"{name}@s{seed}", {"counts": {}}, _summary(name, shifted))
            runs[name][seed] = (None if name == "base" else f"train/{name}", stage)
    ctx.extra["runs"] = runs
    ctx.recipe.run.seeds = [0, 1]
    report_stage(ctx)
    table = pl.read_csv(ctx.out / "table2.csv")
    assert table.filter(method="dft")["toy-id"][0] == pytest.approx(30.0)
    seeds = pl.read_csv(ctx.out / "table2_seeds.csv")
    assert seeds.filter(method="dft", benchmark="toy-id")["avg_at_k"].to_list() == pytest.approx([15.0, 45.0])
    md = (ctx.out / "table2.md").read_text()
    assert "mean over 2 seeds" in md
    sig = pl.read_csv(ctx.out / "significance.csv")
    assert set(sig["seeds"]) == {2}
    # dpo - dft on toy-id: +10 points on average, +25 and -5 by seed: the interval spans both signs
    row = sig.filter(method="dpo", benchmark="toy-id").row(0, named=True)
    assert row["difference"] == pytest.approx(10.0) and row["ci_low"] < 0 < row["ci_high"]
    assert not row["significant"]


def test_report_without_the_reference_row_says_so(ctx):
    ctx.recipe.report.reference = "grpo"  # not a row of this run
    report_stage(ctx)
    assert not (ctx.out / "significance.csv").exists()
    md = (ctx.out / "table2.md").read_text()
    assert "No row named 'grpo': no significance tests" in md and " *" not in md
