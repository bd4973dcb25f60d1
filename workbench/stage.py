"""What the pipeline hands a stage function.

A stage is `fn(ctx: StageContext) -> dict`: it reads finished upstream folders from `ctx.inputs`,
writes its outputs into `ctx.out` (a temporary folder the pipeline renames into place when the
function returns), and returns counts for the manifest and the one-line summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from workbench.recipe import Recipe


@dataclass
class StageContext:
    recipe: Recipe
    out: Path  # write here (temporary until the stage completes)
    inputs: dict[str, Path] = field(default_factory=dict)  # upstream stage name -> its finished folder
    base_model: str | None = None  # the resolved base model: a local folder, or a hub id
    extra: dict = field(default_factory=dict)  # stage-specific arguments (e.g. the train entry)
