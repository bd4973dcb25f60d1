"""`code`: run the program in the response against the problem's tests, in a sandbox (sandbox.py).

The gold "answer" of a code problem is its test code: plain `assert`s, or HumanEval's
`def check(candidate): ...` followed by `check(entry_point)`. The program is the last fenced code block
of the response that defines a function (else the last fenced block; without fences, the whole
response when it compiles). The sandbox runs `program + tests + print(nonce)`, and the response is
correct when the run exits 0 and its last output line is the per-run random nonce (so a program that
calls `exit(0)` before the tests does not pass).

Statuses: `ok` (the program ran: correct or not; `pred` says how it ended, e.g. `passed`,
`failed: AssertionError`, `failed: MemoryError`, `killed: SIGKILL`), `no_answer` (no program in the
response), `timeout` (past the wall-clock limit, the verifier's timeout), `error` (the sandbox could
not run it). Hostile programs (infinite loops, fork and memory bombs, writes outside /tmp, killing
other processes) end as `ok`/`timeout` and wrong, never as a crash or a hang of the stage.
"""

from __future__ import annotations

import re
import secrets

from data_gen.verifiers.base import Grade, Verifier, VerifierError
from data_gen.verifiers.sandbox import SandboxConfig, SandboxUnavailable, check_sandbox, describe, run_python

MAX_PROGRAM_CHARS = 50_000
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_program(response: str) -> str | None:
    """The program in a response (see the module docstring), or None."""
    blocks = [(lang.lower(), body) for lang, body in FENCE.findall(response or "")]
    blocks = [(lang, body) for lang, body in blocks if lang in ("", "python", "py", "python3") and body.strip()]
    if blocks:
        with_def = [body for _, body in blocks if re.search(r"^\s*def \w+", body, re.MULTILINE)]
        return (with_def or [blocks[-1][1]])[-1]
    text = (response or "").strip()
    if not text or "```" in text:
        return None
    try:
        compile(text, "<response>", "exec")
    except (SyntaxError, ValueError):
        return None
    return text


def _outcome(result, nonce: str) -> tuple[bool, str]:
    lines = result.stdout.rstrip("\n").splitlines()
    if result.returncode == 0 and lines and lines[-1] == nonce:
        return True, "passed"
    if result.signal_name:
        return False, f"killed: {result.signal_name}"
    errors = [line for line in result.stderr.strip().splitlines() if line and not line.startswith(" ")]
    last = errors[-1].split(":")[0] if errors else f"exit {result.returncode}"
    return False, f"failed: {last}"[:200]


class CodeVerifier(Verifier):
    """Runs the response's program with the problem's tests in a bubblewrap sandbox."""

    name = "code"
    Config = SandboxConfig
    grace_s = 15.0  # the sandbox's own wall clock fires first; this covers start-up and cleanup

    def version(self) -> str:
        return f"code 1 ({describe(self.cfg)})"

    def check_ready(self) -> None:
        try:
            check_sandbox(self.cfg)
        except SandboxUnavailable as exc:
            raise VerifierError(str(exc)) from None

    def grade(self, response: str, gold, timeout_s: float) -> Grade:
        program = extract_program(response)
        if program is None:
            return Grade(False, None, "no_answer")
        if len(program) > MAX_PROGRAM_CHARS:
            return Grade(False, "failed: program too long", "ok")
        nonce = secrets.token_hex(16)
        result = run_python(f"{program}\n\n{gold}\n\nprint({nonce!r})\n", self.cfg, timeout_s)
        if result.timed_out:
            return Grade(False, "killed: wall-clock limit", "timeout")
        correct, outcome = _outcome(result, nonce)
        status = "timeout" if result.signal_name == "SIGXCPU" else "ok"
        return Grade(correct, outcome, status)
