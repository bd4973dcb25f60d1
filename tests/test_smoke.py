"""End to end: recipes/smoke.yaml through the real `workbench run` (every stage, every algorithm)."""

import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
WORKBENCH = str(Path(sys.executable).parent / "workbench")
ROWS = ["base", "dft", "rft", "dpo", "ppo", "grpo", "sft-demos", "dft-demos"]


def run(*args):
    out = subprocess.run([WORKBENCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


# `smoke_run` (tests/conftest.py): one run of recipes/smoke.yaml per session, shared with tests/test_page.py


def test_smoke_recipe_produces_the_full_table(smoke_run):
    out_dir, first = smoke_run
    table = pl.read_csv(out_dir / "report" / "table2.csv")
    assert table["method"].to_list() == ROWS
    assert table.columns == ["method", "toy-id", "toy-long", "toy-big", "average"]
    for col in table.columns[1:]:
        assert table[col].null_count() == 0 and table[col].is_between(0, 100).all()
    assert (out_dir / "report" / "table2.png").stat().st_size > 1000
    assert "| base |" in first.stdout and "table2.csv" in first.stdout


def test_every_checkpoint_names_the_same_base_and_its_data(smoke_run):
    import json

    out_dir, _ = smoke_run
    bases, data = set(), {}
    for row in ROWS[1:]:
        manifest = json.loads((out_dir / "train" / row / "manifest.json").read_text())
        bases.add(manifest["counts"]["base_model_fingerprint"])
        data[row] = (manifest["counts"]["data"], manifest["counts"]["data_fingerprint"])
        assert (out_dir / "train" / row / "model" / "config.json").is_file()
        assert (out_dir / "train" / row / "metrics.jsonl").stat().st_size > 0
    assert len(bases) == 1
    assert data["dft"] == data["rft"]  # identical positives
    assert data["ppo"] == data["grpo"]  # identical RL prompts
    assert data["sft-demos"] == data["dft-demos"]  # identical demonstrations
    assert data["dpo"][0] == "pairs"


def test_rerun_is_fully_cached(smoke_run):
    out_dir, _ = smoke_run
    t0 = time.time()
    again = run("run", "recipes/smoke.yaml", "--out", str(out_dir))
    assert time.time() - t0 < 60
    assert "✓" not in again.stdout  # no stage ran
    plan = run("run", "recipes/smoke.yaml", "--out", str(out_dir), "--dry-run")
    assert "to run" not in plan.stdout
