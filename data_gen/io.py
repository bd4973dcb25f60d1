"""Reading the small files users point the workbench at (jsonl or parquet), with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl


class DataFileError(ValueError):
    """A file the workbench cannot read, as one line naming the file (and row)."""


def read_rows(path: str | Path, error: type[Exception] = DataFileError) -> list[dict]:
    """The rows of a .jsonl / .json (one object per line) or .parquet file, as dicts.

    Problems raise `error` (the caller's own one-line error class) naming the file and row.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    if path.suffix == ".parquet":
        try:
            return pl.read_parquet(path).to_dicts()
        except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line naming the file
            raise error(f"{path}: not a readable parquet file ({type(exc).__name__})") from None
    if path.suffix not in (".jsonl", ".json"):
        raise error(f"{path}: expected a .jsonl or .parquet file")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}: row {lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise error(f"{path}: row {lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def last_boxed(text: str | None) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in text, with nested braces; None if absent."""
    if not isinstance(text, str) or not text:
        return None
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0 or text[start:i].strip() not in ("\\boxed", "\\fbox"):
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j].strip() or None
    return None  # unbalanced braces
