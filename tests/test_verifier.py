"""Verifier: math-verify equivalences, statuses, timeouts on pathological inputs, Ray tasks, verify_file."""

import json
import time
from pathlib import Path

import polars as pl
import pytest

from data_gen.config import VerifyConfig
from data_gen.verifier import VerifierError, grade, grade_many, reward, verify_file, verify_frame

EQUIVALENT = [
    (r"The answer is \boxed{\frac{1}{2}}.", "0.5"),
    (r"So \boxed{0.5}", r"\frac{1}{2}"),
    (r"Thus \boxed{x=3}", "3"),
    (r"\boxed{\{3, 1, 2\}}", r"\{1,2,3\}"),
    (r"\boxed{50\%}", "0.5"),
    (r"\boxed{\sqrt{4}}", "2"),
]
DIFFERENT = [
    (r"\boxed{\frac{1}{3}}", "0.5"),
    (r"\boxed{x=4}", "3"),
    (r"\boxed{\{1, 2\}}", r"\{1,2,3\}"),
    (r"\boxed{5}", "0.5"),
]
PATHOLOGICAL = {
    "long": "a" * 100_000 + r" \boxed{3",
    "nested": "\\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}",
    "tower": r"\boxed{10^{10^{10^{10}}}}",
}


@pytest.mark.parametrize("response,gold", EQUIVALENT)
def test_equivalent(response, gold):
    g = grade(response, gold)
    assert g.correct and g.status == "ok" and g.pred


@pytest.mark.parametrize("response,gold", DIFFERENT)
def test_not_equivalent(response, gold):
    g = grade(response, gold)
    assert not g.correct and g.status == "ok"


def test_no_answer_and_unreadable_gold():
    assert grade("I do not know.", "3").status == "no_answer"
    assert grade(r"\boxed{3}", "").status == "error"  # an empty gold is an error, not "wrong"


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_pathological_inputs_bounded_by_timeout(name):
    start = time.monotonic()
    g = grade(PATHOLOGICAL[name], "3", timeout_s=1.0)
    assert time.monotonic() - start < 3.0
    assert not g.correct and g.status in ("timeout", "no_answer", "ok")


def test_grade_many_and_reward():
    responses = [r for r, _ in EQUIVALENT + DIFFERENT]
    golds = [g for _, g in EQUIVALENT + DIFFERENT]
    assert [g.correct for g in grade_many(responses, golds)] == [True] * len(EQUIVALENT) + [False] * len(DIFFERENT)
    assert reward([r"\boxed{4}", r"\boxed{5}"], ["4", "4"]) == [1.0, 0.0]


def test_refuses_non_main_thread():
    import threading

    errors = []
    t = threading.Thread(target=lambda: errors.append(_catch(lambda: grade(r"\boxed{1}", "1"))))
    t.start()
    t.join()
    assert errors and isinstance(errors[0], RuntimeError)


def _catch(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def test_verify_frame_in_ray_tasks(ray_local):
    rows = EQUIVALENT + DIFFERENT + [(PATHOLOGICAL["tower"], "3")]
    df = pl.DataFrame({"response": [r for r, _ in rows], "answer": [g for _, g in rows]})
    out = verify_frame(df, VerifyConfig(chunk_size=3, timeout_s=1.0))
    assert out["correct"].to_list() == [True] * len(EQUIVALENT) + [False] * (len(DIFFERENT) + 1)
    assert set(out["status"].to_list()) <= {"ok", "timeout"}
    assert out["status"][-1] == "timeout"


def test_verify_frame_fails_loudly_on_errors(ray_local):
    df = pl.DataFrame({"response": [r"\boxed{1}"] * 4, "answer": ["", "1", "1", "1"]})
    with pytest.raises(VerifierError, match="chunk 0"):
        verify_frame(df, VerifyConfig(chunk_size=4, max_error_rate=0.05))


def test_verify_file_math500_reference_solutions(ray_local, tmp_path):
    src = Path(__file__).resolve().parents[1] / "evaluators" / "data" / "math500.jsonl"  # shipped with the project
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"response": r["solution"], "answer": r["answer"]}) + "\n" for r in rows))
    counts = verify_file(inp, tmp_path / "out.parquet", VerifyConfig(chunk_size=125))
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert len(out) == len(rows) and {"correct", "pred", "status"} <= set(out.columns)
    assert counts["share_correct"] >= 0.99, counts


def test_verify_file_bad_input(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"response": "x", "answer": "1"}\nnot json\n')
    with pytest.raises(VerifierError, match=r"bad.jsonl: row 2"):
        verify_file(bad, tmp_path / "o.jsonl", VerifyConfig())
    nocol = tmp_path / "nocol.jsonl"
    nocol.write_text('{"response": "x"}\n')
    with pytest.raises(VerifierError, match="'answer'"):
        verify_file(nocol, tmp_path / "o.jsonl", VerifyConfig())
