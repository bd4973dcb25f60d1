"""Small arithmetic questions sized for SmolLM2-135M-Instruct (`prompts.source: smol`, benchmarks `smol-*`).

SmolLM2-135M-Instruct answers about a quarter of one-digit questions such as "What is 2 + 9? Answer with just
the number." (temperature 1.0), in its own words: "2 + 9 = 11", "6 times 3 is 18", sometimes a paragraph
around the number. It almost never writes `\\boxed{}`, so these tasks are graded by the `math` verifier
(math-verify), which takes the answer from plain text. The instruction ("Answer with just the number.") lives in
the recipe's template, not in the problems; docs/smollm2.md has the measurements behind every choice here.

A *fact* is one arithmetic question `(a, op, b)` whatever its phrasing. Facts, not problem texts, are split: one
fact in `EVAL_MODULUS` (by a hash of the fact) belongs to the evaluation split, so no test problem asks a fact
that a training or validation prompt asks, in any phrasing.

- training prompts (`smol_prompts`): training-split facts of the in-distribution mix, each in both ID phrasings
  ("What is 7 + 5?", "Calculate 7 + 5."): `+` and `-` on 0..15 (non-negative results), `times` on 2..9;
  the demonstration (`solution`) is the answer in the model's own format, "7 + 5 = 12".
- `smol-id`: evaluation-split facts of the same mix and phrasings (held out, same distribution);
- `smol-big` (OOD, harder): two-digit additions, 10..99 + 10..99;
- `smol-chain` (OOD, harder): three one-digit numbers added, "What is 3 + 4 + 5?";
- `smol-words` (OOD, phrased differently): evaluation-split `+` / `-` facts as one-sentence word problems.

Every set is a pure function of this file (fixed seeds, no randomness from the machine);
tests/test_smol_tasks.py pins each benchmark's sha256 so a changed generator cannot go unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import random

import polars as pl

EVAL_MODULUS = 5  # one fact in EVAL_MODULUS (by hash) is held out for evaluation
# problems per OOD benchmark (smol-id holds all 174 evaluation-split ID problems; smol-chain's split has ~146)
BENCHMARK_SIZE = {"smol-big": 200, "smol-chain": 120, "smol-words": 200}
OP_WORDS = {"+": "+", "-": "-", "*": "times"}
ID_PHRASINGS = ("What is {a} {op} {b}?", "Calculate {a} {op} {b}.")
NAMES = ("Tom", "Anna", "Sam", "Lily", "Ben", "Mia", "Max", "Zoe")
THINGS = ("apples", "books", "coins", "pencils", "stickers", "cards", "marbles", "cookies")
COLUMNS = {"prompt_id": pl.String, "source": pl.String, "problem": pl.String, "answer": pl.String,
           "solution": pl.String}


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def fact_key(numbers: tuple[int, ...], ops: tuple[str, ...]) -> str:
    """The canonical text of a fact, e.g. `7+5` or `3+4+5`: what the split is decided on."""
    return str(numbers[0]) + "".join(f"{op}{n}" for op, n in zip(ops, numbers[1:]))


def is_eval_fact(key: str) -> bool:
    """True when the fact belongs to the evaluation split (never asked by a training or validation prompt)."""
    return _hash(key) % EVAL_MODULUS == 0


def prompt_id(problem: str) -> str:
    """Stable id: `smol-` and the first 16 hex digits of sha256 of the problem text."""
    return "smol-" + hashlib.sha256(problem.strip().encode()).hexdigest()[:16]


def _value(numbers: tuple[int, ...], ops: tuple[str, ...]) -> int:
    total = numbers[0]
    for op, n in zip(ops, numbers[1:]):
        total = total + n if op == "+" else total - n if op == "-" else total * n
    return total


def _solution(numbers: tuple[int, ...], ops: tuple[str, ...]) -> str:
    """The answer in the model's own format: `7 + 5 = 12`, `6 times 3 = 18`."""
    expr = str(numbers[0]) + "".join(f" {OP_WORDS[op]} {n}" for op, n in zip(ops, numbers[1:]))
    return f"{expr} = {_value(numbers, ops)}"


def id_facts() -> list[tuple[tuple[int, ...], tuple[str, ...]]]:
    """Every fact of the in-distribution mix: a + b and a - b (a >= b) on 0..15, a times b on 2..9."""
    facts = [((a, b), ("+",)) for a in range(16) for b in range(16)]
    facts += [((a, b), ("-",)) for a in range(16) for b in range(a + 1)]
    facts += [((a, b), ("*",)) for a in range(2, 10) for b in range(2, 10)]
    return facts


def _row(problem: str, numbers, ops, source: str) -> dict:
    return {"prompt_id": prompt_id(problem), "source": source, "problem": problem,
            "answer": str(_value(numbers, ops)), "solution": _solution(numbers, ops)}


def id_problems(want_eval: bool) -> list[dict]:
    """Every problem of one split of the in-distribution mix (each fact in each ID phrasing), in a fixed order."""
    rows = []
    for numbers, ops in id_facts():
        if is_eval_fact(fact_key(numbers, ops)) != want_eval:
            continue
        for phrasing in ID_PHRASINGS:
            problem = phrasing.format(a=numbers[0], op=OP_WORDS[ops[0]], b=numbers[1])
            rows.append(_row(problem, numbers, ops, "smol"))
    return rows


def smol_prompts(n: int | None, seed: int) -> pl.DataFrame:
    """Training-split prompts of the in-distribution mix, shuffled with `seed`; the first `n` (None: all).

    Prefix-stable: a larger `n` with the same seed starts with the same prompts (the sweep's validation split
    takes the ones after the training prompts)."""
    rows = sorted(id_problems(want_eval=False), key=lambda r: r["prompt_id"])
    random.Random(seed).shuffle(rows)
    if n is not None and n > len(rows):
        raise ValueError(f"prompts.max_prompts: the smol task has {len(rows)} training prompts, {n} asked for")
    return pl.DataFrame(rows[:n] if n is not None else rows, schema=COLUMNS)


def _word_problem(rng: random.Random, a: int, b: int, op: str) -> str:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    if op == "+":
        return f"{name} has {a} {thing}. {name} gets {b} more {thing}. How many {thing} does {name} have now?"
    return f"{name} has {a} {thing}. {name} gives away {b} {thing}. How many {thing} does {name} have left?"


def _draw_ood(name: str, rng: random.Random) -> tuple[str, tuple[int, ...], tuple[str, ...]]:
    """One candidate problem of an OOD benchmark: (problem text, numbers, ops)."""
    if name == "smol-big":
        numbers, ops = (rng.randint(10, 99), rng.randint(10, 99)), ("+",)
        return f"What is {numbers[0]} + {numbers[1]}?", numbers, ops
    if name == "smol-chain":
        numbers, ops = (rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9)), ("+", "+")
        return f"What is {numbers[0]} + {numbers[1]} + {numbers[2]}?", numbers, ops
    op = rng.choice("+-")
    a, b = rng.randint(1, 15), rng.randint(1, 15)
    if op == "-" and b > a:
        a, b = b, a
    return _word_problem(rng, a, b, op), (a, b), (op,)


SMOL_BENCHMARKS = ("smol-id", "smol-big", "smol-chain", "smol-words")
# sha256 of each benchmark at its default size (json of its rows, sorted keys): a generator that draws other
# problems (a code change, another Python's random) refuses to evaluate instead of scoring another test set
SMOL_SHA256 = {
    "smol-id": "131de1aa879f05efff4be309c80cfc249877df460505427e6577e9008db2d3ae",
    "smol-big": "b920ef79c48515cc943f87c54ca63dc6aec27f6212247cd8d66ca7e19d36a83d",
    "smol-chain": "a1fe0fad1b6ea8c6a8d09781a438c26e37dcc5fb87391379473065906fdca53b",
    "smol-words": "0cdd45e2c2ca8d866c1186705e3dd8468f73583e2e997d4bdb8d63df9e270227",
}


def rows_sha256(rows: list[dict]) -> str:
    """sha256 of a benchmark's rows as JSON with sorted keys."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def smol_benchmark_rows(name: str, n: int | None = None) -> list[dict]:
    """A smol benchmark's problems (problem, answer): evaluation-split facts only, fixed seed, same everywhere;
    at the default size (n None) checked against SMOL_SHA256."""
    rows = _benchmark_rows(name, n)
    if n is None and rows_sha256(rows) != SMOL_SHA256[name]:
        raise ValueError(f"{name}: generated problems differ from the pinned set (sha256 {rows_sha256(rows)[:16]}... "
                         f"!= {SMOL_SHA256[name][:16]}...); data_gen/smol_tasks.py changed or drew differently")
    return rows


def _benchmark_rows(name: str, n: int | None) -> list[dict]:
    if name not in SMOL_BENCHMARKS:
        raise ValueError(f"unknown smol benchmark {name!r}; known: {', '.join(SMOL_BENCHMARKS)}")
    rng = random.Random(_hash(name) % 2**31)
    if name == "smol-id":
        rows = id_problems(want_eval=True)
        rng.shuffle(rows)
        return [{"problem": r["problem"], "answer": r["answer"]} for r in rows[:n]]
    n = n or BENCHMARK_SIZE[name]
    rows, seen = [], set()
    for _ in range(200 * n):
        if len(rows) == n:
            break
        problem, numbers, ops = _draw_ood(name, rng)
        if problem in seen or not is_eval_fact(fact_key(numbers, ops)):
            continue
        seen.add(problem)
        rows.append({"problem": problem, "answer": str(_value(numbers, ops))})
    if len(rows) < n:
        raise ValueError(f"{name}: only {len(rows)} distinct evaluation-split problems, {n} asked for")
    return rows
