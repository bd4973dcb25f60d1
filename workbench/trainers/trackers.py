"""Experiment trackers besides metrics.jsonl: TensorBoard and Weights & Biases, named by `run.report_to`.

Every trainer logs through `base.MetricsLog` (our loops directly, TRL's DPO and GRPO through their
metrics callbacks), so every row of metrics.jsonl also reaches the trackers, under the same names and steps:

- `tensorboard`: event files in `<train stage folder>/tensorboard/` (scalars `train/<metric>`); one
  `tensorboard --logdir runs/<run name>/train` shows every method side by side.
- `wandb`: one W&B run per train entry (project `$WANDB_PROJECT`, default "workbench"; name: the entry's
  name), files under the stage folder; needs `pip install wandb` and a login (or `WANDB_MODE=offline`).

The SFT-family loops log the DFT loss (`dft_loss`, mean -p log p) and the plain cross-entropy (`ce`) beside
the trained loss, whatever the kind: DFT's loss is 10-20x smaller than NLL because p_t is small on most
tokens early on, and NLL can rise while DFT's loss falls (the questions of yongliang-wu/DFT issues 2, 11, 28,
29, 32), so both are worth a plot.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

TRACKERS = ("tensorboard", "wandb")


def check_trackers(names, prefix: str = "run.report_to: ") -> None:
    """Raise one line for an unknown tracker, or wandb asked for where it is not installed."""
    for name in names:
        if name not in TRACKERS:
            raise ValueError(f"{prefix}unknown tracker {name!r} (known: {', '.join(TRACKERS)})")
        if name == "wandb" and importlib.util.find_spec("wandb") is None:
            raise ValueError(f"{prefix}wandb is not installed here (pip install wandb), or drop it")


class TensorBoardTracker:
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, step: int, metrics: dict) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"train/{key}", value, step)
        self.writer.flush()  # a Ray task may end without closing us: keep the event file current

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, out_dir: Path, name: str):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "workbench"), name=name, dir=str(out_dir),
                              reinit=True)

    def log(self, step: int, metrics: dict) -> None:
        self.run.log({f"train/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def close(self) -> None:
        self.run.finish()


def open_trackers(names, out_dir: Path, name: str) -> list:
    """The trackers `names` (a subset of TRACKERS) writing under `out_dir`, the train stage folder; none on
    ranks other than 0 of a distributed run (one W&B run and one event file per train entry)."""
    import torch.distributed as dist

    check_trackers(names)
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return []
    out = []
    for tracker in dict.fromkeys(names):
        out.append(TensorBoardTracker(Path(out_dir) / "tensorboard") if tracker == "tensorboard"
                   else WandbTracker(Path(out_dir), name))
    return out
