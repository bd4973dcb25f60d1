"""Prompt sources: field mapping, gold extraction from \\boxed{}, skipped-row counts, errors."""

import json

import polars as pl
import pytest

from data_gen.config import PromptsConfig
from data_gen.prompts import PromptsError, load_prompts, prompt_id


def _write_jsonl(path, rows):
    path.write_text("".join((json.dumps(r) if isinstance(r, dict) else r) + "\n" for r in rows))
    return path


def test_numina_layout_file_and_skips(tmp_path):
    rows = [
        {"problem": "What is 1+1?", "solution": r"It is \boxed{2}.", "source": "x"},
        {"problem": "Half of 1?", "solution": r"\boxed{1} no, \boxed{\frac{1}{2}}"},
        {"problem": "", "solution": r"\boxed{3}"},                 # no problem
        {"problem": "No box here", "solution": "just words"},      # no gold answer
        {"problem": "What is 1+1?", "solution": r"\boxed{2}"},     # duplicate
        {"solution": r"\boxed{4}"},                                # no problem field
    ]
    cfg = PromptsConfig(source="file", path=str(_write_jsonl(tmp_path / "numina.jsonl", rows)))
    df, skipped = load_prompts(cfg, seed=0)
    assert skipped == {"no_problem": 2, "no_answer": 1, "duplicate": 1}
    assert sorted(df["answer"].to_list()) == ["2", r"\frac{1}{2}"]
    assert df.columns == ["prompt_id", "source", "problem", "answer", "solution"]
    assert set(df["prompt_id"]) == {prompt_id("What is 1+1?"), prompt_id("Half of 1?")}


def test_answer_field_max_prompts_and_seeded_shuffle(tmp_path):
    rows = [{"question": f"q{i}", "final": str(i)} for i in range(20)]
    path = tmp_path / "p.parquet"
    pl.DataFrame(rows).write_parquet(path)
    cfg = PromptsConfig(source="file", path=str(path), problem_field="question", answer_field="final",
                        solution_field=None, max_prompts=5)
    a, _ = load_prompts(cfg, seed=1)
    b, _ = load_prompts(cfg, seed=1)
    c, _ = load_prompts(cfg, seed=2)
    assert a.equals(b) and len(a) == 5 and not a.equals(c)
    assert a["solution"].null_count() == 5


def test_malformed_file_names_file_and_row(tmp_path):
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"problem": "a", "answer": "1"}, "{oops"])
    with pytest.raises(PromptsError, match=r"bad.jsonl: row 2"):
        load_prompts(PromptsConfig(source="file", path=str(bad), answer_field="answer"), 0)
    with pytest.raises(PromptsError, match="not found"):
        load_prompts(PromptsConfig(source="file", path=str(tmp_path / "none.jsonl")), 0)
    ok = _write_jsonl(tmp_path / "ok.jsonl", [{"problem": "a", "answer": "1"}])
    with pytest.raises(PromptsError, match="problem_field: no column 'question'"):
        load_prompts(PromptsConfig(source="file", path=str(ok), problem_field="question", answer_field="answer"), 0)


def test_toy_source():
    with pytest.raises(PromptsError, match="max_prompts"):
        load_prompts(PromptsConfig(source="toy"), 0)
    df, skipped = load_prompts(PromptsConfig(source="toy", max_prompts=8), seed=3)
    assert len(df) == 8 and df["prompt_id"].n_unique() == 8 and not any(skipped.values())
    assert df.columns == ["prompt_id", "source", "problem", "answer", "solution"]


def test_first_rows_unfiltered_in_source_order(tmp_path):
    """Table 1's selection: the first N rows as they are; no gold answer and repeats kept, nothing shuffled."""
    rows = [
        {"problem": "No box here", "solution": "just words"},
        {"problem": "What is 1+1?", "solution": r"\boxed{2}"},
        {"problem": "", "solution": r"\boxed{3}"},
        {"problem": "What is 1+1?", "solution": r"so \boxed{2}"},
        {"problem": "later", "solution": r"\boxed{5}"},
        {"problem": "beyond the cut", "solution": r"\boxed{6}"},
    ]
    path = str(_write_jsonl(tmp_path / "numina.jsonl", rows))
    cfg = PromptsConfig(source="file", path=path, max_prompts=5, first_rows=True)
    df, skipped = load_prompts(cfg, seed=3)
    assert df["problem"].to_list() == ["No box here", "What is 1+1?", "What is 1+1?", "later"]
    assert df["answer"].to_list() == [None, "2", "2", "5"]
    assert df["solution"].to_list()[3] == r"\boxed{5}" and skipped["no_problem"] == 1
    pid = prompt_id("What is 1+1?")
    assert df["prompt_id"].to_list()[1:3] == [pid, f"{pid}-2"] and df["prompt_id"].n_unique() == 4
    assert load_prompts(cfg, seed=4)[0].equals(df)  # no seed in it
    with pytest.raises(ValueError, match="shuffle"):
        PromptsConfig(first_rows=True, shuffle=True)
