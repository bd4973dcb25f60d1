"""Verifier plugins and the rules every one of them runs under, in one place.

A verifier is a class registered under the entry-point group `workbench.verifiers` (built-ins: `math`,
`exact`, `code`; see pyproject.toml). It declares a `name`, a pydantic `Config` for its options (the
recipe's `verify.options`), a `version()` for dataset cards, and

    prepare_gold(gold)                -> anything grade() needs (None: the gold answer is unusable)
    grade(response, prepared, timeout_s) -> Grade(correct, pred, status)

The rules below hold for every verifier because only this module calls those two methods:

- **main thread**: deadlines are `SIGALRM` timers, which only work in a main thread, so grading refuses
  to run elsewhere (raising, never scoring "wrong"); Ray tasks and plain actors run in a main thread,
  threads, async actors and `max_concurrency > 1` actors do not (see DESIGN.md);
- **its own deadline**: each gold preparation and each grade gets `timeout_s` (+ the verifier's
  `grace_s`) of wall time; the alarm keeps firing every 50 ms after it expires, because some parsing
  code has bare `except:` clauses that swallow one (a 1 s budget once took 14 s);
- **statuses**: `ok` (graded), `no_answer` (nothing to grade in the response), `timeout` (past the
  deadline), `error` (the verifier raised, or the gold answer is unusable); every non-`ok` is wrong;
- **imports outside the deadline**: a verifier is built (`__init__`) before any deadline starts, so heavy
  imports belong there (an import cut by an alarm leaves a half-initialised module behind);
- **error budget**: a Ray chunk with more than `max_error_rate` of `error` fails the stage loudly, so a
  broken verifier cannot silently grade a whole data set as wrong.
"""

from __future__ import annotations

import signal
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

from workbench.config_base import Section

STATUSES = ("ok", "no_answer", "timeout", "error")
VERIFIERS = "workbench.verifiers"


class VerifierError(RuntimeError):
    """A verification run that must not produce a data set (too many errors, bad input, no sandbox)."""


class Deadline(BaseException):
    """Raised by our alarm; a BaseException so a verifier's `except Exception` cannot swallow it."""


@dataclass
class Grade:
    correct: bool
    pred: str | None  # the extracted answer (math, exact) or the program's outcome (code)
    status: str  # one of STATUSES


def require_main_thread(who: str = "verifier") -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"{who} must run in a main thread (its deadlines use signals); use plain Ray tasks "
                           "or in-process calls, not threads or async actors")


def _on_alarm(signum, frame):
    raise Deadline()


class time_limit:
    """Raise Deadline in the main thread after `seconds` (float) of wall time, then every 50 ms."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        require_main_thread("data_gen.verifiers")
        self.old = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.seconds, 0.05)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)
        return False


class NoOptions(Section):
    """A verifier without options."""


class Verifier(ABC):
    """Base class of verifier plugins (see the module docstring)."""

    name: ClassVar[str]
    Config: ClassVar[type[Section]] = NoOptions
    grace_s: ClassVar[float] = 0.0  # extra wall time past timeout_s before the outer deadline fires

    def __init__(self, options: dict | Section | None = None):
        self.cfg = options if isinstance(options, self.Config) else self.Config.model_validate(options or {})

    def version(self) -> str:
        """What a dataset card records about this verifier (bump when grades can change)."""
        return f"{self.name} 1"

    def check_ready(self) -> None:
        """Raise VerifierError when this verifier cannot run here (e.g. no sandbox)."""

    def prepare_gold(self, gold: str):
        """The gold answer in the form grade() takes; None when it is unusable (graded status=error)."""
        return gold if str(gold).strip() else None

    @abstractmethod
    def grade(self, response: str, gold, timeout_s: float) -> Grade:
        """Grade one response against a prepared gold answer; runs inside a deadline of timeout_s + grace_s."""


def get_verifier(name: str) -> type[Verifier]:
    from workbench.registry import get_plugin

    return get_plugin(VERIFIERS, name)


def make_verifier(name: str = "math", options: dict | None = None) -> Verifier:
    """An instance of the registered verifier `name` with its options validated."""
    return get_verifier(name)(options)


def _none():
    return None


def _guarded(fn, seconds: float, on_deadline, on_error):
    try:
        with time_limit(seconds):
            return fn()
    except Deadline:
        return on_deadline()
    except VerifierError:
        raise  # cannot run here at all: fail the stage, never grade "wrong"
    except RuntimeError as exc:
        if "main thread" in str(exc):
            raise
        return on_error()
    except Exception:  # noqa: BLE001 - recorded as status=error, counted against the error budget
        return on_error()


def grade_many(verifier: Verifier, responses: list[str], golds: list[str], timeout_s: float = 5.0) -> list[Grade]:
    """Grade in-process under the rules above; each distinct gold answer is prepared once."""
    if len(responses) != len(golds):
        raise ValueError(f"grade_many: {len(responses)} responses but {len(golds)} gold answers")
    require_main_thread("data_gen.verifiers")
    verifier.check_ready()
    prepared: dict[str, object] = {}
    out = []
    for response, gold in zip(responses, golds):
        gold = "" if gold is None else str(gold)
        if gold not in prepared:
            prepared[gold] = _guarded(partial(verifier.prepare_gold, gold), timeout_s, _none, _none)
        ready = prepared[gold]
        if ready is None:
            out.append(Grade(False, None, "error"))  # a gold answer we cannot read: never silently "wrong"
            continue
        out.append(_guarded(partial(verifier.grade, response or "", ready, timeout_s), timeout_s + verifier.grace_s,
                            partial(Grade, False, None, "timeout"), partial(Grade, False, None, "error")))
    return out


def reward(responses: list[str], answers: list[str], timeout_s: float = 5.0, verifier: str = "math",
           options: dict | None = None) -> list[float]:
    """Verifier reward for GRPO/PPO: 1.0 for a correct response, else 0.0 (same grades as the verify stage).

    Outside a main thread (a Ray Train worker runs its training loop in a thread) the grading runs in a Ray
    task, which has a main thread; it reserves no CPU, so it never waits behind the workers that hold them."""
    if threading.current_thread() is threading.main_thread():
        grades = [g.correct for g in grade_many(make_verifier(verifier, options), list(responses), list(answers),
                                                timeout_s)]
    else:
        import ray

        if not ray.is_initialized():
            require_main_thread("the verifier reward")
        task = ray.remote(num_cpus=0, max_retries=0)(grade_chunk)
        grades = [row[0] for row in ray.get(task.remote(verifier, options or {}, list(responses), list(answers),
                                                        timeout_s))]
    return [1.0 if correct else 0.0 for correct in grades]


def grade_chunk(name: str, options: dict, responses: list[str], golds: list[str], timeout_s: float) -> list[tuple]:
    """The body of one Ray verification task: (correct, pred, status) per sample."""
    return [(g.correct, g.pred, g.status) for g in grade_many(make_verifier(name, options), responses, golds,
                                                              timeout_s)]


def check_chunk(i: int, start: int, rows: list[tuple], max_error_rate: float) -> None:
    """The error budget: too many status=error in one chunk fails the stage with one line."""
    errors = [k for k, r in enumerate(rows) if r[2] == "error"]
    if rows and len(errors) / len(rows) > max_error_rate:
        raise VerifierError(
            f"verify: chunk {i} (rows {start}-{start + len(rows) - 1}): {len(errors)}/{len(rows)} samples "
            f"ended in status=error (> max_error_rate {max_error_rate}); first at row {start + errors[0]}"
        )
