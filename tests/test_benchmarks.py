"""Benchmark registry and gold-answer extraction on the real test sets shipped in evaluators/data/."""

import json

import polars as pl
import pytest

from evaluators.benchmarks import (
    AMC23,
    GSM8K,
    MATH500,
    MINERVA_MATH,
    OLYMPIADBENCH,
    REAL_BENCHMARKS,
    SHIPPED_DIR,
    SHIPPED_SHA256,
    TOY_ID,
    Benchmark,
    BenchmarkError,
    olympiad_gold,
)
from workbench.registry import get_benchmark

SHARED = SHIPPED_DIR


def test_registry_has_every_benchmark():
    for name in ["math500", "minerva_math", "olympiadbench", "aime24", "amc23", "gsm8k",
                 "toy-id", "toy-long", "toy-big"]:
        bench = get_benchmark(name)
        assert isinstance(bench, Benchmark) and bench.name == name


def test_olympiad_gold_joins_answers_and_strips_dollars():
    gold = olympiad_gold()
    assert gold({"final_answer": ["$69$,$84$"]}) == "69,84"
    assert gold({"final_answer": ["$x=1$", "$x=2$"]}) == "x=1, x=2"
    assert gold({"final_answer": ["$166$"], "unit": "$cm^2$"}) == "166"


@pytest.mark.parametrize("bench", REAL_BENCHMARKS, ids=lambda b: b.name)
def test_every_problem_has_a_gold_answer(bench):
    path = SHARED / f"{bench.name}.jsonl"
    n_lines = sum(1 for line in path.open() if line.strip())
    df = bench.load(str(path))
    assert df.columns == ["problem_id", "problem", "answer"]
    assert df.height == n_lines
    assert df["problem_id"].n_unique() == df.height
    assert (df["answer"].str.strip_chars().str.len_chars() > 0).all()
    assert (df["problem"].str.len_chars() > 0).all()


def test_specific_layouts():
    assert AMC23.load(str(SHARED / "amc23.jsonl"))["answer"][0] == "27"  # stored as 27.0
    assert GSM8K.load(str(SHARED / "gsm8k.jsonl"))["answer"][:3].to_list() == ["18", "3", "70000"]
    assert MINERVA_MATH.load(str(SHARED / "minerva_math.jsonl"))["answer"][0] == "1.6"
    olympiad = OLYMPIADBENCH.load(str(SHARED / "olympiadbench.jsonl"))
    assert "$" not in "".join(olympiad["answer"].to_list())


def test_default_source_and_limit(monkeypatch, tmp_path):
    monkeypatch.delenv("WORKBENCH_BENCHMARKS_DIR", raising=False)
    assert MATH500.default_path() == SHARED / "math500.jsonl"
    assert MATH500.load(limit=7).height == 7
    # the env var wins over the shipped copy
    (tmp_path / "math500.jsonl").write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    monkeypatch.setenv("WORKBENCH_BENCHMARKS_DIR", str(tmp_path))
    df = MATH500.load()
    assert df.to_dicts() == [{"problem_id": "math500/0", "problem": "1+1?", "answer": "2"}]


def test_local_parquet_and_bad_rows(tmp_path):
    pl.DataFrame({"question": ["q1", "q2"], "answer": ["x #### 1,000", "y #### 5"]}).write_parquet(tmp_path / "g.parquet")
    assert GSM8K.load(str(tmp_path / "g.parquet"))["answer"].to_list() == ["1000", "5"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "p", "answer": "1"}) + "\n" + json.dumps({"problem": "p2"}) + "\n")
    with pytest.raises(BenchmarkError, match=r"bad.jsonl: row 1: no gold answer"):
        MATH500.load(str(bad))
    with pytest.raises(BenchmarkError, match="file not found"):
        MATH500.load(str(tmp_path / "missing.jsonl"))


def test_toy_benchmark_loads():
    pytest.importorskip("data_gen.toy")
    df = TOY_ID.load(limit=5)
    assert df.height == 5 and df["problem_id"][0] == "toy-id/0"
    assert df["answer"].str.len_chars().min() > 0
    assert TOY_ID.load(limit=5).equals(df)  # deterministic


@pytest.mark.parametrize("bench", [MATH500, MINERVA_MATH], ids=lambda b: b.name)
def test_reference_solutions_grade_correct(bench):
    verifier = pytest.importorskip("data_gen.verifier")
    rows = [json.loads(line) for line in (SHARED / f"{bench.name}.jsonl").open()]
    df = bench.load(str(SHARED / f"{bench.name}.jsonl"))
    grades = verifier.grade_many([r["solution"] for r in rows], df["answer"].to_list(), timeout_s=5.0)
    share = sum(g.correct for g in grades) / len(grades)
    assert share >= 0.99, f"{bench.name}: only {share:.1%} of reference solutions grade correct"


def test_every_paper_benchmark_ships_pinned():
    """The six sets ship inside the package with their pinned sha256 (no ../shared, no hub needed)."""
    import hashlib

    assert set(SHIPPED_SHA256) == {b.name for b in REAL_BENCHMARKS}
    for name, digest in SHIPPED_SHA256.items():
        assert hashlib.sha256((SHIPPED_DIR / f"{name}.jsonl").read_bytes()).hexdigest() == digest, name
    assert [b.load().height for b in REAL_BENCHMARKS] == [500, 272, 675, 30, 40, 1319]


def test_changed_shipped_file_is_an_error(monkeypatch, tmp_path):
    import evaluators.benchmarks as bm

    monkeypatch.delenv("WORKBENCH_BENCHMARKS_DIR", raising=False)
    text = (SHIPPED_DIR / "amc23.jsonl").read_text()
    (tmp_path / "amc23.jsonl").write_text(text.replace("27.0", "28.0", 1))
    monkeypatch.setattr(bm, "SHIPPED_DIR", tmp_path)
    with pytest.raises(BenchmarkError, match=r"amc23.jsonl: sha256 .* differs from the pinned"):
        AMC23.load()
    with pytest.raises(BenchmarkError, match="shipped benchmark file missing"):
        MATH500.load()


def test_hub_path_asks_the_hub(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or [
        {"problem": "p", "answer": "1", "unique_id": "u"}])
    assert MATH500.load("hub")["problem_id"].to_list() == ["math500/u"]
    assert calls == [(("HuggingFaceH4/MATH-500", None), {"split": "test"})]
