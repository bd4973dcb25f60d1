"""The trainer plugin interface.

A trainer is a class registered under the entry-point group `workbench.trainers`. It declares

- `name`: what recipes write as `algorithm:`;
- `consumes`: which data set of the build stage it trains on
  (`positives`, `pairs`, `prompts` or `demonstrations`, see DESIGN.md for their columns);
- `Config`: a pydantic `TrainConfig` subclass, every field documented, defaults as in the paper;
- `train(job, cfg)`: trains `job.base_model` on `job.data` and saves a Hugging Face model folder
  to `job.model_dir`, logging one JSON object per step to `job.metrics_path`.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import polars as pl
from pydantic import Field

from workbench.config_base import Section
from workbench.template import TemplateConfig

DataKind = Literal["positives", "pairs", "prompts", "demonstrations"]


class TrainConfig(Section):
    """Fields every trainer shares. Defaults follow the paper's DFT/RFT setting (Section 4.1)."""

    learning_rate: float = Field(5e-5, gt=0, description="Peak AdamW learning rate.")
    num_epochs: float = Field(1.0, gt=0, description="Passes over the data set.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use num_epochs).")
    batch_size: int = Field(256, ge=1, description="Global batch size in sequences (per_device x accumulation).")
    per_device_batch_size: int = Field(8, ge=1, description="Sequences per forward pass.")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name (cosine, linear, constant, ...).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of steps spent warming up the learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_length: int = Field(2048, ge=8, description="Most tokens per sequence (prompt + response).")
    bf16: bool = Field(False, description="Train in bfloat16 mixed precision (GPUs).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    logging_steps: int = Field(1, ge=1, description="Log metrics every N optimizer steps.")

    def grad_accum(self) -> int:
        """Gradient accumulation steps so that per_device_batch_size x accumulation = batch_size."""
        return max(1, self.batch_size // self.per_device_batch_size)


@dataclass
class TrainJob:
    """Everything a trainer needs besides its config. Built by the pipeline, identical for every algorithm."""

    base_model: Path  # Hugging Face folder of the base model
    data: pl.DataFrame  # the data set named by the trainer's `consumes`
    template: TemplateConfig  # the run's one prompt template
    out_dir: Path  # the train/<name>/ folder being written (a temporary one until complete)
    seed: int = 0
    num_threads: int = 1  # torch CPU threads this task may use

    @property
    def model_dir(self) -> Path:
        return self.out_dir / "model"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"


@dataclass
class TrainResult:
    model_dir: Path
    train_tokens: int  # tokens the optimizer saw (prompt + response), for the report's cost columns
    steps: int
    extra: dict = field(default_factory=dict)  # anything else worth keeping in the manifest


class MetricsLog:
    """Append-only metrics.jsonl: one JSON object per logged step."""

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.time()

    def log(self, step: int, **metrics: float) -> None:
        row = {"step": step, "time_s": round(time.time() - self._t0, 3), **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


class Trainer(ABC):
    name: ClassVar[str]
    consumes: ClassVar[DataKind]
    Config: ClassVar[type[TrainConfig]] = TrainConfig

    @abstractmethod
    def train(self, job: TrainJob, cfg: TrainConfig) -> TrainResult:
        """Train job.base_model on job.data; save the model to job.model_dir."""
