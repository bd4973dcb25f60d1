"""Prompt sources: the prompt set the base model is sampled on (the paper: 100k NuminaMath-CoT problems).

`load_prompts` returns the prompts table (prompt_id, source, problem, answer, solution) and the number of
rows skipped per reason. Sources:

- `toy`: the synthetic arithmetic task (data_gen/toy.py); `max_prompts` says how many to draw.
- `smol`: arithmetic sized for SmolLM2-135M (data_gen/smol_tasks.py); `max_prompts` of them, or all.
- `hf`: a Hugging Face dataset (`datasets.load_dataset(hf_id, hf_subset, split=...)`).
- `file`: a local .jsonl or .parquet file.

For hf and file the fields are mapped by `problem_field`, `answer_field` and `solution_field`. The gold
answer is `answer_field` when set, else the last `\\boxed{...}` of the solution (NuminaMath's layout).
Rows without a problem or a usable gold answer are skipped and counted; duplicate problems are dropped
(counted as `duplicate`); the rest are shuffled with the run seed and cut to `max_prompts`.
A prompt_id is a hash of the problem text, so it is stable across runs and orderings.

`first_rows` instead takes the source's first `max_prompts` rows as they are (the paper's Table 1
demonstrations: the first 100k rows of NuminaMath-CoT, unfiltered): only rows without a problem are
skipped; a missing gold answer stays null and a repeated problem gets `<prompt_id>-2`, `-3`, ... so that
prompt_id stays a unique key.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from pathlib import Path

import polars as pl

from data_gen.config import PromptsConfig
from data_gen.io import last_boxed, read_rows

COLUMNS = {"prompt_id": pl.String, "source": pl.String, "problem": pl.String, "answer": pl.String,
           "solution": pl.String}


class PromptsError(ValueError):
    """A prompt-source problem, already formatted as one line."""


def prompt_id(problem: str) -> str:
    """Stable id of a problem: the first 16 hex digits of sha256 of its stripped text."""
    return "p-" + hashlib.sha256(problem.strip().encode()).hexdigest()[:16]


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def map_rows(rows, cfg: PromptsConfig, source: str, where: str) -> tuple[list[dict], dict]:
    """Map raw rows to prompt rows by the configured fields; returns (kept rows, skipped counts by reason).

    `where` names the input (file or dataset) in errors. A configured field missing from every row is an
    error (a misspelt field name), not a skip. With `cfg.first_rows`, rows without a gold answer and
    repeated problems are kept (see the module docstring).
    """
    skipped = {"no_problem": 0, "no_answer": 0, "duplicate": 0}
    kept, seen = [], set()
    fields_seen: set[str] = set()
    n = 0
    for row in rows:
        n += 1
        fields_seen.update(row.keys())
        problem = _text(row.get(cfg.problem_field))
        solution = _text(row.get(cfg.solution_field)) if cfg.solution_field else None
        answer = _text(row.get(cfg.answer_field)) if cfg.answer_field else last_boxed(solution)
        if problem is None:
            skipped["no_problem"] += 1
            continue
        if answer is None and not cfg.first_rows:
            skipped["no_answer"] += 1
            continue
        pid = prompt_id(problem)
        if pid in seen and cfg.first_rows:
            pid = next(f"{pid}-{k}" for k in itertools.count(2) if f"{pid}-{k}" not in seen)
        elif pid in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(pid)
        kept.append({"prompt_id": pid, "source": source, "problem": problem, "answer": answer,
                     "solution": solution})
    if n:
        for name, field in (("problem_field", cfg.problem_field), ("answer_field", cfg.answer_field),
                            ("solution_field", cfg.solution_field)):
            if field and field not in fields_seen and not (name == "solution_field" and cfg.answer_field):
                raise PromptsError(f"{where}: prompts.{name}: no column {field!r} (columns: "
                                   f"{sorted(fields_seen)})")
    return kept, skipped


def _shuffle_and_cut(rows: list[dict], cfg: PromptsConfig, seed: int) -> list[dict]:
    rows = sorted(rows, key=lambda r: r["prompt_id"])  # order-independent before the seeded shuffle
    if cfg.shuffle:
        random.Random(seed).shuffle(rows)
    return rows[:cfg.max_prompts] if cfg.max_prompts else rows


def load_prompts(cfg: PromptsConfig, seed: int) -> tuple[pl.DataFrame, dict]:
    """Load the prompt set described by `cfg`; returns (prompts table, skipped-row counts by reason)."""
    if cfg.source in ("toy", "toy-code"):
        if cfg.max_prompts is None:
            raise PromptsError(f"prompts.max_prompts: required with source={cfg.source} (how many problems to draw)")
        from data_gen.code_tasks import toy_code_prompts
        from data_gen.toy import toy_prompts

        df = toy_prompts(cfg.toy, cfg.max_prompts, seed) if cfg.source == "toy" else \
            toy_code_prompts(cfg.max_prompts, seed)
        df = df.with_columns(*(pl.col(c).cast(t) if c in df.columns else pl.lit(None, t).alias(c)
                               for c, t in COLUMNS.items())).select(list(COLUMNS))
        return df, {"no_problem": 0, "no_answer": 0, "duplicate": 0}
    if cfg.source == "smol":  # every training-split prompt when max_prompts is unset (the sweep's pool)
        from data_gen.smol_tasks import smol_prompts

        return smol_prompts(cfg.max_prompts, seed), {"no_problem": 0, "no_answer": 0, "duplicate": 0}
    if cfg.source == "file":
        if not cfg.path:
            raise PromptsError("prompts.path: required with source=file")
        where = cfg.path
        rows = read_rows(cfg.path, PromptsError)
        source = Path(cfg.path).stem
    else:
        if not cfg.hf_id:
            raise PromptsError("prompts.hf_id: required with source=hf")
        import datasets

        where = f"{cfg.hf_id}[{cfg.split}]"
        try:
            rows = datasets.load_dataset(cfg.hf_id, cfg.hf_subset, split=cfg.split)
        except Exception as exc:  # noqa: BLE001 - reported as one line naming the dataset
            raise PromptsError(f"{where}: cannot load dataset ({type(exc).__name__}: {exc})") from None
        source = cfg.hf_id
    if cfg.first_rows:
        kept, skipped = map_rows(itertools.islice(rows, cfg.max_prompts), cfg, source, where)
    else:
        kept, skipped = map_rows(rows, cfg, source, where)
        kept = _shuffle_and_cut(kept, cfg, seed)
    return pl.DataFrame(kept, schema=COLUMNS), skipped
