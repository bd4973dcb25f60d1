"""`exact`: normalised string match, for answers that are labels or short strings rather than math.

The prediction is the last `\\boxed{}` of the response when it has one, else its last non-empty line
(`extract: last_line`), or the whole response (`extract: whole`). Both sides are normalised the same
way: surrounding `$`, quotes and a trailing period removed, whitespace collapsed, and case folded
unless `case_sensitive`. Correct when the normalised strings are equal.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from data_gen.io import last_boxed
from data_gen.verifiers.base import Grade, Verifier
from workbench.config_base import Section


class ExactConfig(Section):
    extract: Literal["boxed_or_last_line", "last_line", "whole"] = Field(
        "boxed_or_last_line", description="What of the response is compared: the last \\boxed{} (falling back "
        "to the last non-empty line), the last non-empty line, or the whole response.")
    case_sensitive: bool = Field(False, description="Compare case-sensitively.")


def normalise(text: str, case_sensitive: bool = False) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    for _ in range(2):
        text = text.strip().strip("$").strip().strip("\"'`").rstrip(".").strip()
    return text if case_sensitive else text.casefold()


class ExactVerifier(Verifier):
    """Normalised string match of the boxed (or last-line) answer."""

    name = "exact"
    Config = ExactConfig

    def _extract(self, response: str) -> str | None:
        lines = [line for line in response.splitlines() if line.strip()]
        last_line = lines[-1] if lines else None
        if self.cfg.extract == "whole":
            return response if response.strip() else None
        if self.cfg.extract == "last_line":
            return last_line
        return last_boxed(response) or last_line

    def prepare_gold(self, gold: str):
        return normalise(gold, self.cfg.case_sensitive) or None

    def grade(self, response: str, gold, timeout_s: float) -> Grade:
        pred = self._extract(response)
        if pred is None or not normalise(pred, self.cfg.case_sensitive):
            return Grade(False, None, "no_answer")
        pred = normalise(pred, self.cfg.case_sensitive)
        return Grade(pred == gold, pred[:200], "ok")
