from pathlib import Path

import pytest

from data_gen.io import DataFileError, last_boxed, read_rows


def test_last_boxed_nested_and_balanced():
    assert last_boxed(r"a \boxed{1} then \boxed{\frac{1}{\sqrt{2}}}.") == r"\frac{1}{\sqrt{2}}"
    assert last_boxed(r"\boxed{ \{1,2\} }") == r"\{1,2\}"
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed("no box") is None
    assert last_boxed(r"\boxed{unbalanced") is None
    assert last_boxed(r"\boxed{}") is None
    assert last_boxed(None) is None


def test_read_rows_errors_name_file_and_row(tmp_path: Path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_rows(good) == [{"a": 1}, {"a": 2}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DataFileError, match=r"bad.jsonl: row 2: not valid JSON"):
        read_rows(bad)
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(KeyError, match=r"list.jsonl: row 1: expected a JSON object"):
        read_rows(tmp_path / "list.jsonl", KeyError)
    with pytest.raises(DataFileError, match="file not found"):
        read_rows(tmp_path / "absent.jsonl")
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(DataFileError, match="expected a .jsonl or .parquet"):
        read_rows(tmp_path / "x.csv")
