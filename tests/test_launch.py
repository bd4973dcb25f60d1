"""launch.py: SFT/DFT on 2 gloo workers (FSDP2) match 1 worker step for step at the same global batch; DPO and
GRPO train on 2 workers (DDP) and save a model that loads; entries that cannot launch are refused; the storage
probe."""

import json
import sys
from pathlib import Path

import pytest
from test_checkpoint import DATA, Killed, die_after_logging  # tests/ is on sys.path under pytest

from data_gen.config import ToyTaskConfig
from data_gen.toy import toy_prompts
from workbench.models import resolve_model, toy_template
from workbench.recipe import RecipeError, TrainEntry, parse_recipe
from workbench.registry import get_trainer
from workbench.template import TemplateConfig
from workbench.trainers.base import Trainer, TrainJob
from workbench.trainers.checkpoint import list_checkpoints
from workbench.trainers.launch import check_entry, probe_storage, split_batch, worker_batch

# 10 rows, global batch 4 in micro-batches of 2: 3 steps per epoch, the last one short (2 rows), so a worker
# of 2 runs an empty micro-batch there; 4 steps cross into the second epoch.
SFT = {"learning_rate": 3e-3, "batch_size": 4, "per_device_batch_size": 2, "max_steps": 4,
       "lr_scheduler": "cosine", "warmup_ratio": 0.25, "max_length": 128}


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def base() -> Path:
    return resolve_model("toy:arith")


PROMPTS = toy_prompts(ToyTaskConfig(min_ops=2, max_ops=2, max_digits=1), 8, seed=0)  # rl prompts, gold answers


def job_for(base, out, consumes="positives", **kw):
    """A job on DATA, or for online trainers on toy-task prompts with the toy template (their rewards vary)."""
    data, template = (PROMPTS, toy_template()) if consumes == "prompts" else (DATA, TemplateConfig())
    return TrainJob(base_model=base, data=data, template=template, out_dir=Path(out), seed=0, **kw)


def train(algorithm, base, out, cfg, save_steps=0, keep=False):
    """Runs in every worker (and in-process for the 1-worker reference)."""
    plugin = get_trainer(algorithm)
    job = job_for(base, out, plugin.consumes, save_steps=save_steps, keep_checkpoints=keep)
    result = plugin().train(job, plugin.Config(**cfg))
    return {"steps": result.steps, "train_tokens": result.train_tokens, **result.extra}


def entry(num_workers, **kw):
    return TrainEntry(name="t", algorithm="dft", num_workers=num_workers, num_cpus=1, **kw)


def rows(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


DPO = {"learning_rate": 2e-3, "batch_size": 4, "per_device_batch_size": 2, "max_steps": 2,
       "lr_scheduler": "constant", "warmup_ratio": 0.0, "max_length": 128}
# 8 completions per step (2 prompts x 4): each worker rolls out 4 in micro-batches of 2
GRPO = {"learning_rate": 1e-3, "beta": 0.04, "batch_size": 8, "num_generations": 4, "per_device_batch_size": 2,
        "max_steps": 3, "max_completion_length": 16, "lr_scheduler": "constant", "warmup_ratio": 0.0}


def train_each(jobs):
    """Several trainings, one after the other, in the same 2-worker group (one group start for the tests)."""
    return [train(*job) for job in jobs]


@pytest.fixture(scope="module")
def runs(ray_local, base, tmp_path_factory):
    """1-worker references in-process; then one 2-worker Ray Train group runs SFT from scratch, DFT taking over
    a 1-worker run killed after step 3 from its step-2 checkpoint (DCP reshards it onto FSDP; the group
    writes its own step-4 checkpoint), DPO, and GRPO taking over a 1-worker run killed after step 2 from its
    step-1 Trainer checkpoint (kept checkpoints every step)."""
    from workbench.trainers.launch import launch

    tmp = tmp_path_factory.mktemp("launch")
    one = {a: train(a, base, tmp / f"{a}-one", SFT) for a in ("sft", "dft")}
    with pytest.MonkeyPatch.context() as m:
        die_after_logging(m, 3)
        with pytest.raises(Killed):
            train("dft", base, tmp / "dft-two", SFT, 2)
        die_after_logging(m, 2)
        with pytest.raises(Killed):
            train("grpo", base, tmp / "grpo-two", GRPO, 1, True)
    jobs = [("sft", base, tmp / "sft-two", SFT), ("dft", base, tmp / "dft-two", SFT, 2, True),
            ("dpo", base, tmp / "dpo-two", DPO), ("grpo", base, tmp / "grpo-two", GRPO, 1, True)]
    two = ray_local.get(launch(entry(2), train_each, jobs, out_dir=tmp))
    return tmp, one, dict(zip(("sft", "dft", "dpo", "grpo"), two))


@pytest.mark.parametrize("algorithm", ["sft", "dft"])
def test_two_fsdp_workers_match_one_worker(algorithm, runs):
    from transformers import AutoModelForCausalLM

    tmp, one, two = runs[0], runs[1][algorithm], runs[2][algorithm]
    a, b = rows(tmp / f"{algorithm}-one"), rows(tmp / f"{algorithm}-two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in ("loss", "ce", "mean_p", "grad_norm", "learning_rate"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-6), (key, ra, rb)
        assert rb["tokens"] == ra["tokens"]
    assert two["num_workers"] == 2 and one["num_workers"] == 1
    assert (two["train_tokens"], two["response_tokens"]) == (one["train_tokens"], one["response_tokens"])
    ma = AutoModelForCausalLM.from_pretrained(tmp / f"{algorithm}-one" / "model")
    mb = AutoModelForCausalLM.from_pretrained(tmp / f"{algorithm}-two" / "model")
    assert json.loads((tmp / f"{algorithm}-two" / "model" / "config.json").read_text())["architectures"] == \
        json.loads((tmp / f"{algorithm}-one" / "model" / "config.json").read_text())["architectures"]
    for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert (pa - pb).abs().max() < 1e-4, name


def test_two_workers_resume_a_one_worker_checkpoint_and_save_their_own(runs):
    tmp, two = runs[0], runs[2]
    assert (two["dft"]["resumed_from_step"], two["sft"]["resumed_from_step"]) == (2, 0)
    assert [s for s, _ in list_checkpoints(tmp / "dft-two")] == [2, 4]  # kept: model folders, no state
    assert (tmp / "dft-two" / "checkpoints" / "step-4" / "model" / "model.safetensors").read_bytes() == \
        (tmp / "dft-two" / "model" / "model.safetensors").read_bytes()


def test_dpo_trains_on_two_workers(runs):
    from transformers import AutoModelForCausalLM

    tmp, result = runs[0], runs[2]["dpo"]
    assert result["steps"] == 2 and result["num_workers"] == 2
    logged = rows(tmp / "dpo-two")
    assert [r["step"] for r in logged] == [1, 2]
    assert logged[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1
    AutoModelForCausalLM.from_pretrained(tmp / "dpo-two" / "model")


def test_grpo_trains_on_two_workers(runs, base):
    """2 workers resume a 1-worker Trainer checkpoint and finish the run: rank 0 alone logs, each step once; the
    checkpoints land in step-<N>/; the model loads, has moved, and keeps the base model's generation config
    (TRL's rollouts stop on the chat template's end of turn as well)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    tmp, result = runs[0], runs[2]["grpo"]
    out = tmp / "grpo-two"
    assert (result["steps"], result["num_workers"], result["resumed_from_step"]) == (3, 2, 1)
    logged = rows(out)
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert all(r["learning_rate"] == GRPO["learning_rate"] for r in logged)
    assert [s for s, _ in list_checkpoints(out)] == [1, 2, 3]  # kept: model folders, no state
    assert (out / "checkpoints" / "step-3" / "model" / "model.safetensors").read_bytes() == \
        (out / "model" / "model.safetensors").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "metrics.jsonl", "model"]
    AutoModelForCausalLM.from_pretrained(out / "model")
    before, after = load_file(str(Path(base) / "model.safetensors")), load_file(str(out / "model" / "model.safetensors"))
    assert max((after[k] - before[k].float()).abs().max().item() for k in before) > 0
    eos = [json.loads((d / "generation_config.json").read_text())["eos_token_id"] for d in (Path(base), out / "model")]
    assert eos[0] == eos[1]


def test_storage_probe_sees_the_local_node(ray_local, tmp_path):
    assert probe_storage(tmp_path / "run") == 1
    assert not list((tmp_path / "run").iterdir())  # probe files are removed


def test_storage_probe_names_the_directory_a_node_cannot_see(ray_local, tmp_path, monkeypatch):
    import workbench.trainers.launch as launch_mod

    def unseen(probe, token):  # what a node on other storage finds: no such file
        raise FileNotFoundError(f"{probe} is not visible on node-b")

    monkeypatch.setattr(launch_mod, "_probe_node", unseen)
    with pytest.raises(RuntimeError, match=f"run directory {tmp_path / 'run'} is not shared with Ray node"):
        probe_storage(tmp_path / "run")


class OneProcess(Trainer):
    """A third-party plugin that declares neither `distributed` nor `checkpoints` (every built-in does both)."""

    name, consumes = "one-process", "positives"

    def train(self, job, cfg):
        raise AssertionError("never launched: the recipe is refused")


def test_refusals_are_one_line(monkeypatch):
    from workbench.registry import TRAINERS, _load

    dft = get_trainer("dft")
    monkeypatch.setitem(_load(TRAINERS)[0], OneProcess.name, OneProcess)
    assert check_entry(entry(2), OneProcess) == ("num_workers", "one-process: num_workers > 1 is not supported yet")
    assert check_entry(entry(1, save_steps=5), OneProcess)[0] == "save_steps"
    field, why = check_entry(entry(1, num_gpus=8), dft)
    assert field == "num_gpus" and "set num_workers: 8 and gpus_per_worker: 1" in why
    assert check_entry(entry(2, gpus_per_worker=0.5), dft)[0] == "gpus_per_worker"
    assert check_entry(entry(4, gpus_per_worker=1), dft) is None
    assert check_entry(entry(4, gpus_per_worker=1, save_steps=5), get_trainer("grpo")) is None
    with pytest.raises(RecipeError, match=r"x.yaml: train\[0\].num_workers: one-process: num_workers > 1 is not"):
        parse_recipe({"run": {"name": "r"}, "model": "toy:arith",
                      "train": [{"name": "g", "algorithm": "one-process", "num_workers": 2}]}, "x.yaml")


def test_split_batch_keeps_the_single_worker_micro_batches():
    items = list(range(7))
    assert split_batch(items, 0, 1, 2) == ([[0, 1], [2, 3], [4, 5], [6]], 4)
    assert split_batch(items, 0, 2, 2) == ([[0, 1], [2, 3]], 2)
    assert split_batch(items, 1, 2, 2) == ([[4, 5], [6]], 2)
    assert split_batch([0, 1], 1, 2, 4) == ([[1]], 1)
    assert split_batch([0], 1, 2, 4) == ([[]], 1)  # nothing left: an empty micro-batch keeps FSDP in step
    assert worker_batch(8, 4, 2, "dpo") == (4, 1)
    assert worker_batch(16, 2, 2, "dpo") == (2, 4)
    with pytest.raises(ValueError, match="not divisible by num_workers=3"):
        worker_batch(8, 4, 3, "dpo")


def test_one_process_never_drives_several_gpus(monkeypatch):
    import torch

    from workbench.trainers.launch import _single

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # what a task would see on a shared node
    with pytest.raises(RuntimeError, match="sees 2 GPUs .*nn.DataParallel"):
        _single(lambda: "trained", ())
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert _single(lambda: "trained", ()) == "trained"


@pytest.mark.parametrize("algorithm", ["dpo", "grpo"])
@pytest.mark.parametrize("killed_after", [1, 3])  # before, and after, the step-2 checkpoint
def test_a_restart_logs_each_step_once(algorithm, killed_after, base, tmp_path, monkeypatch):
    """A transformers trainer killed before its first checkpoint trains again from zero, and one killed after it
    resumes from it: either way metrics.jsonl then holds every step once (the killed attempt's rows are cut)."""
    cfg = {**(DPO if algorithm == "dpo" else GRPO), "max_steps": 4}
    with monkeypatch.context() as m:
        die_after_logging(m, killed_after)
        with pytest.raises(Killed):
            train(algorithm, base, tmp_path, cfg, save_steps=2)
    assert [r["step"] for r in rows(tmp_path)] == list(range(1, killed_after + 1))
    result = train(algorithm, base, tmp_path, cfg, save_steps=2)
    assert [r["step"] for r in rows(tmp_path)] == [1, 2, 3, 4]
    assert result["resumed_from_step"] == (0 if killed_after == 1 else 2)
