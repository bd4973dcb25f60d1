"""Verifier plugins (entry-point group `workbench.verifiers`): `math` (default), `exact`, `code`.

`base.py` holds the interface and the rules every verifier runs under; `frame.py` grades tables in Ray
tasks; `sandbox.py` and `reaper.py` run untrusted programs for `code.py`.
"""

from data_gen.verifiers.base import (
    STATUSES,
    VERIFIERS,
    Grade,
    Verifier,
    VerifierError,
    get_verifier,
    grade_many,
    make_verifier,
    reward,
)
from data_gen.verifiers.frame import read_table, verify_file, verify_frame

__all__ = ["STATUSES", "VERIFIERS", "Grade", "Verifier", "VerifierError", "get_verifier", "grade_many",
           "make_verifier", "read_table", "reward", "verify_file", "verify_frame"]
