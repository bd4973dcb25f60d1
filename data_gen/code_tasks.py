"""Code tasks for the `code` verifier: a toy set the workbench generates, and HumanEval-style problems shipped
as data (`data_gen/data/humaneval_style.jsonl`, written for this project in HumanEval's layout).

A code problem is a prompt row like any other (DESIGN.md): `problem` (what the model is asked), `answer`
(the test code the sandbox runs after the model's program: plain asserts, or HumanEval's `check` function
and the call `check(entry_point)`), and `solution` (a reference program in a ```python block, so SFT on
demonstrations works as for math).

Toy tasks are small functions with drawn constants (`affine(x)` returns `3 * x - 2`, ...); their expected
outputs come from running our own reference solution, in-process (trusted code). As for the arithmetic toy
task, one problem in `EVAL_MODULUS` (by a hash of its text) is held out for the `toy-code` benchmark.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import polars as pl

EVAL_MODULUS = 10
HUMANEVAL_STYLE = Path(__file__).parent / "data" / "humaneval_style.jsonl"
COLUMNS = {"prompt_id": pl.String, "source": pl.String, "problem": pl.String, "answer": pl.String,
           "solution": pl.String}

# name, signature, task text, reference body, test inputs; {a}, {b}, {c} are drawn per problem.
FAMILIES = [
    ("affine", "x", "returns {a} * x + {b}", "return {a} * x + {b}", ["0", "1", "-2", "7"]),
    ("count_char", "s", "returns how many times the character '{c}' occurs in the string s",
     "return s.count('{c}')", ["''", "'{c}'", "'a{c}b{c}{c}'", "'xyz'"]),
    ("clip", "x", "returns x limited to the range from {a} to {a} + {b} (inclusive)",
     "return max({a}, min({a} + {b}, x))", ["-100", "{a}", "{a} + 1", "100"]),
    ("sum_multiples", "n", "returns the sum of the positive integers below n that are divisible by {b}",
     "return sum(i for i in range(1, n) if i % {b} == 0)", ["1", "10", "31", "100"]),
    ("repeat_word", "w", "returns the string w repeated {b} times, separated by '{c}'",
     "return '{c}'.join([w] * {b})", ["'ab'", "''", "'x'"]),
    ("spread", "xs", "returns the largest element of the non-empty list xs minus the smallest, times {b}",
     "return (max(xs) - min(xs)) * {b}", ["[1]", "[3, -1, 4]", "[5, 5, 9, 0]"]),
    ("is_multiple", "n", "returns True when the integer n is divisible by {b}, else False",
     "return n % {b} == 0", ["0", "{b}", "{b} + 1", "-{b}"]),
    ("power_sum", "xs", "returns the sum of x ** {b} over the numbers x in the list xs",
     "return sum(x ** {b} for x in xs)", ["[]", "[1, 2]", "[-1, 3, 0]"]),
]


def _is_eval(problem: str) -> bool:
    return int.from_bytes(hashlib.sha256(problem.encode()).digest()[:8], "big") % EVAL_MODULUS == 0


def prompt_id(problem: str) -> str:
    return "code-" + hashlib.sha256(problem.strip().encode()).hexdigest()[:16]


def make_toy_code_problem(rng: random.Random) -> dict:
    """One toy problem: problem text, test asserts (answer) and the reference solution."""
    name, arg, task, body, inputs = rng.choice(FAMILIES)
    consts = {"a": rng.randint(-20, 20), "b": rng.randint(2, 9), "c": rng.choice("abcdefghiklmnoxz")}
    program = f"def {name}({arg}):\n    {body.format(**consts)}\n"
    namespace: dict = {}
    exec(program, namespace)  # noqa: S102 - our own reference solution, never a model's output
    tests = []
    for raw in inputs:  # our own literals, never model output
        call = raw.format(**consts)
        tests.append(f"assert {name}({call}) == {namespace[name](eval(call))!r}")
    problem = f"Write a Python function `{name}({arg})` that {task.format(**consts)}."
    return {"problem": problem, "answer": "\n".join(tests) + "\n", "solution": f"```python\n{program}```"}


def _draw(n: int, seed: int, want_eval: bool) -> list[dict]:
    rng, rows, seen = random.Random(seed), [], set()
    for _ in range(n * 200):
        if len(rows) == n:
            break
        row = make_toy_code_problem(rng)
        if row["problem"] in seen or _is_eval(row["problem"]) != want_eval:
            continue
        seen.add(row["problem"])
        rows.append({"prompt_id": prompt_id(row["problem"]), "source": "toy-code", **row})
    if len(rows) < n:
        raise ValueError(f"toy-code: only {len(rows)} distinct problems in this split, {n} asked for")
    return rows


def toy_code_prompts(n: int, seed: int) -> pl.DataFrame:
    """n distinct training-split toy code problems (columns of the prompts table)."""
    return pl.DataFrame(_draw(n, seed, want_eval=False), schema=COLUMNS)


def toy_code_benchmark_rows(n: int = 50) -> list[dict]:
    """The `toy-code` benchmark: n held-out problems, the same on every machine."""
    return _draw(n, seed=12345, want_eval=True)


def humaneval_style_rows(path: str | Path = HUMANEVAL_STYLE) -> list[dict]:
    """HumanEval-layout rows (task_id, prompt, canonical_solution, test, entry_point) as code problems."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            out.append({"task_id": r["task_id"], "problem": r["prompt"],
                        "answer": f"{r['test']}\n\ncheck({r['entry_point']})\n",
                        "solution": f"```python\n{r['prompt']}{r['canonical_solution']}```"})
        except (json.JSONDecodeError, KeyError) as exc:
            raise ValueError(f"{path}: row {i}: not a HumanEval-style problem ({exc})") from None
    return out
