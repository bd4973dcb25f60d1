"""The toy task: short arithmetic chains with a step-by-step worked solution ending in \\boxed{answer}.

A problem is an expression such as `12+7-30`; its solution reduces it one operation at a time
(`*` first, then left to right): ` 12+7=19, 19-30=-11. \\boxed{-11}`.

Problems are split into a training and an evaluation part by a hash of the problem text
(`is_eval_problem`): training prompts (`toy_prompts`) and the toy model's pretraining data come only
from the training part, the toy benchmarks (`toy_benchmark`) only from the evaluation part, so toy-id
has the training distribution but never a training problem.
"""

from __future__ import annotations

import hashlib
import random

import polars as pl

from data_gen.config import ToyTaskConfig

EVAL_MODULUS = 10  # one problem in EVAL_MODULUS (by hash) belongs to the evaluation split

TOY_BENCHMARKS: dict[str, ToyTaskConfig] = {
    "toy-id": ToyTaskConfig(),  # the training distribution (held-out problems)
    "toy-long": ToyTaskConfig(min_ops=4, max_ops=5),  # longer chains
    "toy-big": ToyTaskConfig(min_digits=1, max_digits=3),  # larger numbers: operands up to 999 (training: 99)
}


def problem_hash(problem: str) -> int:
    """A stable integer hash of the canonical problem text (not Python's salted hash())."""
    return int.from_bytes(hashlib.sha256(problem.strip().encode()).digest()[:8], "big")


def prompt_id(problem: str) -> str:
    """Stable prompt id: the first 16 hex digits of sha256 of the problem text."""
    return "toy-" + hashlib.sha256(problem.strip().encode()).hexdigest()[:16]


def is_eval_problem(problem: str) -> bool:
    """True when the problem belongs to the evaluation split (never used for training)."""
    return problem_hash(problem) % EVAL_MODULUS == 0


def _operand(rng: random.Random, cfg: ToyTaskConfig) -> int:
    digits = rng.randint(cfg.min_digits, cfg.max_digits)
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def _check(cfg: ToyTaskConfig) -> None:
    if cfg.min_ops > cfg.max_ops:
        raise ValueError(f"toy task: min_ops={cfg.min_ops} > max_ops={cfg.max_ops}")
    if cfg.min_digits > cfg.max_digits:
        raise ValueError(f"toy task: min_digits={cfg.min_digits} > max_digits={cfg.max_digits}")
    if not cfg.operators or set(cfg.operators) - set("+-*"):
        raise ValueError(f"toy task: operators={cfg.operators!r} must be a non-empty subset of '+-*'")


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def solve_steps(numbers: list[int], ops: list[str]) -> list[tuple[int, str, int, int]]:
    """Reduce an expression step by step: `*` first (leftmost), then `+`/`-` left to right.

    Returns the steps as (left, op, right, result); the last result is the value of the expression.
    """
    numbers, ops, steps = list(numbers), list(ops), []
    while ops:
        i = ops.index("*") if "*" in ops else 0
        a, op, b = numbers[i], ops[i], numbers[i + 1]
        c = _apply(a, op, b)
        steps.append((a, op, b, c))
        numbers[i : i + 2] = [c]
        del ops[i]
    return steps


def format_solution(steps: list[tuple[int, str, int, int]]) -> str:
    """The worked solution text for the given steps: ` a+b=c, c-d=e. \\boxed{e}`."""
    parts = [f"{a}{op}{b}={c}" for a, op, b, c in steps]
    return " " + ", ".join(parts) + ". \\boxed{" + str(steps[-1][3]) + "}"


def sample_expression(rng: random.Random, cfg: ToyTaskConfig) -> tuple[list[int], list[str]]:
    """Draw the numbers and operators of one problem."""
    _check(cfg)
    n_ops = rng.randint(cfg.min_ops, cfg.max_ops)
    numbers = [_operand(rng, cfg) for _ in range(n_ops + 1)]
    ops = [rng.choice(cfg.operators) for _ in range(n_ops)]
    return numbers, ops


def make_problem(rng: random.Random, cfg: ToyTaskConfig) -> dict:
    """One toy problem: {problem, answer (integer as text), solution (ends in \\boxed{answer})}."""
    numbers, ops = sample_expression(rng, cfg)
    problem = str(numbers[0]) + "".join(f"{op}{b}" for op, b in zip(ops, numbers[1:]))
    steps = solve_steps(numbers, ops)
    return {"problem": problem, "answer": str(steps[-1][3]), "solution": format_solution(steps)}


def _draw(cfg: ToyTaskConfig, n: int, seed: int, want_eval: bool) -> list[dict]:
    """`n` distinct problems of one split, in a fixed order given the seed."""
    rng = random.Random(seed)
    seen, rows = set(), []
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise ValueError(f"toy task: could not draw {n} distinct problems from {cfg.model_dump()}")
        item = make_problem(rng, cfg)
        if item["problem"] in seen or is_eval_problem(item["problem"]) != want_eval:
            continue
        seen.add(item["problem"])
        rows.append(item)
    return rows


def toy_prompts(cfg: ToyTaskConfig, n: int, seed: int) -> pl.DataFrame:
    """`n` distinct training-split prompts: prompt_id, source="toy", problem, answer, solution."""
    rows = _draw(cfg, n, seed, want_eval=False)
    return pl.DataFrame(
        {
            "prompt_id": [prompt_id(r["problem"]) for r in rows],
            "source": ["toy"] * len(rows),
            "problem": [r["problem"] for r in rows],
            "answer": [r["answer"] for r in rows],
            "solution": [r["solution"] for r in rows],
        },
        schema={"prompt_id": pl.Utf8, "source": pl.Utf8, "problem": pl.Utf8, "answer": pl.Utf8, "solution": pl.Utf8},
    )


def toy_benchmark(name: str, n: int = 200) -> pl.DataFrame:
    """A toy benchmark (`toy-id`, `toy-long`, `toy-big`): `n` evaluation-split problems, fixed seed."""
    if name not in TOY_BENCHMARKS:
        raise ValueError(f"unknown toy benchmark {name!r}; known: {', '.join(TOY_BENCHMARKS)}")
    seed = problem_hash(name) % 2**31
    rows = _draw(TOY_BENCHMARKS[name], n, seed, want_eval=True)
    return pl.DataFrame(
        {"problem": [r["problem"] for r in rows], "answer": [r["answer"] for r in rows]},
        schema={"problem": pl.Utf8, "answer": pl.Utf8},
    )


def make_demonstration(rng: random.Random, cfg: ToyTaskConfig, slip_rate: float) -> dict:
    """A training-split problem with its worked solution; with probability `slip_rate` one step's result
    is off by a small amount and the chain continues from the wrong value (a deliberately imperfect
    demonstration, used to pretrain the toy base model). Adds key `slipped` (bool)."""
    while True:
        numbers, ops = sample_expression(rng, cfg)
        problem = str(numbers[0]) + "".join(f"{op}{b}" for op, b in zip(ops, numbers[1:]))
        if not is_eval_problem(problem):
            break
    answer = solve_steps(numbers, ops)[-1][3]
    slip_at = rng.randrange(len(ops)) if rng.random() < slip_rate else -1
    steps = []
    while ops:
        i = ops.index("*") if "*" in ops else 0
        a, op, b = numbers[i], ops[i], numbers[i + 1]
        c = _apply(a, op, b)
        if len(steps) == slip_at:
            c += rng.choice([-10, -2, -1, 1, 2, 10])
        steps.append((a, op, b, c))
        numbers[i : i + 2] = [c]
        del ops[i]
    return {"problem": problem, "answer": str(answer), "solution": format_solution(steps), "slipped": slip_at >= 0}
