"""`math`: the paper's correctness check with math-verify (the default verifier).

A response is correct when the last answer math-verify extracts from it (normally the last `\\boxed{}`)
equals the gold answer symbolically or numerically. `no_answer` when nothing can be extracted.

math-verify's own timeouts use `signal.alarm` with whole seconds, and each one cancels any outer alarm,
so they are switched off: the deadline of `data_gen.verifiers.base` bounds parse + compare instead.
Responses are cut to their last `MAX_RESPONSE_CHARS` characters before parsing (the answer is at the
end), which bounds regex work.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from data_gen.verifiers.base import Deadline, Grade, Verifier

MAX_RESPONSE_CHARS = 8000
MAX_GOLD_CHARS = 2000


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


class MathVerifier(Verifier):
    """math-verify: the last boxed answer equals the gold answer symbolically or numerically."""

    name = "math"

    def __init__(self, options=None):
        super().__init__(options)
        _quiet_math_verify()  # imports math-verify and sympy here, never inside a deadline (seconds when cold)

    def version(self) -> str:
        try:
            return f"math-verify {version('math-verify')}"
        except PackageNotFoundError:
            return "math-verify (version unknown)"

    def prepare_gold(self, gold: str):
        return parse_gold(gold) or None

    def grade(self, response: str, gold, timeout_s: float) -> Grade:
        from math_verify import verify

        pred = None
        try:
            parsed = _parse(response[-MAX_RESPONSE_CHARS:])
            if not parsed:
                return Grade(False, None, "no_answer")
            pred = _pred_text(parsed)
            ok = verify(gold, parsed, timeout_seconds=None, raise_on_error=True)
        except Deadline:
            return Grade(False, pred, "timeout")  # keep what was extracted before the deadline
        return Grade(bool(ok), pred, "ok")
