"""An example third-party verifier, as a researcher would ship it in their own package.

One file plus one entry-point line (`near = "wb_verifier_plugin:NearVerifier"` under
`[project.entry-points."workbench.verifiers"]`): the last number in the response must be within a
relative tolerance of the gold number (answers read off a plot, measured quantities, finance).
"""

import re

from pydantic import Field

from data_gen.verifiers.base import Grade, Verifier
from workbench.config_base import Section

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class NearConfig(Section):
    rel_tol: float = Field(0.01, gt=0, description="Largest accepted |pred - gold| / |gold|.")


class NearVerifier(Verifier):
    """The last number in the response is within rel_tol of the gold number."""

    name = "near"
    Config = NearConfig

    def version(self) -> str:
        return "near 0.1"

    def prepare_gold(self, gold: str):
        return float(gold)  # a gold answer that is no number raises: status=error, never "wrong"

    def grade(self, response: str, gold, timeout_s: float) -> Grade:
        numbers = NUMBER.findall(response)
        if not numbers:
            return Grade(False, None, "no_answer")
        pred = float(numbers[-1])
        return Grade(abs(pred - gold) <= self.cfg.rel_tol * abs(gold), numbers[-1], "ok")
