"""The evaluation benchmarks of the paper's Tables 1 and 2 (plus GSM8K and the toy benchmarks).

A `Benchmark` knows where its problems come from (a Hugging Face id, or a local jsonl/parquet with the
same layout) and how to read the gold answer out of a row. `load()` always returns one frame with
columns `problem_id`, `problem`, `answer` (the gold answer as text), whatever the source layout was:

    MATH500.load(limit=50)                       # first 50 problems of MATH-500 (the shipped copy)
    get_benchmark("minerva_math").load("x.jsonl")  # a local copy of your own
    MATH500.load("hub")                          # the Hugging Face id, downloaded now

Where the data comes from when no path is given, first match wins:
1. `$WORKBENCH_BENCHMARKS_DIR/<name>.jsonl`;
2. the copy shipped inside the package, `evaluators/data/<name>.jsonl`, checked against its sha256 in
   `SHIPPED_SHA256` on every load (provenance and licenses: evaluators/data/README.md). These are the
   Qwen2.5-Math harness's copies the paper's authors evaluated on (yongliang-wu/DFT math_evaluation/data/);
3. the Hugging Face id (`datasets.load_dataset`), downloaded only then; `path="hub"` asks for it.

The objects are registered under the entry-point group `workbench.benchmarks` in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import polars as pl

from data_gen.code_tasks import humaneval_style_rows, toy_code_benchmark_rows
from data_gen.io import last_boxed, read_rows
from data_gen.smol_tasks import smol_benchmark_rows


class BenchmarkError(ValueError):
    """A benchmark file or row that cannot be used, as one line naming the file and row."""


# ---------------------------------------------------------------- gold-answer extraction


def _as_text(value) -> str:
    """A gold value as text: floats that are whole numbers lose their `.0` (AMC23 stores 27 as 27.0)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def field_gold(field: str) -> Callable[[dict], str]:
    """Gold answer = the row's `field` (MATH-500, AIME24, AMC23)."""
    return lambda row: _as_text(row.get(field))


def boxed_gold(field: str) -> Callable[[dict], str]:
    """Gold answer = the last `\\boxed{}` of the row's `field` (Minerva Math's `solution`)."""
    return lambda row: last_boxed(row.get(field) or "") or ""


def after_hashes_gold(field: str) -> Callable[[dict], str]:
    """Gold answer = the text after `####` in the row's `field` (GSM8K), thousands commas removed."""

    def gold(row: dict) -> str:
        text = row.get(field) or ""
        if "####" not in text:
            return ""
        return text.rsplit("####", 1)[1].strip().replace(",", "")

    return gold


def olympiad_gold(field: str = "final_answer") -> Callable[[dict], str]:
    """Gold answer = OlympiadBench's `final_answer` list joined by ", ", with `$` signs removed.

    A multiple-answer problem can hold several answers in one string (`$69$,$84$`); they become `69,84`.
    The `unit` field is not appended: graders compare the number, as the Qwen2.5-Math evaluation does.
    """

    def gold(row: dict) -> str:
        value = row.get(field)
        parts = value if isinstance(value, list) else [value]
        return ", ".join(_as_text(p).replace("$", "").strip() for p in parts if _as_text(p))

    return gold


ANSWER_GOLD = field_gold("answer")

# ---------------------------------------------------------------- the benchmark object


SHIPPED_DIR = Path(__file__).resolve().parent / "data"
# sha256 of every shipped file: a changed or damaged copy is an error, never silently other problems
SHIPPED_SHA256 = {
    "aime24": "af2b8bd2aa911b6333ad0df32f3ca05c7ae8ed10f1731f4372c8ae26990bf7ac",
    "amc23": "43707e1ca784602d8479de24ee8ce36609dbebc46dd152b0b12a46611aa898a4",
    "gsm8k": "9f098df7ff4522078d6ccec27a5c38a454790fdb51131bedfaa0e490070d5394",
    "math500": "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
    "minerva_math": "0e656b430d3a0a1dab6aa853f453ba3805e28e2cabe4fc72486a897cc09d8ba2",
    "olympiadbench": "bb8c1e38a16ea9eacb77530315a674d883f267fbff79183effc53681b4fcc416",
}


def shipped_path(name: str) -> Path | None:
    """The verified shipped copy of benchmark `name`, or None when none ships; BenchmarkError when the file
    is missing from the install or its sha256 differs from the pinned one."""
    if name not in SHIPPED_SHA256:
        return None
    path = SHIPPED_DIR / f"{name}.jsonl"
    if not path.is_file():
        raise BenchmarkError(f"{path}: shipped benchmark file missing (reinstall the package)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHIPPED_SHA256[name]:
        raise BenchmarkError(f"{path}: sha256 {digest[:16]}... differs from the pinned "
                             f"{SHIPPED_SHA256[name][:16]}... (the file was changed or damaged)")
    return path


@dataclass(frozen=True)
class Benchmark:
    """One evaluation set: its source and how a row maps onto (problem_id, problem, answer)."""

    name: str
    hf_id: str | None = None  # Hugging Face dataset id
    split: str = "test"
    hf_subset: str | None = None  # dataset configuration name
    problem_field: str = "problem"
    id_field: str | None = None  # a stable id column; row number when None or missing
    gold: Callable[[dict], str] = ANSWER_GOLD
    toy: bool = False  # problems come from data_gen.toy.toy_benchmark(name)
    verifier: str = "math"  # the registered verifier that grades it (`workbench verifiers`)
    rows: Callable[[], list[dict]] | None = None  # problems built by the workbench itself (code tasks)

    def default_path(self) -> Path | None:
        """The local file used when no path is given (see the module docstring), or None."""
        env = os.environ.get("WORKBENCH_BENCHMARKS_DIR")
        if env and (Path(env) / f"{self.name}.jsonl").exists():
            return Path(env) / f"{self.name}.jsonl"
        return shipped_path(self.name)

    def _source_rows(self, path: str | None, limit: int | None) -> tuple[list[dict], str]:
        if path is not None and str(path) != "hub":
            return read_rows(path, BenchmarkError), str(path)
        if self.rows is not None:
            return self.rows(), f"built-in benchmark {self.name}"
        if self.toy:
            from data_gen.toy import toy_benchmark

            n = max(200, limit or 0)
            return toy_benchmark(self.name, n).to_dicts(), f"toy benchmark {self.name}"
        local = self.default_path() if path is None else None
        if local is not None:
            return read_rows(local, BenchmarkError), str(local)
        if self.hf_id is None:
            raise BenchmarkError(f"benchmark {self.name}: no local file and no Hugging Face id")
        import datasets

        data = datasets.load_dataset(self.hf_id, self.hf_subset, split=self.split)
        return [dict(r) for r in data], f"{self.hf_id}[{self.split}]"

    def load(self, path: str | None = None, limit: int | None = None) -> pl.DataFrame:
        """Problems as a frame (problem_id, problem, answer); `limit` keeps the first N."""
        rows, source = self._source_rows(path, limit)
        if limit is not None:
            rows = rows[:limit]
        ids = [r.get(self.id_field) for r in rows] if self.id_field else []
        if not ids or any(i is None for i in ids) or len({str(i) for i in ids}) != len(ids):
            ids = list(range(len(rows)))  # no usable id column: the row number is the id
        out = {"problem_id": [], "problem": [], "answer": []}
        for i, (row, pid) in enumerate(zip(rows, ids)):
            # Hub copies of a set do not always use the layout of our files: fall back to the usual names.
            problem = next((row[f] for f in (self.problem_field, "problem", "question")
                            if isinstance(row.get(f), str) and row[f].strip()), None)
            if problem is None:
                raise BenchmarkError(f"{source}: row {i}: no problem in field {self.problem_field!r}")
            answer = self.gold(row) or (_as_text(row.get("answer")) if not isinstance(row.get("answer"), list) else "")
            if not answer:
                raise BenchmarkError(f"{source}: row {i}: no gold answer ({self.name})")
            out["problem_id"].append(f"{self.name}/{pid}")
            out["problem"].append(problem)
            out["answer"].append(answer)
        return pl.DataFrame(out, schema={"problem_id": pl.Utf8, "problem": pl.Utf8, "answer": pl.Utf8})


MATH500 = Benchmark("math500", "HuggingFaceH4/MATH-500", id_field="unique_id", gold=field_gold("answer"))
MINERVA_MATH = Benchmark("minerva_math", "math-ai/minervamath", id_field="idx", gold=boxed_gold("solution"))
OLYMPIADBENCH = Benchmark(
    "olympiadbench", "Hothan/OlympiadBench", split="train", hf_subset="OE_TO_maths_en_COMP",
    problem_field="question", id_field="id", gold=olympiad_gold("final_answer"),
)
AIME24 = Benchmark("aime24", "math-ai/aime24", id_field="id", gold=field_gold("answer"))
AMC23 = Benchmark("amc23", "math-ai/amc23", id_field="id", gold=field_gold("answer"))
GSM8K = Benchmark("gsm8k", "openai/gsm8k", hf_subset="main", problem_field="question", id_field="idx",
                  gold=after_hashes_gold("answer"))
TOY_ID = Benchmark("toy-id", toy=True)
TOY_LONG = Benchmark("toy-long", toy=True)
TOY_BIG = Benchmark("toy-big", toy=True)
TOY_CODE = Benchmark("toy-code", rows=toy_code_benchmark_rows, verifier="code")
HUMANEVAL_STYLE = Benchmark("humaneval-style", rows=humaneval_style_rows, id_field="task_id", verifier="code")
# SmolLM2-sized arithmetic (data_gen/smol_tasks.py): answers in plain text, graded by math-verify
SMOL_ID = Benchmark("smol-id", rows=partial(smol_benchmark_rows, "smol-id"))
SMOL_BIG = Benchmark("smol-big", rows=partial(smol_benchmark_rows, "smol-big"))
SMOL_CHAIN = Benchmark("smol-chain", rows=partial(smol_benchmark_rows, "smol-chain"))
SMOL_WORDS = Benchmark("smol-words", rows=partial(smol_benchmark_rows, "smol-words"))

REAL_BENCHMARKS = [MATH500, MINERVA_MATH, OLYMPIADBENCH, AIME24, AMC23, GSM8K]


def get_benchmark(name: str) -> Benchmark:
    """A registered benchmark by name (entry-point group `workbench.benchmarks`)."""
    from workbench.registry import get_benchmark as _get

    return _get(name)
