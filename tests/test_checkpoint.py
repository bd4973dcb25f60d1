"""checkpoint.py: a run that dies after a checkpoint resumes from it and ends exactly where an uninterrupted run
ends (same per-step losses, each step logged once); the step-<N>/ layout; and kill -9 of a real `workbench train`
during a train stage, then a rerun that resumes the stage from its latest checkpoint and completes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from workbench.models import resolve_model
from workbench.registry import get_trainer
from workbench.template import TemplateConfig
from workbench.trainers import checkpoint
from workbench.trainers.base import MetricsLog, TrainJob

PROBLEMS = [(12, 7), (3, 5), (20, 14), (9, 9), (41, 2), (6, 30), (15, 15), (8, 1), (2, 2), (7, 30)]
DATA = pl.DataFrame({
    "problem": [f"{a}+{b}" for a, b in PROBLEMS],
    "response": [f"{a}+{b}={a + b} \\boxed{{{a + b}}}" for a, b in PROBLEMS],
    "chosen": [f"{a}+{b}={a + b} \\boxed{{{a + b}}}" for a, b in PROBLEMS],
    "rejected": [f"{a}+{b}={a + b + 1} \\boxed{{{a + b + 1}}}" for a, b in PROBLEMS],
})
CFG = {"learning_rate": 3e-3, "batch_size": 4, "per_device_batch_size": 2, "max_steps": 5,
       "lr_scheduler": "cosine", "warmup_ratio": 0.2, "max_length": 128}


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def base() -> Path:
    return resolve_model("toy:arith")


def train(algorithm, base, out, save_steps=0, keep=False, **cfg):
    plugin = get_trainer(algorithm)
    job = TrainJob(base_model=base, data=DATA, template=TemplateConfig(), out_dir=Path(out), seed=0,
                   save_steps=save_steps, keep_checkpoints=keep)
    return plugin().train(job, plugin.Config(**{**CFG, **cfg}))


def rows(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def die_after_logging(monkeypatch, step):
    """The process dies right after step `step` is logged (after the checkpoint before it, before the next)."""
    real = MetricsLog.log

    def log(self, at, **metrics):
        real(self, at, **metrics)
        if at == step:
            raise Killed(f"killed after step {step}")

    monkeypatch.setattr(MetricsLog, "log", log)


@pytest.mark.parametrize("algorithm", ["dft", "dpo"])
def test_resumed_run_equals_uninterrupted_run(algorithm, base, tmp_path, monkeypatch):
    whole = train(algorithm, base, tmp_path / "whole")
    with monkeypatch.context() as m:
        die_after_logging(m, 3)
        with pytest.raises(Killed):
            train(algorithm, base, tmp_path / "cut", save_steps=2)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path / "cut")] == [2]
    assert [r["step"] for r in rows(tmp_path / "cut")] == [1, 2, 3]  # step 3 is trained again on resume
    resumed = train(algorithm, base, tmp_path / "cut", save_steps=2)
    assert resumed.extra["resumed_from_step"] == 2 and whole.extra["resumed_from_step"] == 0
    a, b = rows(tmp_path / "whole"), rows(tmp_path / "cut")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-6, abs=1e-7), (ra, rb)
        assert rb["learning_rate"] == pytest.approx(ra["learning_rate"])
    assert (tmp_path / "cut" / "model" / "model.safetensors").read_bytes() == \
        (tmp_path / "whole" / "model" / "model.safetensors").read_bytes()
    assert not (tmp_path / "cut" / "checkpoints").exists()  # resumable state goes once the run completes
    assert not (tmp_path / "cut" / "trainer").exists()


def test_kept_checkpoints_are_loadable_model_folders(base, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train("sft", base, tmp_path / "k", save_steps=2, keep=True, max_steps=4)
    found = checkpoint.list_checkpoints(tmp_path / "k")
    assert [s for s, _ in found] == [2, 4]
    for step, path in found:
        assert sorted(p.name for p in path.iterdir()) == ["checkpoint.json", "model"]  # state pruned
        assert checkpoint.read_info(path)["step"] == step
        AutoModelForCausalLM.from_pretrained(path / "model")
        AutoTokenizer.from_pretrained(path / "model")
    assert (found[-1][1] / "model" / "model.safetensors").read_bytes() == \
        (tmp_path / "k" / "model" / "model.safetensors").read_bytes()


def test_truncate_and_list_ignore_partial_checkpoints(tmp_path):
    (tmp_path / "checkpoints" / ".partial-step-9" / "state").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-4").mkdir()  # no checkpoint.json: never completed
    assert checkpoint.list_checkpoints(tmp_path) == [] and checkpoint.latest_resumable(tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)))
    assert checkpoint.truncate_metrics(tmp_path / "metrics.jsonl", 2) == 2
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


KILL_STEPS = 80  # long enough that the worker left running after kill -9 (~2 s) cannot finish the stage
KILL_RECIPE = """
run: {{name: kill, seed: 0, out_dir: {out}}}
model: toy:arith
prompts: {{source: toy, max_prompts: 16}}
template: {template}
train:
  - {{name: sft, algorithm: sft, learning_rate: 1.0e-3, batch_size: 4, per_device_batch_size: 4, max_steps: {steps},
     max_length: 96, save_steps: 1}}
"""


def session_alive(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def wait_for_session_to_exit(sid: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while session_alive(sid) and time.time() < deadline:
        time.sleep(0.2)
    for pid in session_alive(sid):  # only processes this test started (its own session)
        os.kill(pid, signal.SIGKILL)


def test_kill_9_during_a_train_stage_resumes_from_its_checkpoint(base, tmp_path):
    from workbench.models import toy_template

    recipe = tmp_path / "kill.yaml"
    recipe.write_text(KILL_RECIPE.format(out=tmp_path, steps=KILL_STEPS, template=json.dumps(toy_template().model_dump())))
    exe = Path(sys.executable).parent / "workbench"
    stage, partial = tmp_path / "kill" / "train" / "sft", tmp_path / "kill" / "train" / ".partial-sft"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    first = subprocess.Popen([str(exe), "train", str(recipe)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env)
    try:
        deadline = time.time() + 240
        while not checkpoint.list_checkpoints(partial) and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert checkpoint.list_checkpoints(partial), "no checkpoint appeared before the run ended"
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    wait_for_session_to_exit(first.pid)  # its Ray worker notices the dead raylet a moment later
    assert not stage.exists(), "the stage finished before it was killed"
    latest = checkpoint.latest_resumable(partial)
    assert latest is not None, "the killed run left no resumable checkpoint"
    saved = latest[0]
    assert saved < KILL_STEPS
    again = subprocess.run([str(exe), "train", str(recipe)], capture_output=True, text=True, env=env, timeout=300,
                           check=False)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"resuming from step {saved}" in " ".join(again.stdout.split())  # rich wraps lines at 80 columns
    counts = json.loads((stage / "manifest.json").read_text())["counts"]
    assert counts["resumed_from_step"] == saved and counts["steps"] == KILL_STEPS
    assert [r["step"] for r in rows(stage)] == list(range(1, KILL_STEPS + 1))
    assert not partial.exists() and not (stage / "checkpoints").exists()
