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
import math
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
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (the authors' DFT/SFT runs: 0.01, "
                                "verl sft_trainer.yaml optim.weight_decay).")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1 (torch's default 0.9; verl's SFT: 0.9).")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2 (torch's default 0.999; the authors' "
                              "DFT/SFT runs: 0.95, verl sft_trainer.yaml optim.betas).")
    max_length: int = Field(2048, ge=8, description="Most tokens per sequence (prompt + response).")
    bf16: bool = Field(False, description="Train in bfloat16 mixed precision (GPUs).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    logging_steps: int = Field(1, ge=1, description="Log metrics every N optimizer steps.")

    def hf_warmup_steps(self) -> float:
        """`warmup_ratio` as transformers' `warmup_steps` argument, which reads a value below 1 as a ratio and
        1 or more as a step count: a ratio of 1.0 (warm up over every step) becomes the largest float below 1,
        whose ceil(total x ratio) is still every step."""
        return min(self.warmup_ratio, math.nextafter(1.0, 0.0))

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
    save_steps: int = 0  # write a resumable checkpoint every N optimizer steps (0: none; trainers/checkpoint.py)
    keep_checkpoints: bool = False  # keep each checkpoint's model/ folder in the finished stage
    report_to: tuple[str, ...] = ()  # trackers besides metrics.jsonl (run.report_to; trainers/trackers.py)
    name: str = ""  # the train entry's name (the trackers' run name)
    verifier: str = "math"  # the recipe's verify.verifier: GRPO's and PPO's reward (data_gen/verifiers/)
    verifier_options: dict = field(default_factory=dict)  # the recipe's verify.options

    @property
    def model_dir(self) -> Path:
        return self.out_dir / "model"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    def metrics_log(self) -> MetricsLog:
        """metrics.jsonl of this job, also reporting to the trackers of `report_to`."""
        return MetricsLog(self.metrics_path, self.report_to, self.name or self.out_dir.name)


@dataclass
class TrainResult:
    model_dir: Path
    train_tokens: int  # tokens the optimizer saw (prompt + response), for the report's cost columns
    steps: int
    extra: dict = field(default_factory=dict)  # anything else worth keeping in the manifest


class MetricsLog:
    """Append-only metrics.jsonl: one JSON object per logged step, also sent to the trackers named in
    `report_to` ("tensorboard", "wandb"; see trainers/trackers.py), which write beside the file."""

    def __init__(self, path: Path, report_to=(), name: str = ""):
        from workbench.trainers.trackers import open_trackers

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.time()
        self.trackers = open_trackers(report_to, self.path.parent, name or self.path.parent.name)

    def log(self, step: int, **metrics: float) -> None:
        row = {"step": step, "time_s": round(time.time() - self._t0, 3), **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for tracker in self.trackers:
            tracker.log(step, {k: v for k, v in row.items() if k != "step"})

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []


class Trainer(ABC):
    name: ClassVar[str]
    consumes: ClassVar[DataKind]
    Config: ClassVar[type[TrainConfig]] = TrainConfig
    distributed: ClassVar[bool] = False  # runs under num_workers > 1 (torch.distributed set up by launch.py)
    checkpoints: ClassVar[bool] = False  # honours job.save_steps and resumes from job.out_dir/checkpoints

    @abstractmethod
    def train(self, job: TrainJob, cfg: TrainConfig) -> TrainResult:
        """Train job.base_model on job.data; save the model to job.model_dir."""
