"""Recipe sections owned by the evaluator: `evaluate` and `report`."""

from typing import Literal

from pydantic import Field

from data_gen.config import SamplerConfig
from workbench.config_base import Section


class BenchmarkRef(Section):
    name: str = Field(description="A registered benchmark (see `workbench benchmarks`).")
    path: str | None = Field(None, description="Local jsonl/parquet replacing the benchmark's Hugging Face source.")
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


class ReportConfig(Section):
    paper: Literal["table1", "table2"] | None = Field(
        None, description="Print the paper's numbers beside ours (only meaningful in the paper's setting)."
    )
    plot: bool = Field(True, description="Write report/table2.png.")
