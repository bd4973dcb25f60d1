"""Recipe sections owned by the evaluator: `evaluate` and `report`."""

from typing import Literal

from pydantic import Field, field_validator

from data_gen.config import SamplerConfig
from workbench.config_base import Section
from workbench.template import PRESETS, TemplateConfig, template_preset


class BenchmarkRef(Section):
    name: str = Field(description="A registered benchmark (see `workbench benchmarks`).")
    path: str | None = Field(None, description="Local jsonl/parquet replacing the copy shipped in evaluators/data/, "
                             "or `hub` for the benchmark's Hugging Face id (evaluators/benchmarks.py).")
    limit: int | None = Field(None, ge=1, description="Use only the first N problems.")


class EvaluateConfig(SamplerConfig):
    benchmarks: list[str | BenchmarkRef] = Field(
        default_factory=lambda: ["toy-id", "toy-long", "toy-big"],
        description="Benchmarks to score, by name or as {name, path, limit}.",
    )
    k: int = Field(16, ge=1, description="Samples per problem; Average@k is their mean correctness (paper: 16).")
    max_tokens: int = Field(4096, ge=1, description="Most new tokens per response (the paper: 4096).")
    limit: int | None = Field(None, ge=1, description="Default problem limit for every benchmark.")
    bootstrap_samples: int = Field(1000, ge=100, description="Bootstrap resamples for the 95% interval.")
    template: TemplateConfig | None = Field(
        None, description="The evaluator's own prompt template, replacing the run's one template for evaluation "
        f"only: a mapping of template fields or a preset name ({', '.join(PRESETS)}; workbench/template.py). "
        "Unset: the run's template.")

    @field_validator("template", mode="before")
    @classmethod
    def _preset(cls, value):
        return template_preset(value)

    def prompt_template(self, run_template: TemplateConfig) -> TemplateConfig:
        """The template evaluation prompts are rendered with: `template` when set, else the run's."""
        return self.template or run_template


class ReportConfig(Section):
    paper: Literal["table1", "table2"] | None = Field(
        None, description="Print the paper's numbers beside ours (only meaningful in the paper's setting)."
    )
    plot: bool = Field(True, description="Write report/table2.png (and curves.png, token_probs.png).")
    token_probs_rows: int = Field(0, ge=0, description="Figure 2: p_t of every response token of the first N "
                                  "rows of the training data under the base and every trained model, "
                                  "report/token_probs.{csv,md,png} (evaluators/token_probs.py; 0: off).")
    token_probs_data: Literal["positives", "demonstrations"] = Field(
        "positives", description="The training data set whose rows token_probs_rows scores.")
    reference: str | None = Field(
        "dft", description="Row every other method is compared with (report/significance.csv); none: no tests.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level; a table cell is marked when its "
                         "Holm-adjusted p-value against the reference is below it.")
