"""The verifier: grades a response against a gold answer with math-verify (the paper's correctness check).

A response is *correct* when the last answer math-verify extracts from it (normally the last `\\boxed{}`)
equals the gold answer symbolically or numerically. Every sample gets a `status`:

- `ok`: an answer was extracted and compared (correct or not);
- `no_answer`: nothing could be extracted from the response (counted wrong);
- `timeout`: parsing + comparing took longer than `timeout_s` (counted wrong);
- `error`: math-verify raised (counted wrong, and a chunk with too many errors fails the stage loudly).

Timeouts: math-verify's own timeouts use `signal.alarm` with whole seconds and each one cancels any outer
alarm, so we switch them off and put ONE `signal.setitimer` budget around parse + compare instead. Signals
only work in the main thread, so `grade` refuses to run elsewhere (raising, never scoring "wrong"): call it
in-process or in plain Ray tasks, never from threads or async actors. Responses are cut to their last
`MAX_RESPONSE_CHARS` characters before parsing (the answer is at the end), which bounds regex work.
"""

from __future__ import annotations

import math
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from data_gen.config import VerifyConfig
from data_gen.io import read_rows

MAX_RESPONSE_CHARS = 8000
MAX_GOLD_CHARS = 2000


class VerifierError(RuntimeError):
    """A verification run that must not produce a data set (too many errors, bad input file)."""


class _Deadline(BaseException):
    """Raised by our alarm; a BaseException so math-verify's `except Exception` cannot swallow it."""


@dataclass
class Grade:
    correct: bool
    pred: str | None
    status: str  # ok | no_answer | timeout | error


def _on_alarm(signum, frame):
    raise _Deadline()


class _time_limit:
    """Raise _Deadline in the main thread after `seconds` (float) of wall time."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "data_gen.verifier must run in a main thread (math-verify timeouts use signals); "
                "use plain Ray tasks or in-process calls, not threads or async actors"
            )
        self.old = signal.signal(signal.SIGALRM, _on_alarm)
        # Keep firing every 50 ms after the deadline: some parsing code has bare `except:` clauses that
        # can swallow one _Deadline (seen in the full test suite: a 1 s budget took 14 s).
        signal.setitimer(signal.ITIMER_REAL, self.seconds, 0.05)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)
        return False


def _quiet_math_verify() -> None:
    """We time out ourselves (see module docstring): silence math-verify's 'timeout disabled' warning."""
    import math_verify.grader
    import math_verify.parser

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True


def _parse(text: str):
    from math_verify import parse

    _quiet_math_verify()

    return parse(text, parsing_timeout=None, raise_on_error=True)


def parse_gold(gold: str):
    """Parse a gold answer (bare text such as `\\frac{1}{2}` or `x=3`); returns math-verify's list."""
    gold = str(gold).strip()[:MAX_GOLD_CHARS]
    for text in (f"\\boxed{{{gold}}}", f"${gold}$", gold):
        parsed = _parse(text)
        if parsed:
            return parsed
    return []


def _pred_text(parsed) -> str | None:
    """The extracted answer as text: math-verify's raw string match when it kept one, else str(expr)."""
    for item in reversed(parsed):
        if isinstance(item, str):
            return item[:200]
    return str(parsed[0])[:200] if parsed else None


def _grade_parsed(response: str, gold_parsed, timeout_s: float) -> Grade:
    from math_verify import verify

    if not gold_parsed:
        return Grade(False, None, "error")  # a gold answer we cannot read: never silently "wrong"
    response = (response or "")[-MAX_RESPONSE_CHARS:]
    pred = None
    try:
        with _time_limit(timeout_s):
            parsed = _parse(response)
            if not parsed:
                return Grade(False, None, "no_answer")
            pred = _pred_text(parsed)
            ok = verify(gold_parsed, parsed, timeout_seconds=None, raise_on_error=True)
        return Grade(bool(ok), pred, "ok")
    except _Deadline:
        return Grade(False, pred, "timeout")
    except RuntimeError as exc:
        if "main thread" in str(exc):
            raise
        return Grade(False, pred, "error")
    except Exception:  # noqa: BLE001 - recorded as status=error, counted, and fails the chunk if frequent
        return Grade(False, pred, "error")


def _parse_gold_limited(gold: str, timeout_s: float):
    try:
        with _time_limit(timeout_s):
            return parse_gold(gold)
    except (_Deadline, Exception) as exc:
        if isinstance(exc, RuntimeError) and "main thread" in str(exc):
            raise
        return []


def grade(response: str, gold: str, timeout_s: float = 5.0) -> Grade:
    """Grade one response against one gold answer (see module docstring for the statuses)."""
    return _grade_parsed(response, _parse_gold_limited(gold, timeout_s), timeout_s)


def grade_many(responses: list[str], golds: list[str], timeout_s: float = 5.0) -> list[Grade]:
    """Grade in-process; each distinct gold answer is parsed once."""
    if len(responses) != len(golds):
        raise ValueError(f"grade_many: {len(responses)} responses but {len(golds)} gold answers")
    cache: dict[str, list] = {}
    out = []
    for response, gold in zip(responses, golds):
        if gold not in cache:
            cache[gold] = _parse_gold_limited(gold, timeout_s)
        out.append(_grade_parsed(response, cache[gold], timeout_s))
    return out


def reward(responses: list[str], answers: list[str], timeout_s: float = 5.0) -> list[float]:
    """Verifier reward for GRPO/PPO: 1.0 for a correct response, else 0.0."""
    return [1.0 if g.correct else 0.0 for g in grade_many(responses, answers, timeout_s)]


def _grade_chunk(responses: list[str], golds: list[str], timeout_s: float) -> list[tuple]:
    return [(g.correct, g.pred, g.status) for g in grade_many(responses, golds, timeout_s)]


def _check_chunk(i: int, start: int, rows: list[tuple], max_error_rate: float) -> None:
    errors = [k for k, r in enumerate(rows) if r[2] == "error"]
    if rows and len(errors) / len(rows) > max_error_rate:
        raise VerifierError(
            f"verify: chunk {i} (rows {start}-{start + len(rows) - 1}): {len(errors)}/{len(rows)} samples "
            f"ended in status=error (> max_error_rate {max_error_rate}); first at row {start + errors[0]}"
        )


def _ensure_ray():
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


def verify_frame(df: pl.DataFrame, cfg: VerifyConfig) -> pl.DataFrame:
    """Grade every row of `df` (columns response, answer) in Ray CPU tasks over chunks of cfg.chunk_size.

    Returns df with `correct`, `pred`, `status` added. Raises VerifierError when a chunk's share of
    status=error exceeds cfg.max_error_rate.
    """
    for col in ("response", "answer"):
        if col not in df.columns:
            raise VerifierError(f"verify: input has no {col!r} column (columns: {df.columns})")
    ray = _ensure_ray()
    task = ray.remote(num_cpus=cfg.num_cpus_per_task, max_retries=0)(_grade_chunk)
    responses = [r if r is not None else "" for r in df["response"].to_list()]
    golds = [str(a) if a is not None else "" for a in df["answer"].to_list()]
    starts = list(range(0, len(df), cfg.chunk_size))
    futures = [task.remote(responses[s:s + cfg.chunk_size], golds[s:s + cfg.chunk_size], cfg.timeout_s)
               for s in starts]
    # Hard outer guard: each sample costs at most ~2 timeouts (gold parse + grade), so a chunk that runs
    # far past that is stuck somewhere signals cannot reach (a C call); fail loudly instead of hanging.
    limit = cfg.chunk_size * 2 * cfg.timeout_s + 60
    rows: list[tuple] = []
    for i, (start, fut) in enumerate(zip(starts, futures)):
        try:
            chunk = ray.get(fut, timeout=limit)
        except ray.exceptions.GetTimeoutError:
            for f in futures:
                ray.cancel(f, force=True)
            raise VerifierError(f"verify: chunk {i} (rows {start}-{start + cfg.chunk_size - 1}) did not finish "
                                f"in {limit:.0f} s; a sample is stuck past its timeout") from None
        _check_chunk(i, start, chunk, cfg.max_error_rate)
        rows.extend(chunk)
    return df.with_columns(
        pl.Series("correct", [r[0] for r in rows], dtype=pl.Boolean),
        pl.Series("pred", [r[1] for r in rows], dtype=pl.String),
        pl.Series("status", [r[2] for r in rows], dtype=pl.String),
    )


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a .jsonl or .parquet file; a malformed file raises one line naming it (and the row)."""
    rows = read_rows(path, VerifierError)
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def verify_file(in_path, out_path, cfg: VerifyConfig) -> dict:
    """Grade a jsonl/parquet file with `response` and `answer` columns; write it with correct/pred/status."""
    df = read_table(in_path)
    for col in ("response", "answer"):
        if col not in df.columns:
            raise VerifierError(f"{in_path}: no {col!r} column (columns: {df.columns})")
    df = df.with_columns(pl.col("answer").cast(pl.String), pl.col("response").cast(pl.String))
    out = verify_frame(df, cfg)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix == ".parquet":
        out.write_parquet(out_path)
    else:
        out.write_ndjson(out_path)
    counts = {s: int((out["status"] == s).sum()) for s in ("ok", "no_answer", "timeout", "error")}
    n = len(out)
    return {"samples": n, "correct": int(out["correct"].sum()),
            "share_correct": (out["correct"].sum() / n) if n else math.nan, **counts}
