"""run.report_to: every MetricsLog row (our loops, and TRL's trainers through the metrics callback) also
reaches TensorBoard, under the same names and steps; an unknown or missing tracker is one clear line."""

import importlib.util
import json
from types import SimpleNamespace

import pytest

from workbench.trainers.base import MetricsLog
from workbench.trainers.common import metrics_callback
from workbench.trainers.trackers import check_trackers


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_metrics_log_writes_tensorboard_beside_metrics_jsonl(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl", ("tensorboard",))
    log.log(1, loss=0.5, ce=2.0, dft_loss=0.1)
    log.log(2, loss=0.25, ce=1.5, dft_loss=0.2)
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["ce"] for r in rows] == [2.0, 1.5]
    tb = scalars(tmp_path / "tensorboard")
    assert tb["train/ce"] == [(1, 2.0), (2, 1.5)]
    assert [v for _, v in tb["train/dft_loss"]] == pytest.approx([0.1, 0.2])
    assert "train/step" not in tb


def test_trl_metrics_callback_reaches_the_trackers(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl", ("tensorboard",))
    callback = metrics_callback(log)
    callback.on_log(None, SimpleNamespace(global_step=3), None, logs={"loss": 0.7, "rewards/margins": 0.2})
    log.close()
    tb = scalars(tmp_path / "tensorboard")
    assert tb["train/loss"] == [(3, pytest.approx(0.7))] and "train/rewards/margins" in tb


def test_no_tracker_writes_nothing_else(tmp_path):
    MetricsLog(tmp_path / "metrics.jsonl").log(1, loss=1.0)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_unknown_or_missing_tracker_is_one_line():
    with pytest.raises(ValueError, match="unknown tracker 'mlflow'"):
        check_trackers(["mlflow"])
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ValueError, match="wandb is not installed"):
            check_trackers(["wandb"])


def test_only_rank_zero_opens_trackers(tmp_path, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    log = MetricsLog(tmp_path / "metrics.jsonl", ("tensorboard",))
    assert log.trackers == [] and not (tmp_path / "tensorboard").exists()
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    assert len(MetricsLog(tmp_path / "metrics.jsonl", ("tensorboard",)).trackers) == 1
