"""The pipeline's default grader, math-verify, with the call signatures used before verifiers were plugins.

`grade`, `grade_many` and `reward` grade with the `math` verifier; `verify_frame` and `verify_file` use
the verifier a `VerifyConfig` names. The implementation lives in `data_gen/verifiers/`.
"""

from __future__ import annotations

from data_gen.verifiers import base
from data_gen.verifiers.base import Grade, VerifierError
from data_gen.verifiers.frame import read_table, verify_file, verify_frame
from data_gen.verifiers.math import MathVerifier, parse_gold

__all__ = ["Grade", "VerifierError", "grade", "grade_many", "parse_gold", "read_table", "reward",
           "verify_file", "verify_frame"]


def grade(response: str, gold: str, timeout_s: float = 5.0) -> Grade:
    """Grade one response against one gold answer with math-verify."""
    return base.grade_many(MathVerifier(), [response], [gold], timeout_s)[0]


def grade_many(responses: list[str], golds: list[str], timeout_s: float = 5.0) -> list[Grade]:
    """Grade in-process with math-verify; each distinct gold answer is parsed once."""
    return base.grade_many(MathVerifier(), responses, golds, timeout_s)


def reward(responses: list[str], answers: list[str], timeout_s: float = 5.0) -> list[float]:
    """math-verify reward: 1.0 for a correct response, else 0.0."""
    return base.reward(responses, answers, timeout_s)
