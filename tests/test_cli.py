"""The `workbench` command as a user runs it (a subprocess of the installed console script)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKBENCH = str(Path(sys.executable).parent / "workbench")


def cli(*args, cwd=ROOT):
    return subprocess.run([WORKBENCH, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_lists_every_stage_command():
    out = cli("--help")
    assert out.returncode == 0, out.stderr
    for command in ("run", "generate", "verify", "build", "train", "evaluate", "report", "verify-file",
                    "algorithms", "benchmarks"):
        assert command in out.stdout


def test_algorithms_and_benchmarks_list_builtins_name_first():
    algos = cli("algorithms")
    assert algos.returncode == 0, algos.stderr
    names = [line.split("\t")[0] for line in algos.stdout.splitlines()]
    assert {"dft", "rft", "sft", "dpo", "ppo", "grpo"} <= set(names)
    benches = cli("benchmarks")
    names = [line.split("\t")[0] for line in benches.stdout.splitlines()]
    assert {"math500", "minerva_math", "olympiadbench", "aime24", "amc23", "gsm8k", "toy-id"} <= set(names)


def test_dry_run_of_the_paper_recipe_prints_the_plan(tmp_path):
    out = cli("run", "recipes/table2-qwen2.5-math-1.5b.yaml", "--dry-run", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stdout + out.stderr
    for stage in ("prompts", "generate", "verify", "build", "train/dft", "train/grpo", "eval/base",
                  "eval/ppo", "report"):
        assert stage in out.stdout
    assert not (tmp_path / "r").exists()  # a dry run writes nothing


def test_table1_recipe_skips_sampling():
    out = cli("run", "recipes/table1-qwen2.5-math-1.5b.yaml", "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "train/sft" in out.stdout and "generate" not in out.stdout


def test_bad_recipe_is_one_line_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: {name: x}\nmodel: toy:arith\ntrain:\n  - {name: a, algorithm: dft, learning_rate: fast}\n")
    out = cli("run", str(bad), "--dry-run")
    assert out.returncode == 2
    message = " ".join(out.stdout.split())
    assert f"{bad}: train[0].learning_rate: expected a number, got 'fast'" in message


def test_stage_error_is_one_line_and_keeps_nothing_half_done(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"run: {{name: r, out_dir: {tmp_path}}}\nmodel: toy:arith\n"
                      f"prompts: {{source: file, path: {tmp_path / 'absent.jsonl'}}}\n")
    out = cli("run", str(recipe))
    assert out.returncode == 2, out.stdout + out.stderr
    message = " ".join(out.stdout.split())
    assert f"{tmp_path / 'absent.jsonl'}: file not found" in message
    assert "Traceback" not in out.stdout + out.stderr
    assert not (tmp_path / "r" / "prompts").exists()
