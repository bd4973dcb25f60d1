"""The `workbench` command as a user runs it (a subprocess of the installed console script)."""

import os
import subprocess
import sys
import time
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


# --- every command fails in one line (workbench.cli.main) ---------------------------------------------

def _one_line_cases(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text("not json\n")
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text('{"response": "\\\\boxed{1}"}\n')
    missing = str(tmp_path / "missing.yaml")
    cases = {  # argv -> text the one line must contain
        ("run", missing): f"{missing}: recipe file not found",
        **{(step, missing): f"{missing}: recipe file not found"
           for step in ("generate", "verify", "build", "train", "report", "evaluate", "check")},
        ("check", "--out", str(tmp_path / "nowhere")): f"{tmp_path / 'nowhere'}: no such run directory",
        ("evaluate", "--model", "/nonexistent", "--out", str(tmp_path / "ev")): "'/nonexistent'",
        ("evaluate", "--model", "toy:arith", "--benchmarks", "nosuch", "--out", str(tmp_path / "ev")):
            "unknown benchmark 'nosuch'",
        ("evaluate", "--k", "many"): "'--k'",
        ("verify-file", str(bad_json), str(tmp_path / "o.jsonl")): f"{bad_json}: row 1",
        ("verify-file", str(no_answer), str(tmp_path / "o.jsonl")): f"{no_answer}: no 'answer' column",
        ("verify-file", str(tmp_path / "absent.jsonl"), "o.jsonl"): f"{tmp_path / 'absent.jsonl'}: file not found",
        ("algorithms", "extra"): "unexpected extra argument",
        ("benchmarks", "extra"): "unexpected extra argument",
        ("verifiers", "extra"): "unexpected extra argument",
        ("verify-file", str(no_answer), str(tmp_path / "o.jsonl"), "--verifier", "nosuch"):
            "unknown verifier 'nosuch'",
        ("export", str(tmp_path / "nowhere"), "--to", str(tmp_path / "x")): f"{tmp_path / 'nowhere'}: no such run",
    }
    return cases


def test_every_command_fails_in_one_line_naming_the_input(tmp_path, monkeypatch, capsys):
    """In-process through the console script's entry point (`main`), one command after another."""
    import pytest

    from workbench.cli import main

    monkeypatch.delenv("WORKBENCH_DEBUG", raising=False)
    monkeypatch.chdir(ROOT)
    for argv, expected in _one_line_cases(tmp_path).items():
        monkeypatch.setattr(sys, "argv", ["workbench", *argv])
        with pytest.raises(SystemExit) as exit_:
            main()
        out = capsys.readouterr()
        lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
        assert exit_.value.code not in (0, None), (argv, lines)
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, lines)
        assert expected in lines[0], (argv, lines)


def test_debug_env_shows_the_traceback(tmp_path):
    out = subprocess.run([WORKBENCH, "evaluate", "--model", "/nonexistent", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "WORKBENCH_DEBUG": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr and "/nonexistent" in out.stderr


def test_check_names_every_bad_file(tmp_path):
    from workbench.rundir import RunDir

    rd = RunDir(tmp_path / "run")
    files = (("prompts", "prompts.parquet"), ("build", "positives.parquet"), ("train/dft", "w.bin"))
    for stage, name in files:
        tmp = rd.begin(stage, "h")
        (tmp / name).write_bytes(b"data" * 100)
        rd.commit(stage, tmp, input_hash="h", config={}, seed=0, counts={}, wall_time_s=0, inputs={})
    ok = cli("check", "--out", str(tmp_path / "run"))
    assert ok.returncode == 0 and "every output matches" in ok.stdout, ok.stdout
    (tmp_path / "run" / "build" / "positives.parquet").write_bytes(b"garbage")
    (tmp_path / "run" / "train" / "dft" / "w.bin").unlink()
    bad = cli("check", "--out", str(tmp_path / "run"))
    assert bad.returncode == 1, bad.stdout
    assert f"bad file: {tmp_path / 'run' / 'build' / 'positives.parquet'}: 7 bytes" in bad.stdout
    assert f"bad file: {tmp_path / 'run' / 'train' / 'dft' / 'w.bin'}: missing" in bad.stdout
    assert "ok  prompts" in bad.stdout


def test_second_run_on_a_locked_directory_is_refused_at_once(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import sys, time; from pathlib import Path; from workbench.lock import RunLock\n"
         "RunLock(Path(sys.argv[1]), command='first run').acquire(); print('locked', flush=True); time.sleep(120)"),
         str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.time()
        out = cli("run", "recipes/smoke.yaml", "--out", str(tmp_path / "run"))
        assert time.time() - t0 < 30
        assert out.returncode != 0
        message = " ".join(out.stdout.split())
        assert f"{tmp_path / 'run'} is in use by another workbench run: pid {holder.pid}" in message
    finally:
        holder.kill()
        holder.wait()


def test_evaluate_template_preset_is_checked():
    """`workbench evaluate --model M --template NAME` takes a named template (qwen-boxed); a wrong name is one
    line listing the known ones, before any model loads."""
    out = cli("evaluate", "--model", "toy:arith", "--template", "qwen")
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "unknown template 'qwen'" in text and "qwen-boxed" in text
